"""Property tests: the vectorised MSE and percentile rules pick exactly the literal ports' edges
(tests/oracle/rules_loop.py), on random histograms with the edge cases (one non-empty bin, all
mass in bin 0, empty, counts summing beyond 2**64)."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecal.calib import rules as R
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.methods import RULES, Method
from edgecal.calib.scales import blob_scale

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
import rules_loop

# The literal MSE takes ~1.5 s on a dense histogram (all 2048 bins), milliseconds on sparse ones.
MSE = settings(deadline=None, max_examples=40, suppress_health_check=list(HealthCheck))
QUICK = settings(deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def histograms(draw: st.DrawFn, dense: bool = True) -> np.ndarray:
    kinds = ["empty", "bin0", "single", "sparse", "huge", "beyond64", "spike0"]
    kind = draw(st.sampled_from(kinds + (["dense", "tail"] if dense else [])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = np.zeros(2048, dtype=np.uint64)
    if kind == "bin0":
        c[0] = draw(st.integers(1, 2**64 - 1))
    elif kind == "single":
        c[draw(st.integers(0, 2047))] = draw(st.integers(1, 2**64 - 1))
    elif kind == "sparse":
        idx = rng.choice(2048, size=draw(st.integers(1, 24)), replace=False)
        c[idx] = rng.integers(1, draw(st.sampled_from([3, 1000, 2**40])), idx.size)
    elif kind == "huge":  # a few bins near 2**62: float64 cannot hold the sums exactly
        idx = rng.choice(2048, size=draw(st.integers(1, 4)), replace=False)
        c[idx] = np.uint64(2**62) - rng.integers(0, 1000, idx.size).astype(np.uint64)
        c[rng.integers(0, 2048, 3)] += np.uint64(1)
    elif kind == "beyond64":  # the total exceeds 2**64
        idx = rng.choice(2048, size=draw(st.integers(2, 5)), replace=False)
        c[idx] = np.uint64(2**63) + rng.integers(0, 2**20, idx.size).astype(np.uint64)
    elif kind == "spike0":
        c[0] = draw(st.integers(1, 10**12))
        c[rng.integers(1, 2048, 10)] += rng.integers(1, 5, 10).astype(np.uint64)
    elif kind == "dense":
        x = np.abs(rng.normal(0, draw(st.floats(0.05, 1.0)), 20000))
        c = np.bincount(np.minimum((x / x.max() * 2048).astype(int), 2047), minlength=2048)
        c = c.astype(np.uint64)
    elif kind == "tail":
        c[: draw(st.integers(1, 300))] = np.uint64(draw(st.integers(1, 10**6)))
        c[rng.integers(0, 2048, 6)] += np.uint64(1)
    return c


@MSE
@given(histograms())
def test_mse_edge_equals_the_literal_loop(c: np.ndarray) -> None:
    assert R.mse_edge(c) == rules_loop.mse_edge_literal(c)


@MSE
@given(histograms(dense=False), st.integers(1, 2048))
def test_mse_exact_error_equals_the_literal_one(c: np.ndarray, k: int) -> None:
    exact = R.mse_error_exact(c, k)
    assert exact == rules_loop.mse_error_literal(c, k)
    approx = R.mse_errors(c)[k - 1] * 4 * 12 * 127 * 127
    assert abs(approx - exact) <= 1e-11 * exact  # the screening's float64 error


@MSE
@given(histograms(), st.sampled_from([1e-6, 1e-3, 1e3]))
def test_mse_screening_margin_does_not_change_the_edge(c: np.ndarray, margin: float) -> None:
    """Wider margins send more (up to all) candidates to the exact comparison: same edge."""
    assert R.mse_edge(c, margin=margin) == R.mse_edge(c)


@QUICK
@given(histograms(), st.sampled_from(sorted(R.PERCENTILES.values())) | st.fractions(0, 1))
def test_percentile_edge_equals_the_literal_loop(c: np.ndarray, q: Fraction) -> None:
    if q == 0:
        q = Fraction(1, 2**70)
    assert R.percentile_edge(c, q) == rules_loop.percentile_edge_literal(c, q)


@QUICK
@given(histograms(), st.floats(2.0**-100, 2.0**100, width=32))
def test_rule_thresholds_are_edges_and_ordered(c: np.ndarray, absmax: float) -> None:
    """Each rule's threshold is its edge times absmax/2048; the percentiles grow with q."""
    hist = BlobHistogram(c, np.float32(absmax), 100)
    got = {m: blob_scale(m, hist) for m in RULES}
    if not c.any():
        assert all(s.threshold == np.float32(127) for s in got.values())
        return
    for m, s in got.items():
        k = R.rule_edge(m, c)
        assert 1 <= k <= 2048
        assert s.threshold == np.float32(k * float(np.float32(absmax)) / 2048)
        assert s.scale == np.float32(127) / s.threshold
    edges = [R.rule_edge(m, c) for m in (Method.P99_9, Method.P99_99, Method.P99_999)]
    assert edges == sorted(edges)
