"""The pure figures of ``edgecal validate``: cosine, SQNR, the agent's per-blob sums (and
their dequantization of int8 codes), agreement, layers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgecal.errors import ModelFormatError
from edgecal.inputs.model import load_model
from edgecal.quality.metrics import (
    PairStats,
    accuracy,
    agreement,
    cosine,
    sqnr_db,
    sqnr_from_energies,
)
from edgecal.quality.validation import check_same_network, quantized_layers
from edgecal_agent.messages import CompareParams, ProtocolViolation
from edgecal_agent.stats import PAIR_SUMS, pair_sums

REF = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
vectors = arrays(np.float32, st.integers(1, 64), elements=finite)


def test_cosine_known_values() -> None:
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == 0.0
    assert cosine(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.zeros(3), np.ones(3)) == 0.0
    with pytest.raises(ValueError):
        cosine(np.ones(2), np.ones(3))


@given(vectors, st.floats(0.01, 100.0))
def test_cosine_is_bounded_and_scale_invariant(x: np.ndarray, k: float) -> None:
    c = cosine(x, x * np.float32(k))
    assert -1.0 <= c <= 1.0
    if np.any(x != 0) and np.any(x * np.float32(k) != 0):
        assert c == pytest.approx(1.0, abs=1e-6)


def test_sqnr_known_values() -> None:
    ref = np.array([3.0, 4.0])  # energy 25
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(ref, np.array([3.0, 3.0])) == pytest.approx(10 * math.log10(25.0))
    assert sqnr_db(ref, ref * 0.9) == pytest.approx(20.0)  # error energy 0.01 of the signal
    assert sqnr_from_energies(0.0, 1.0) == -math.inf


@given(vectors, st.floats(1e-3, 10.0))
def test_sqnr_of_proportional_error(x: np.ndarray, eps: float) -> None:
    if not np.any(x):
        return
    ref = x.astype(np.float64)
    assert sqnr_db(ref, ref * (1.0 + eps)) == pytest.approx(-20 * math.log10(eps), abs=1e-6)


def _dequantized(codes: np.ndarray, scale: float) -> np.ndarray:
    """The int8 top's values: ``codes / scale`` in float32 (spec 4.5)."""
    return (codes.astype(np.float32) / np.float32(scale)).astype(np.float32)


@given(
    arrays(np.float32, st.integers(1, 64), elements=st.floats(-50, 50, width=32)),
    st.floats(0.05, 500.0),
)
def test_pair_sums_dequantize_int8_codes(x: np.ndarray, scale: float) -> None:
    """A requantized top's codes compared at its scale are its values ``codes / scale``:
    within half a step of what ncnn quantized, and the sums those of the dequantized array."""
    codes = np.clip(np.round(x * np.float32(scale)), -127, 127).astype(np.float32)
    back = _dequantized(codes, scale)
    inside = np.abs(x * scale) <= 126.5
    assert np.all(np.abs(back - x)[inside] <= 0.5 / scale + 1e-4 * np.abs(x[inside]) + 1e-6)
    assert np.array_equal(pair_sums(x, codes, scale), pair_sums(x, back))


@given(vectors, vectors)
def test_pair_sums_give_the_figures_of_the_blobs(a: np.ndarray, b: np.ndarray) -> None:
    """The four sums the agent answers for a compared blob give, bit for bit, the cosine and
    SQNR the host computed from the blobs themselves."""
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    whole, from_sums = PairStats(), PairStats()
    whole.add(a, b)
    sums = pair_sums(a, b)
    assert len(sums) == len(PAIR_SUMS)
    from_sums.add_sums(*(float(x) for x in sums))
    assert from_sums.cosines == whole.cosines
    assert np.array_equal(from_sums.sqnrs, whole.sqnrs, equal_nan=True)  # inf and NaN alike
    assert (from_sums.signal, from_sums.noise) == (whole.signal, whole.noise)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_compare_refuses_bad_scales(bad: float) -> None:
    d = {"model": {"param": "m.param", "bin": "m.bin"}, "pairs": [["conv1", bad]]}
    with pytest.raises(ProtocolViolation, match="positive and finite"):
        CompareParams.from_dict(d, "params.compare")
    d["pairs"] = []
    with pytest.raises(ProtocolViolation, match="at least one pair"):
        CompareParams.from_dict(d, "params.compare")


def test_agreement_and_accuracy() -> None:
    assert agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    assert accuracy(np.array([0, 1]), [0, 0]) == 0.5
    with pytest.raises(ValueError):
        agreement([1], [1, 2])


def test_pair_stats_aggregates_energies_not_per_image_ratios() -> None:
    s = PairStats()
    s.add(np.array([10.0]), np.array([9.0]))  # 100 / 1 -> 20 dB
    s.add(np.array([1.0]), np.array([0.0]))  # 1 / 1 -> 0 dB
    assert s.sqnr_db == pytest.approx(10 * math.log10(101 / 2))
    assert s.sqnr_mean_db == pytest.approx(10.0) and s.sqnr_min_db == pytest.approx(0.0)
    assert s.cosine_mean == pytest.approx(0.5) and s.cosine_min == 0.0  # [1] vs [0]


def test_quantized_layers_of_the_reference_int8_model() -> None:
    m = load_model(REF / "int8_kl.param", REF / "int8_kl.bin")
    layers = quantized_layers(m.param, m.weights)
    assert [q.name for q in layers] == [
        "convrelu_0",
        "convdwrelu_0",
        "convrelu_1",
        "convrelu_2",
        "linear_7",
    ]
    assert [q.requantized for q in layers] == [True, True, True, False, False]
    # fused top scale = the consumer's bottom scale in the table
    table = {
        ln.split()[0]: float(ln.split()[1])
        for ln in (REF / "kl.table").read_text().splitlines()
        if ln.strip()
    }
    assert layers[0].top_scale == pytest.approx(table["convdwrelu_0"], rel=1e-6)
    assert layers[2].top_scale == pytest.approx(table["convrelu_2"], rel=1e-6)
    assert layers[3].top_scale is None


def test_check_same_network() -> None:
    fp32 = load_model(REF / "model.param", REF / "model.bin").param
    int8 = load_model(REF / "int8_kl.param", REF / "int8_kl.bin").param
    check_same_network(fp32, int8, "a.param", "b.param")
    sample = load_model(
        *(REF.parents[3] / "samples" / "tinted_digits" / n for n in ("model.param", "model.bin"))
    ).param
    with pytest.raises(ModelFormatError, match=r"is not an int8 model of a\.param"):
        check_same_network(fp32, sample, "a.param", "b.param")


def test_run_params_timed_is_optional_on_the_wire() -> None:
    from edgecal_agent.messages import CaptureParams

    d = {
        "model": {"param": "a.param", "bin": "a.bin"},
        "inputs": [{"blob": "in0"}],
        "shards": ["s.npz"],
        "blobs": ["out0"],
    }
    p = CaptureParams.from_dict(d)
    assert p.timed is False and "timed" not in p.to_dict()  # old requests unchanged
    q = CaptureParams.from_dict(dict(d, timed=True))
    assert q.timed is True and CaptureParams.from_dict(q.to_dict()) == q
