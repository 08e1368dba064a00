"""device_agent.stats: ncnn2table's visited elements, absmax and histogram binning."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from device_agent import stats


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
