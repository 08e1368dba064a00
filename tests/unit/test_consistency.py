"""Cross-board consistency and variant scores: pure functions over output arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgecal.quality.consistency import compare_boards, row_cosines
from edgecal.quality.metrics import cosine, drop_points, score_outputs

RNG = np.random.default_rng(7)
OUT = RNG.normal(size=(50, 10)).astype(np.float32)


def noisy(scale: float, seed: int) -> np.ndarray:
    return OUT + np.random.default_rng(seed).normal(scale=scale, size=OUT.shape).astype(np.float32)


def test_identical_boards_are_consistent() -> None:
    c = compare_boards({"a": OUT, "b": OUT.copy(), "c": OUT.copy()})
    assert c.diverging == []
    assert all(p.cosine_min == pytest.approx(1.0) and p.top1_disagree == 0 for p in c.pairs)
    assert [(p.a, p.b) for p in c.pairs] == [("a", "b"), ("a", "c"), ("b", "c")]


def test_the_odd_board_out_is_named() -> None:
    c = compare_boards({"a": noisy(1e-4, 1), "b": noisy(1e-4, 2), "bad": noisy(0.8, 3)})
    assert c.diverging == ["bad"]
    bad = next(b for b in c.boards if b.board == "bad")
    assert "a, b" in (bad.why or "") and bad.cosine_to_others_min < 0.999
    d = c.to_dict()
    assert d["diverging"] == ["bad"] and len(d["pairs"]) == 3


def test_two_boards_that_differ_are_both_flagged() -> None:
    c = compare_boards({"a": OUT, "b": noisy(0.8, 4)})
    assert c.diverging == ["a", "b"]


def test_top1_disagreement_alone_flags() -> None:
    b = OUT.copy()
    flip = np.argsort(OUT[:5], axis=1)[:, -2:]  # swap the two largest of 5 rows (10 %)
    for i, (second, first) in enumerate(flip):
        b[i, first], b[i, second] = OUT[i, second], OUT[i, first]
    c = compare_boards({"a": OUT, "b": b}, tol_cosine=0.0, tol_disagree=0.05)
    assert c.pairs[0].top1_disagree == pytest.approx(0.1)
    assert c.diverging == ["a", "b"]
    assert compare_boards({"a": OUT, "b": b}, tol_cosine=0.0, tol_disagree=0.2).diverging == []


def test_shape_mismatch_and_single_board_refused() -> None:
    with pytest.raises(ValueError, match="different shapes"):
        compare_boards({"a": OUT, "b": OUT[:, :5]})
    with pytest.raises(ValueError, match="two boards"):
        compare_boards({"a": OUT})


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float32, (6, 4), elements=st.floats(-100, 100, width=32)),
    arrays(np.float32, (6, 4), elements=st.floats(-100, 100, width=32)),
)
def test_row_cosines_match_the_scalar_cosine(a: np.ndarray, b: np.ndarray) -> None:
    got = row_cosines(a, b)
    want = [cosine(x, y) for x, y in zip(a, b, strict=True)]
    assert got == pytest.approx(want, abs=1e-9)


def test_score_outputs_and_drop() -> None:
    got = OUT.copy()
    got[0] = -got[0]
    labels = np.argmax(OUT, 1)
    labels[1] = (labels[1] + 1) % 10  # fp32 is wrong on image 1
    s = score_outputs(OUT, got, labels, accuracy_fp32=0.98, latency_ms=1.5)
    assert s.agreement == pytest.approx(49 / 50)
    assert s.accuracy == pytest.approx(48 / 50)
    assert s.drop_points == pytest.approx(100 * (0.98 - 0.96))
    assert s.cosine_min == pytest.approx(-1.0) and s.latency_ms == 1.5
    assert drop_points(0.97, None, None) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        score_outputs(OUT, OUT[:, :3], None, None, 1.0)
