"""Oracle: literal, loop-by-loop ports of the histogram rules of edgecal.calib.rules.

Plain Python integers (and a Fraction for the percentile), one candidate edge at a time, every
bin visited in a loop: the definitions of the module docstring of ``edgecal/calib/rules.py``
written as directly as possible.  Slow (seconds for a dense MSE histogram): few examples only.
"""

from __future__ import annotations

from fractions import Fraction

NUM_BINS = 2048
LEVELS = 127


def mse_error_literal(counts, k: int) -> int:
    """4 * 12 * 127**2 * E(k) (an integer; E in units of w**2): an element of bin i has the
    value of the bin's centre, i + 1/2; one inside [0, T] (T = k) costs the rounding noise
    (T/127)**2/12, one beyond T is clipped to T and costs (centre - T)**2."""
    err = 0
    for i in range(NUM_BINS):
        n = int(counts[i])
        if n == 0:
            continue
        if 2 * i + 1 <= 2 * k:  # centre <= T: (T/127)**2/12 times 4*12*127**2
            err += n * 4 * k * k
        else:  # clipped: (centre - T)**2 = ((2i + 1 - 2k)/2)**2 times 4*12*127**2
            err += n * 12 * LEVELS * LEVELS * (2 * i + 1 - 2 * k) ** 2
    return err


def mse_edge_literal(counts) -> int:
    total = 0
    for v in counts:
        total += int(v)
    if total == 0:
        return NUM_BINS
    best_k = None
    best_err = None
    for k in range(1, NUM_BINS + 1):
        err = mse_error_literal(counts, k)
        if best_err is None or err < best_err:  # strict: the smallest k wins a tie
            best_err = err
            best_k = k
    return best_k


def percentile_edge_literal(counts, fraction: Fraction) -> int:
    total = 0
    for v in counts:
        total += int(v)
    if total == 0:
        return NUM_BINS
    running = 0
    for k in range(1, NUM_BINS + 1):
        running += int(counts[k - 1])  # N(k): the count of bins 0..k-1
        if Fraction(running) >= fraction * total:
            return k
    raise AssertionError("N(2048) is the total, which reaches any fraction <= 1")
