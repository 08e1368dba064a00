"""Latency figures: one way of summing up timed forwards (edgecal.quality.latency)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edgecal.quality.latency import Latency, latency_of


def test_median_and_spread_of_known_times() -> None:
    lat = latency_of([0.001 * k for k in range(1, 12)])  # 1..11 ms
    assert lat == Latency(median_ms=6.0, p10_ms=2.0, p90_ms=10.0, runs=11)
    assert lat.spread_ms == 8.0
    assert lat.text() == "6.000 ms (p10-p90 2.000-10.000, 11 runs)"
    assert Latency.from_dict(lat.to_dict()) == lat


def test_what_is_not_a_measurement_is_left_out() -> None:
    assert latency_of([]) is None
    assert latency_of([float("nan"), -1.0, float("inf")]) is None
    one = latency_of([float("nan"), 0.002])
    assert one is not None and one.runs == 1 and one.median_ms == 2.0
    assert one.text() == "2.000 ms (p10-p90 2.000-2.000, 1 run)"


@given(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=200))
def test_figures_are_ordered_and_within_the_times(secs: list[float]) -> None:
    lat = latency_of(secs)
    assert lat is not None and lat.runs == len(secs)
    ms = 1000.0 * np.asarray(secs)
    assert ms.min() - 1e-9 <= lat.p10_ms <= lat.median_ms <= lat.p90_ms <= ms.max() + 1e-9
