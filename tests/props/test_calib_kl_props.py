"""Property tests: the vectorised KL search picks exactly the literal port's bin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecal.calib import kl as K

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
import kl_loop

# The literal oracle takes ~10 s per histogram: one example by default; set
# EDGECAL_ORACLE_EXAMPLES=50 for a long run.
ORACLE_EXAMPLES = int(os.environ.get("EDGECAL_ORACLE_EXAMPLES", "1"))
FAST = settings(deadline=None, max_examples=12, suppress_health_check=list(HealthCheck))
SLOW = settings(
    deadline=None, max_examples=ORACLE_EXAMPLES, suppress_health_check=list(HealthCheck)
)


@st.composite
def histograms(draw: st.DrawFn) -> np.ndarray:
    kind = draw(st.sampled_from(["sparse", "spike0", "last", "single", "huge", "dense", "tail"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = np.zeros(2048, dtype=np.uint64)
    if kind == "sparse":
        idx = rng.choice(2048, size=draw(st.integers(1, 40)), replace=False)
        c[idx] = rng.integers(1, 1000, idx.size)
    elif kind == "spike0":
        c[0] = draw(st.integers(1, 10**9))
        c[rng.integers(1, 2048, 30)] += rng.integers(1, 5, 30).astype(np.uint64)
    elif kind == "last":
        c[2047] = draw(st.integers(1, 10**6))
    elif kind == "single":
        c[draw(st.integers(0, 2047))] = draw(st.integers(1, 10**6))
    elif kind == "huge":
        c[:] = rng.integers(0, 2**40, 2048, dtype=np.uint64)
        c[rng.integers(0, 2048, 5)] = np.uint64(2**62)
    elif kind == "dense":
        x = np.abs(rng.normal(0, draw(st.floats(0.05, 1.0)), 50000))
        c = np.bincount(np.minimum((x / x.max() * 2048).astype(int), 2047), minlength=2048)
        c = c.astype(np.uint64)
    else:  # long sparse tail beyond a dense core
        c[: draw(st.integers(128, 2047))] = rng.integers(0, 50, 1).astype(np.uint64) + 1
        c[rng.integers(0, 2048, 10)] += np.uint64(1)
    return c


@FAST
@given(histograms())
def test_screened_search_equals_exact_curve_argmin(c: np.ndarray) -> None:
    exact = K.kl_divergences(c, exact=True)
    finite = np.isfinite(exact)
    want = 128 if not finite.any() else int(np.flatnonzero(exact == exact[finite].min())[0]) + 128
    assert K.kl_best_bin(c) == want


@SLOW
@given(histograms())
def test_vectorised_equals_literal_port(c: np.ndarray) -> None:
    best, kls = kl_loop.kl_search_literal(c)
    vec = K.kl_divergences(c, exact=True)
    assert np.array_equal(vec.view(np.uint32), np.array(kls, dtype=np.float32).view(np.uint32))
    assert K.kl_best_bin(c) == best


@FAST
@given(histograms(), st.sampled_from([2, 3, 7, 1024]))
def test_count_scale_invariance(c: np.ndarray, factor: int) -> None:
    if int(c.max()) * factor >= 2**53 or int(c.sum()) * factor >= 2**53:
        return  # beyond exact doubles the normalisation itself may round differently
    assert K.kl_best_bin(c * np.uint64(factor)) == K.kl_best_bin(c)


@st.composite
def near_ties(draw: st.DrawFn) -> np.ndarray:
    """Flat / periodic histograms: many candidates with almost the same KL."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["flat", "periodic", "flat_noise", "two_spikes"]))
    c = np.zeros(2048, dtype=np.uint64)
    if kind == "flat":
        c[: draw(st.integers(1, 2048))] = draw(st.integers(1, 10**6))
    elif kind == "periodic":
        c[:: draw(st.integers(2, 17))] = draw(st.integers(1, 1000))
    elif kind == "flat_noise":
        c[:] = 1000 + rng.integers(0, 3, 2048).astype(np.uint64)
    else:
        c[draw(st.integers(0, 2047))] = draw(st.integers(1, 10**9))
        c[draw(st.integers(0, 2047))] += np.uint64(draw(st.integers(1, 10**9)))
    return c


@FAST
@given(st.one_of(histograms(), near_ties()))
def test_screening_bound_never_violated(c: np.ndarray) -> None:
    """|exact float32 KL - screened value| <= bound for all 1920 candidates."""
    exact = K.kl_divergences(c, exact=True).astype(np.float64)
    value, bound = K.screen_bounds(c)
    if not np.isfinite(exact).all():
        return  # all-zero histogram: every KL is NaN, kl_best_bin returns 128 early
    assert np.all(bound >= 0)
    assert np.all(np.abs(exact - value) <= bound)


