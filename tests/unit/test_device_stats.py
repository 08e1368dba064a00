"""edgecal_agent.stats: ncnn2table's visited elements, absmax and histogram binning."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecal.calib.histogram import NUM_BINS
from edgecal_agent import stats


def test_agent_and_host_count_the_same_bins() -> None:
    """The agent cannot import edgecal: its bin count and the host's are two constants."""
    assert stats.NUM_BINS == NUM_BINS == 2048


def literal_bin(x: np.float32, absmax: np.float32) -> int:
    v = np.float32(abs(x)) / absmax * np.float32(2048)
    return min(int(v), 2047)


def test_visited_layouts() -> None:
    a4 = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert np.array_equal(stats.visited(a4), a4[:, 0].reshape(-1))
    assert stats.elements_per_sample(a4) == 2 * 4 * 5
    a3 = np.ones((3, 4, 5), dtype=np.float32)
    assert stats.visited(a3).size == 60 == stats.elements_per_sample(a3)
    assert stats.visited(np.ones(7)).size == 7
    assert stats.visited(np.ones((2, 7))).size == 14
    assert stats.visited(np.ones((2, 7))).dtype == np.float32


def test_absmax_ignores_nan_and_handles_empty() -> None:
    assert stats.abs_max(np.array([], dtype=np.float32)) == 0
    assert stats.abs_max(np.array([np.nan, -3.0, 2.0], dtype=np.float32)) == np.float32(3)
    assert stats.abs_max(np.array([np.nan], dtype=np.float32)) == 0


def test_edges() -> None:
    absmax = np.float32(2.5166433)
    x = np.array([absmax, -absmax, 0.0, -0.0, absmax / 2048], dtype=np.float32)
    c = stats.histogram_counts(x, absmax)
    assert c.dtype == np.uint64 and c.shape == (2048,)
    assert c[2047] == 2 and c.sum() == 3  # +-absmax in the last bin, both zeros skipped
    assert c[literal_bin(x[4], absmax)] == 1


def test_values_just_below_bin_edges() -> None:
    absmax = np.float32(6.151483535766602)
    edges = (np.arange(1, 2048, dtype=np.float32) * absmax / np.float32(2048)).astype(np.float32)
    below = np.nextafter(edges, np.float32(0))
    for arr in (edges, below):
        c = stats.histogram_counts(arr, absmax)
        want = np.zeros(2048, dtype=np.uint64)
        for v in arr:
            want[literal_bin(v, absmax)] += 1
        assert np.array_equal(c, want)


def test_float32_division_not_double() -> None:
    # (x*2048 == x/absmax*2048 reordered is exact: 2048 is a power of two.)  What matters is
    # that the division rounds in float32: double division puts some values in another bin.
    rng = np.random.default_rng(3)
    absmax = np.float32(0.3)
    x = rng.uniform(0, 0.3, 400000).astype(np.float32)
    f32 = np.minimum((x / absmax * np.float32(2048)).astype(np.int64), 2047)
    f64 = np.minimum((x.astype(np.float64) / float(absmax) * 2048).astype(np.int64), 2047)
    differ = np.flatnonzero(f32 != f64)
    assert differ.size > 0
    c = stats.histogram_counts(x[differ], absmax)
    want = np.bincount([literal_bin(v, absmax) for v in x[differ]], minlength=2048)
    assert np.array_equal(c, want.astype(np.uint64))


@settings(deadline=None, max_examples=40)
@given(
    hnp.arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False),
    ),
    st.integers(0, 300),
)
def test_histogram_matches_literal_and_is_additive(x: np.ndarray, cut: int) -> None:
    absmax = stats.abs_max(x)
    c = stats.histogram_counts(x, absmax)
    want = np.zeros(2048, dtype=np.uint64)
    for v in x:
        if v != 0:
            want[literal_bin(v, absmax)] += 1
    assert np.array_equal(c, want)
    a, b = x[:cut], x[cut:]
    both = stats.histogram_counts(a, absmax) + stats.histogram_counts(b, absmax)
    assert np.array_equal(both, c)
    assert max(stats.abs_max(a), stats.abs_max(b)) == absmax


