"""The native agent's binning thread (issue 12): with ``EDGECAL_AGENT_BIN_WORKER=1`` a second
thread reduces each sample's held blobs while ncnn computes the next one, and the job thread
reduces the samples the thread is too busy to take; with ``=0`` every sample is reduced
inline.  Both must give the same abs-max, elements per sample, histogram counts and the same
errors (NaN/inf details, a zero abs-max), on every blob of the npy reference model (inputs,
convolutions with a fused ReLU, a Flatten that shares its input's data, the output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecal.device.capture import write_shards
from edgecal.device.local import LocalDevice
from edgecal.errors import AgentError
from edgecal.inputs.spec import InputSpec
from edgecal_agent.npzio import load_npz

REF = Path(__file__).resolve().parents[1] / "data" / "reference" / "npy"
SPEC = InputSpec("in0", "npy", shape=(10, 6, 3))
BLOBS = ["in0", "1", "2", "3", "4", "out0"]
F32 = np.float32


def _job(
    binary: Path, mode: str, op: str, shards: list[Path], tmp: Path, **extra: Any
) -> dict[str, Any]:
    """One job on a fresh native agent started with ``EDGECAL_AGENT_BIN_WORKER=mode``: its
    artifact's arrays, or ``("error", kind, message, details)``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGECAL_AGENT_BIN_WORKER", mode)
        with LocalDevice(
            agent="native", native_binary=binary, name=f"native-{mode}", workdir=tmp / mode
        ) as dev:
            params = {
                "model": {
                    "param": dev.push(REF / "model.param"),
                    "bin": dev.push(REF / "model.bin"),
                },
                "inputs": [SPEC.to_dict()],
                "shards": [dev.push(s) for s in shards],
                "blobs": BLOBS,
                **extra,
            }
            try:
                job = dev.run_job(op, params)
            except AgentError as e:
                return {"error": (e.kind, str(e).split(f"{e.kind}: ", 1)[1], e.details)}
    (path,) = job.artifacts.values()
    with load_npz(path) as npz:
        return {k: np.asarray(npz[k]) for k in npz.files}


def _both(
    binary: Path, op: str, shards: list[Path], tmp: Path, **extra: Any
) -> list[dict[str, Any]]:
    return [_job(binary, mode, op, shards, tmp / op, **extra) for mode in ("0", "1")]


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if k == "error":
            assert a[k] == b[k]
        else:
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


def _samples(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray]]:
    """n samples of varied scale (some all zero, some with heavy tails)."""
    out = []
    for i in range(n):
        x = rng.normal(0, 1 + (i % 5), (3, 6, 10)).astype(F32)
        if i % 7 == 3:
            x = (rng.standard_cauchy((3, 6, 10)) * 3).astype(F32)
        if i % 11 == 5:
            x[:] = 0
        out.append((x,))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_the_binning_thread_gives_the_inline_statistics(
    native_agent_binary: Path, seed: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(seed)
    shards = write_shards(_samples(rng, 60), [SPEC], tmp_path / "shards", shard_size=16)
    inline, threaded = _both(native_agent_binary, "absmax", shards, tmp_path)
    _same(inline, threaded)
    assert "error" not in inline and int(inline["n_samples"]) == 60
    assert (inline["absmax"] > 0).all()  # every blob had something to count
    absmax = {b: float(v) for b, v in zip(BLOBS, inline["absmax"], strict=True)}
    # a smaller range for in0: values above abs-max and the last bin
    absmax["in0"] = float(F32(absmax["in0"] / 3))
    inline, threaded = _both(native_agent_binary, "histogram", shards, tmp_path, absmax=absmax)
    _same(inline, threaded)
    assert inline["counts"].shape == (len(BLOBS), 2048) and int(inline["counts"].sum()) > 0


def test_the_binning_thread_reports_nan_and_inf_as_the_inline_loop(
    native_agent_binary: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    samples = _samples(rng, 40)
    for i, (value, where) in enumerate([(np.nan, 3), (np.inf, 17), (-np.inf, 30), (np.nan, 31)]):
        samples[where][0][i % 3, 2, 4 + i] = value
    shards = write_shards(samples, [SPEC], tmp_path / "shards", shard_size=16)
    inline, threaded = _both(native_agent_binary, "absmax", shards, tmp_path)
    _same(inline, threaded)
    kind, _, details = inline["error"]
    assert kind == "NonFiniteActivation"
    assert [row[0] for row in details["samples"]][:2] == [3, 3]  # in0 and what follows


def test_the_binning_thread_fails_a_zero_absmax_as_the_inline_loop(
    native_agent_binary: Path, tmp_path: Path
) -> None:
    samples = [(np.zeros((3, 6, 10), F32),) for _ in range(30)]
    samples[21][0][1, 1, 1] = 2.5  # only a late sample has a non-zero in0
    shards = write_shards(samples, [SPEC], tmp_path / "shards", shard_size=8)
    absmax = {b: 1.0 for b in BLOBS}
    absmax["in0"] = 0.0
    inline, threaded = _both(native_agent_binary, "histogram", shards, tmp_path, absmax=absmax)
    _same(inline, threaded)
    kind, message, _ = inline["error"]
    assert kind == "ValueError" and "absmax must be > 0" in message