@FAST
@given(near_ties())
def test_screened_search_equals_exact_curve_argmin_near_ties(c: np.ndarray) -> None:
    exact = K.kl_divergences(c, exact=True)
    want = int(np.flatnonzero(exact == exact.min())[0]) + 128
    assert K.kl_best_bin(c) == want


@FAST
@given(st.one_of(histograms(), near_ties()))
def test_second_stage_bound_never_violated(c: np.ndarray) -> None:
    """|exact float32 KL - second-stage value| <= its (running error) bound, all candidates;
    and the bound is tighter than the screen's, so fewer candidates need glibc's logf."""
    exact = K.kl_divergences(c, exact=True).astype(np.float64)
    if not np.isfinite(exact).all():
        return  # all-zero histogram: kl_best_bin returns 128 before any stage
    value, bound = K.refine_bounds(c)
    assert np.all(bound >= 0)
    assert np.all(np.abs(exact - value) <= bound)
    assert np.median(bound) <= np.median(K.screen_bounds(c)[1])


@FAST
@given(st.one_of(histograms(), near_ties()))
def test_second_stage_changes_no_choice(c: np.ndarray) -> None:
    """The search with both stages picks the first minimum of the exact curve, and the exact
    evaluation set is never larger than the screen's."""
    exact = K.kl_divergences(c, exact=True)
    finite = np.isfinite(exact)
    want = 128 if not finite.any() else int(np.flatnonzero(exact == exact[finite].min())[0]) + 128
    assert K.kl_best_bin(c) == want
    screened, exact_set = K._last_candidates
    assert 1 <= exact_set <= screened or not finite.any()


@FAST
@given(st.one_of(histograms(), near_ties()))
def test_table_log_screen_bound_never_violated(c: np.ndarray) -> None:
    """The screen with its 10-bit log table (``_TABLE_LOG``) keeps its bound too."""
    exact = K.kl_divergences(c, exact=True).astype(np.float64)
    if not np.isfinite(exact).all():
        return
    saved = K._TABLE_LOG
    K._TABLE_LOG = True
    try:
        value, bound = K.screen_bounds(c)
    finally:
        K._TABLE_LOG = saved
    assert np.all(np.abs(exact - value) <= bound)


@FAST
@given(st.one_of(histograms(), near_ties()), st.sampled_from([1, 2, 8]))
def test_probe_pruning_changes_no_choice(c: np.ndarray, probe: int) -> None:
    """Pruning by the second stage of the lowest few screened candidates (``_PROBE``) picks
    the bin the plain second stage over every screened candidate picks."""
    saved = K._PROBE
    try:
        K._PROBE = 10**6  # no probe: every screened candidate goes through the second stage
        plain = K.kl_best_bin(c)
        K._PROBE = probe
        assert K.kl_best_bin(c) == plain
    finally:
        K._PROBE = saved


@st.composite
def slot_spikes(draw: st.DrawFn) -> np.ndarray:
    """Mass on the bins the screen treats apart for some t: bin 0, the boundary slots
    floor(j*t/128), the folded bin t-1 and t itself (the screen's weights fix these up)."""
    t = draw(st.integers(129, 2047))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = np.zeros(2048, dtype=np.uint64)
    js = rng.choice(np.arange(1, 128), size=draw(st.integers(1, 20)), replace=False)
    c[(js * t) // 128] = rng.integers(1, 10**6, js.size).astype(np.uint64)
    for k in (0, t - 1, min(t, 2047)):
        c[k] += np.uint64(draw(st.integers(0, 10**6)))
    if draw(st.booleans()):  # a dense floor under the spikes
        c += rng.integers(0, 50, 2048).astype(np.uint64)
    if not c.any():
        c[t - 1] = 1
    return c


@FAST
@given(slot_spikes())
def test_screen_bound_and_choice_on_slot_bins(c: np.ndarray) -> None:
    """The screen (p = eps + h prefix sums, transposed chunks) keeps its bound on mass in the
    slot and edge bins, and the search still picks the exact curve's first minimum."""
    exact = K.kl_divergences(c, exact=True)
    value, bound = K.screen_bounds(c)
    assert np.all(np.abs(exact.astype(np.float64) - value) <= bound)
    want = int(np.flatnonzero(exact == exact.min())[0]) + 128
    assert K.kl_best_bin(c) == want
