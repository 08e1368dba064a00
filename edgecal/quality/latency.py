"""Latency, measured one way everywhere (pure): the per-image seconds of timed forwards on the
device (each image's forward of the whole model, after the runtime's warm-up, with the run's
threads) summed up as the median and its spread.

validate, check and tune all report a model's latency as :class:`Latency` built by
:func:`latency_of` from the same kind of measurement, so their figures compare.  The spread is
the 10th-90th percentile range (linear interpolation, numpy's default): one slow outlier
(a page fault, another process) moves neither end much, a bimodal device (big/little cores)
shows as a wide range.  int8 is called slower than fp32 when its median is higher
(:func:`slower_warning`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgecal.quality.jsondoc import Record


@dataclass(frozen=True)
class Latency(Record):
    """Per-image latency in milliseconds over ``runs`` timed forwards."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms

    def text(self) -> str:
        """``"1.234 ms (p10-p90 1.100-1.400, 200 runs)"``."""
        return (
            f"{self.median_ms:.3f} ms (p10-p90 {self.p10_ms:.3f}-{self.p90_ms:.3f}, "
            f"{self.runs} run{'s' if self.runs != 1 else ''})"
        )


def latency_of(seconds: Sequence[float] | np.ndarray) -> Latency | None:
    """The :class:`Latency` of per-image forward times in seconds, None when there is none
    (non-finite or negative times are not measurements and are left out)."""
    s = np.asarray(seconds, dtype=np.float64).ravel()
    s = s[np.isfinite(s) & (s >= 0.0)]
    if s.size == 0:
        return None
    ms = 1000.0 * s
    p10, p50, p90 = np.percentile(ms, [10.0, 50.0, 90.0])
    return Latency(float(p50), float(p10), float(p90), int(s.size))


def median_ms(seconds: Sequence[float] | np.ndarray) -> float:
    """:func:`latency_of`'s median in ms, NaN when nothing was measured."""
    lat = latency_of(seconds)
    return math.nan if lat is None else lat.median_ms


def latency_doc(seconds: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """The JSON form the run documents carry: :class:`Latency`'s fields, or ``{"runs": 0}``."""
    lat = latency_of(seconds)
    return {"runs": 0} if lat is None else lat.to_dict()


def slower_warning(int8: Latency | None, fp32: Latency | None) -> str | None:
    """The warning when the int8 model's median latency on the device is above fp32's."""
    if int8 is None or fp32 is None or int8.median_ms <= fp32.median_ms:
        return None
    return (
        f"the int8 model is slower than fp32 on the device: {int8.median_ms:.3f} ms against "
        f"{fp32.median_ms:.3f} ms per image (median; p10-p90 {int8.p10_ms:.3f}-"
        f"{int8.p90_ms:.3f} against {fp32.p10_ms:.3f}-{fp32.p90_ms:.3f} ms)"
    )
