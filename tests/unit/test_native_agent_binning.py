"""Both agents bin the same floats into the same counts (issue 13): the native agent's C++
abs-max and histogram loops against the Python agent's numpy ones and against
``stats._histogram_reference``, on floats chosen to hit every edge -- zeros, -0.0, NaN, inf,
values at, just above and far above abs-max, bin edges, subnormals, a subnormal abs-max, the
fast path's ``2**-100`` threshold -- and on random data.

The floats reach the agents as the npy reference model's input blob ``in0`` (shape
``(3, 6, 10)`` per sample): capturing an input blob runs no layer, so every float arrives as
written, whatever it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecal.device.capture import write_shards
from edgecal.device.local import LocalDevice
from edgecal.errors import AgentError
from edgecal.inputs.spec import InputSpec
from edgecal_agent import stats
from edgecal_agent.npzio import load_npz

REF = Path(__file__).resolve().parents[1] / "data" / "reference" / "npy"
SPEC = InputSpec("in0", "npy", shape=(10, 6, 3))
PER_SAMPLE = 3 * 6 * 10
F32 = np.float32


@pytest.fixture(scope="module")
def agents(native_agent_binary: Path) -> Iterator[tuple[LocalDevice, LocalDevice]]:
    with (
        LocalDevice(agent="module", name="python") as python,
        LocalDevice(agent="native", native_binary=native_agent_binary, name="native") as native,
    ):
        yield python, native


def _samples(values: np.ndarray) -> list[tuple[np.ndarray]]:
    """``values`` (1-D float32) padded with zeros to whole samples."""
    flat = np.zeros(-(-values.size // PER_SAMPLE) * PER_SAMPLE, F32)
    flat[: values.size] = values
    return [(s.reshape(3, 6, 10),) for s in flat.reshape(-1, PER_SAMPLE)]


def _job(dev: LocalDevice, op: str, shards: list[Path], **extra: object) -> dict[str, np.ndarray]:
    params = {
        "model": {"param": dev.push(REF / "model.param"), "bin": dev.push(REF / "model.bin")},
        "inputs": [SPEC.to_dict()],
        "shards": [dev.push(s) for s in shards],
        "blobs": ["in0"],
        **extra,
    }
    job = dev.run_job(op, params)
    (path,) = job.artifacts.values()
    with load_npz(path) as npz:
        return {k: np.asarray(npz[k]) for k in npz.files}


def _histograms(
    agents: tuple[LocalDevice, LocalDevice], values: np.ndarray, absmax: float, tmp: Path
) -> list[np.ndarray]:
    shards = write_shards(_samples(values), [SPEC], tmp, shard_size=8)
    return [
        _job(dev, "histogram", shards, absmax={"in0": absmax}, runtime=runtime)["counts"][0]
        for dev in agents
        for runtime in ("calibration", "deployed")
    ]


def _edges(absmax: np.float32) -> np.ndarray:
    """Floats at and around every kind of edge for ``absmax``."""
    a = F32(absmax)
    up, down = np.nextafter(a, F32(np.inf)), np.nextafter(a, F32(0))
    k = np.arange(0, 2049, dtype=F32)
    at_bins = (a / F32(2048)) * k  # bin edges (as float32 products: near, not always at)
    near = np.concatenate(
        [at_bins, np.nextafter(at_bins, F32(np.inf)), np.nextafter(at_bins, F32(0))]
    )
    with np.errstate(over="ignore"):
        big = [a * F32(2), a * F32(1e30)]
    special = np.array(
        [
            0.0,
            -0.0,
            np.nan,
            -np.nan,
            np.inf,
            -np.inf,
            a,
            -a,
            up,
            -up,
            down,
            -down,
            *big,
            3.4e38,
            -3.4e38,
            1e-45,
            -1e-45,
            1.1754942e-38,
            2.0**-100,
            2.0**-101,
        ],
        dtype=F32,
    )
    return np.concatenate([special, near, -near[::7]]).astype(F32)


ABSMAXES = [1.0, 3.7, 2.0**-100, 2.0**-100 * 0.75, 1e-40, 1.4e-45, 3.0e38, 0.0123]


@pytest.mark.parametrize("absmax", ABSMAXES)
def test_edge_floats_bin_identically_in_both_agents(
    agents: tuple[LocalDevice, LocalDevice], absmax: float, tmp_path: Path
) -> None:
    values = _edges(F32(absmax))
    expected = stats._histogram_reference(values, F32(absmax))
    assert expected.sum() > 0  # not vacuous: something was counted
    for counts in _histograms(agents, values, float(F32(absmax)), tmp_path):
        np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_floats_bin_identically_in_both_agents(
    agents: tuple[LocalDevice, LocalDevice], seed: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            rng.normal(0, 1, 20000),
            rng.standard_cauchy(5000),  # heavy tails: many values above abs-max
            np.maximum(rng.normal(0, 2, 5000), 0),  # a ReLU's zeros
        ]
    ).astype(F32)
    absmax = float(F32(np.quantile(np.abs(values), 0.999)))
    expected = stats._histogram_reference(values, F32(absmax))
    for counts in _histograms(agents, values, absmax, tmp_path):
        np.testing.assert_array_equal(counts, expected)


def test_a_zero_absmax_with_non_zero_values_fails_alike(
    agents: tuple[LocalDevice, LocalDevice], tmp_path: Path
) -> None:
    shards = write_shards(_samples(np.array([0.0, 1.5], F32)), [SPEC], tmp_path)
    kinds = []
    for dev in agents:
        with pytest.raises(AgentError) as info:
            _job(dev, "histogram", shards, absmax={"in0": 0.0})
        kinds.append((info.value.kind, "absmax must be > 0" in str(info.value)))
    assert kinds == [("ValueError", True)] * 2


@pytest.mark.parametrize("kind", ["edges", "random", "subnormal"])
def test_absmax_is_identical_in_both_agents(
    agents: tuple[LocalDevice, LocalDevice], kind: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    if kind == "edges":
        values = _edges(F32(2.5))
        values = values[np.isfinite(values)]
    elif kind == "subnormal":  # an abs-max that is itself subnormal
        values = (rng.integers(-(2**20), 2**20, 900) * F32(2.0**-149)).astype(F32)
        assert 0 < np.abs(values).max() < np.finfo(F32).tiny
    else:
        values = (rng.normal(0, 3, 9000) * (rng.random(9000) < 0.5)).astype(F32)
    shards = write_shards(_samples(values), [SPEC], tmp_path, shard_size=4)
    got = [_job(dev, "absmax", shards) for dev in agents]
    want = stats.abs_max(values)
    for g in got:
        assert g["absmax"].dtype == F32 and g["absmax"][0].tobytes() == want.tobytes()
        assert g["elements_per_sample"].tolist() == [PER_SAMPLE]
        assert int(g["n_samples"]) == len(_samples(values))
    assert list(got[0]["names"]) == list(got[1]["names"]) == ["in0"]


def test_nonfinite_values_fail_alike_with_the_same_details(
    agents: tuple[LocalDevice, LocalDevice], tmp_path: Path
) -> None:
    clean = np.ones(PER_SAMPLE, F32)
    nan = clean.copy()
    nan[[3, 9]] = np.nan
    inf = clean.copy()
    inf[5] = -np.inf
    shards = write_shards(_samples(np.concatenate([clean, nan, clean, inf, nan])), [SPEC], tmp_path)
    errors = []
    for dev in agents:
        with pytest.raises(AgentError) as info:
            _job(dev, "absmax", shards)
        e = info.value
        errors.append((e.kind, e.details, str(e).split("NonFiniteActivation: ", 1)[1]))
    assert errors[0] == errors[1]
    kind, details, _ = errors[0]
    assert kind == "NonFiniteActivation"
    assert details["samples"] == [[1, "in0", 2, 0], [3, "in0", 0, 1], [4, "in0", 2, 0]]
    assert details["totals"] == {"in0": [4, 1]}


def test_refusals_have_the_same_kind_and_message_in_both_agents(
    agents: tuple[LocalDevice, LocalDevice], tmp_path: Path
) -> None:
    good = write_shards(_samples(np.ones(PER_SAMPLE, F32)), [SPEC], tmp_path / "good")
    other = InputSpec("in0", "npy", mean=(0.5,), shape=(10, 6, 3))
    foreign = write_shards(_samples(np.ones(PER_SAMPLE, F32)), [other], tmp_path / "foreign")
    wrong = write_shards([(np.zeros((3, 10, 6), F32),)], [SPEC], tmp_path / "wrong")
    # the third of five samples wrong, the first of a second shard: both agents fail on that
    # sample, after the two before it, with the same message naming it
    ok = (np.ones((3, 6, 10), F32),)
    later = write_shards([ok, ok], [SPEC], tmp_path / "later-1") + write_shards(
        [(np.zeros((3, 10, 6), F32),), ok, ok], [SPEC], tmp_path / "later-2"
    )
    cases = {
        "foreign shard": (foreign, {}),
        "wrong shape": (wrong, {}),
        "wrong shape, third sample": (later, {}),
        "no such blob": (good, {"blobs": ["in0", "nope"]}),
    }
    for what, (shards, extra) in cases.items():
        messages = []
        for dev in agents:
            with pytest.raises(AgentError) as info:
                _job(dev, "absmax", shards, **extra)
            e = info.value
            messages.append((e.kind, str(e).split(f"{e.kind}: ", 1)[1]))
        assert messages[0] == messages[1], what
        if what == "wrong shape, third sample":
            assert messages[0][0] == "InputError" and "sample 2" in messages[0][1], messages
