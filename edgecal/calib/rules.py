"""Threshold rules ncnn2table lacks, over its 2048-bin histograms: MSE-optimal and percentiles.

They need no runtime change (a table is just scales: ``scale = 127 / threshold``).  Both work
on a :class:`~edgecal.calib.histogram.BlobHistogram` (spec 2.6): ``counts[i]`` is the number
of nonzero elements with ``|x|`` in bin ``i`` of width ``w = absmax / 2048`` (zeros skipped:
they quantize to 0 exactly, so they add no error and no mass).

**Candidates.**  A rule picks a bin *edge* ``k`` in ``1..2048``; the threshold is ``T = k*w``,
computed as ``float32(k * float64(absmax) / 2048)`` (the product and the division are exact in
float64, so this is the correctly rounded ``k*w``).  ``k = 2048`` is ``absmax`` (no clipping).

**MSE** (:func:`mse_edge`).  Each bin's elements are represented by its centre
``c_i = (i + 0.5)*w``.  For candidate ``T = k*w`` the step is ``s = T/127``; a centre inside the
range (``c_i <= T``, i.e. ``i < k``) costs the uniform rounding noise ``s**2/12`` (the usual
model of rounding to a grid, independent of where the centre falls on it), a centre beyond it
is clipped to ``T`` and costs ``(c_i - T)**2``.  Expected squared error, in units of ``w**2``::

    E(k) = N(k) * k**2 / (12 * 127**2)  +  sum_{i >= k} counts[i] * (i + 0.5 - k)**2

with ``N(k) = sum_{i < k} counts[i]``.  The rule is the ``k`` of least ``E(k)``, compared
exactly (as integers: ``4 * 12 * 127**2 * E(k)``), the smallest ``k`` on a tie.

**Percentile** (:func:`percentile_edge`), the fraction ``q = num/den`` (99.99 % is
``9999/10000``): the smallest ``k`` with ``N(k) >= q * total``, compared exactly as integers
(``N(k) * den >= total * num``).  Ties are thereby the first edge that reaches the fraction.

**Edge cases** (both rules): an all-zero histogram gives ``k = 2048`` (``T = absmax``; the table
builder then applies its zero-blob guard, :func:`edgecal.calib.scales.blob_scale`); all mass in
bin 0 gives ``k = 1``.  Literal loop ports of both are ``tests/oracle/rules_loop.py``.

The vectorised MSE computes ``E(k)`` in float64 from suffix sums of non-negative terms only
(relative error below ``4 * 2048 * 2**-53``, far under :data:`_MSE_REL`), then compares the few
``k`` within that margin of the minimum exactly in Python integers.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from edgecal.calib.histogram import NUM_BINS
from edgecal.calib.methods import Method

LEVELS = 127  # symmetric int8: 127 steps over [0, T]
_MSE_DEN = 12 * LEVELS * LEVELS  # E(k) * 4 * _MSE_DEN is an integer
_MSE_REL = 1e-9  # screening margin (relative): candidates this close are compared exactly

#: The percentile rules and their fractions, exact.
PERCENTILES: dict[Method, Fraction] = {
    Method.P99_9: Fraction(999, 1000),
    Method.P99_99: Fraction(9999, 10000),
    Method.P99_999: Fraction(99999, 100000),
}


def _check(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts)
    if c.shape != (NUM_BINS,):
        raise ValueError(f"a histogram has {NUM_BINS} bins, got shape {c.shape}")
    return c.astype(np.uint64)


def edge_threshold(k: int, absmax: float | np.float32) -> np.float32:
    """``T = k * absmax / 2048``, correctly rounded to float32."""
    return np.float32(k * float(np.float32(absmax)) / NUM_BINS)


def mse_errors(counts: np.ndarray) -> np.ndarray:
    """``E(k)`` (module docstring) for ``k = 1..2048`` (index ``k - 1``), float64, in ``w**2``."""
    c = _check(counts).astype(np.float64)
    # suffix sums over i >= k (index k), k = 0..2048: R0 = count, R1 = sum c*(i+0.5-k),
    # R2 = sum c*(i+0.5-k)**2.  Moving k down by one adds 1 to every (i+0.5-k), so
    # R1(k) = R1(k+1) + R0(k+1) + c_k/2 and R2(k) = R2(k+1) + 2 R1(k+1) + R0(k+1) + c_k/4:
    # sums of non-negative terms only (no cancellation).
    r0 = np.zeros(NUM_BINS + 1)
    r0[:NUM_BINS] = np.cumsum(c[::-1])[::-1]
    r1 = np.zeros(NUM_BINS + 1)
    r1[:NUM_BINS] = np.cumsum((r0[1:] + 0.5 * c)[::-1])[::-1]
    r2 = np.zeros(NUM_BINS + 1)
    r2[:NUM_BINS] = np.cumsum((2.0 * r1[1:] + r0[1:] + 0.25 * c)[::-1])[::-1]
    k = np.arange(1, NUM_BINS + 1, dtype=np.float64)
    inside = r0[0] - r0[1:]  # N(k) = sum_{i<k} counts
    return inside * (k * k / _MSE_DEN) + r2[1:]


def mse_error_exact(counts: np.ndarray, k: int) -> int:
    """``4 * 12 * 127**2 * E(k)``: the exact integer the MSE rule compares."""
    c = [int(v) for v in _check(counts).tolist()]
    inside = sum(c[:k])
    clipped = sum(v * (2 * i + 1 - 2 * k) ** 2 for i, v in enumerate(c[k:], start=k) if v)
    return 4 * inside * k * k + _MSE_DEN * clipped


def mse_edge(counts: np.ndarray, *, margin: float = _MSE_REL) -> int:
    """The MSE-optimal edge ``k`` in ``1..2048`` (module docstring); 2048 when empty.

    ``margin``: candidates within this relative distance of the float64 minimum are compared
    exactly (any margin above the float64 error gives the same ``k``; tests widen it).
    """
    c = _check(counts)
    if not c.any():
        return NUM_BINS
    err = mse_errors(c)
    best = float(err.min())
    near = np.flatnonzero(err <= best * (1.0 + margin)) + 1
    if near.size == 1:
        return int(near[0])
    exact = [mse_error_exact(c, int(k)) for k in near]
    return int(near[exact.index(min(exact))])  # index(): the smallest k on a tie


def percentile_edge(counts: np.ndarray, fraction: Fraction) -> int:
    """The smallest edge ``k`` with ``N(k) >= fraction * total``; 2048 when empty."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a percentile fraction is in (0, 1], got {fraction}")
    c = _check(counts)
    # exact: uint64 sums while the total cannot wrap (its float64 estimate is far below 2**64)
    small = float(c.sum(dtype=np.float64)) < 2.0**63
    total = int(c.sum(dtype=np.uint64)) if small else sum(int(v) for v in c.tolist())
    if total == 0:
        return NUM_BINS
    # the least integer N with N * den >= total * num
    need = -((-total * fraction.numerator) // fraction.denominator)
    if total < 2**64:
        cum = np.cumsum(c, dtype=np.uint64)
        return int(np.searchsorted(cum, np.uint64(need), side="left")) + 1
    cum_obj = np.cumsum(c.astype(object))  # exact beyond uint64
    return int(np.searchsorted(cum_obj, need, side="left")) + 1


def rule_edge(method: Method, counts: np.ndarray) -> int:
    """The edge ``k`` of one of :data:`edgecal.calib.methods.RULES`."""
    if method is Method.MSE:
        return mse_edge(counts)
    if method in PERCENTILES:
        return percentile_edge(counts, PERCENTILES[method])
    raise ValueError(f"{method} is not a histogram rule of edgecal.calib.rules")