# -- the staged accumulators the agent uses (fast path + fallbacks) ----------------------------
def reference_counts(x: np.ndarray, absmax: np.float32) -> np.ndarray:
    """The straightforward binning, element by element where it matters (NaN skipped, inf and
    values above absmax in the last bin)."""
    return stats._histogram_reference(np.asarray(x, np.float32), absmax)


def accumulate(parts: list[np.ndarray], absmax: np.float32, stage: int) -> np.ndarray:
    acc = stats.HistogramAccumulator(absmax, stats._Scratch(), stage=stage)
    for p in parts:
        acc.add(p)
    return acc.counts()


_F32_EXOTIC = np.array(
    [
        0.0,
        -0.0,
        np.nan,
        np.inf,
        -np.inf,
        1e-45,
        -1e-45,
        1.1754942e-38,
        3.4028235e38,
        -3.4028235e38,
        1.0,
        -1.0,
    ],
    dtype=np.float32,
)


@settings(deadline=None, max_examples=150)
@given(
    hnp.arrays(
        np.float32,
        st.integers(0, 400),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
    st.integers(0, 400),
    st.sampled_from([8, 64, 1 << 16]),
    st.one_of(
        st.none(),
        st.floats(min_value=float(np.float32(1e-40)), max_value=float(np.float32(3e38)), width=32),
        st.sampled_from([2.0**-100, 2.0**-101, np.inf, 4096.0, 1e-30]),
    ),
)
def test_accumulator_matches_reference(
    x: np.ndarray, cut: int, stage: int, absmax: float | None
) -> None:
    amax = stats.abs_max(x) if absmax is None else np.float32(absmax)
    if not amax > 0:
        amax = np.float32(1.0)
    want = reference_counts(x, amax)
    assert np.array_equal(accumulate([x[:cut], x[cut:]], amax, stage), want)
    assert np.array_equal(stats.histogram_counts(x, amax), want)


def test_accumulator_exotic_values_and_views() -> None:
    rng = np.random.default_rng(11)
    base = rng.normal(0, 2, (5, 7, 9)).astype(np.float32)
    base[base > 2.5] = 0.0
    base[0, 0, :3] = [-0.0, 1e-45, -1e-44]
    view = base[:, 1:6, ::2]  # non-contiguous
    amax = stats.abs_max(view)
    for stage in (16, 1 << 16):
        got = accumulate([view, view[::-1], base[:, 0]], amax, stage)
        want = reference_counts(
            np.concatenate([view.reshape(-1), view[::-1].reshape(-1), base[:, 0].reshape(-1)]), amax
        )
        assert np.array_equal(got, want)
    for a in (np.float32(1.0), np.float32(2.0**-110), np.float32(np.inf), np.float32(5e3)):
        assert np.array_equal(
            accumulate([_F32_EXOTIC, base], a, 8),
            reference_counts(np.concatenate([_F32_EXOTIC, base.reshape(-1)]), a),
        )


def test_fast_division_equals_divide_then_multiply() -> None:
    # |x| / (absmax/2048) truncates like |x| / absmax * 2048 for |x| <= absmax
    rng = np.random.default_rng(5)
    for amax in rng.uniform(1e-3, 1e3, 20).astype(np.float32):
        x = rng.uniform(0, float(amax), 200000).astype(np.float32)
        x = np.concatenate([x, np.nextafter(x, np.float32(0)), [amax]]).astype(np.float32)
        lit = np.minimum((x / amax * np.float32(2048)).astype(np.int64), 2047)
        want = np.bincount(lit[x != 0], minlength=2048).astype(np.uint64)
        assert np.array_equal(stats.histogram_counts(x, amax), want)


@settings(deadline=None, max_examples=100)
@given(
    st.lists(
        hnp.arrays(
            np.float32,
            st.integers(0, 50),
            elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
        ),
        max_size=6,
    ),
    st.sampled_from([4, 32, 1 << 16]),
)
def test_absmax_accumulator_is_max_of_abs_max(parts: list[np.ndarray], stage: int) -> None:
    acc = stats.AbsMaxAccumulator(stats._Scratch(), stage=stage)
    want = np.float32(0.0)
    for p in parts:
        acc.add(p)
        m = stats.abs_max(p)
        if m > want:
            want = m
        ref = stats._abs_max_nan(p) if p.size else np.float32(0.0)
        assert m.tobytes() == np.float32(ref).tobytes()
    assert acc.value.tobytes() == want.tobytes()
