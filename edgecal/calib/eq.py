"""The decision half of ncnn2table's ``method=eq`` search (spec 2.9, intended algorithm).

Running the probe layers is the pipeline's job; this module holds the float arithmetic that
decides: the candidate scales, ncnn's cosine similarity and the pick of the best candidate.

Divergence from ncnn2table (whose EQ crashes since 2025-03, spec 2.9): the similarity sums the
agent returns (``edgecal_agent.eqsearch``) are not ncnn's float32 :func:`cosine_similarity`
but per output unit (channel; element of an InnerProduct output) float64 terms summed over the
units in order, then the cosine, summed over the samples in float64.  ncnn's float32 sums over
a whole blob err by more than the best candidates differ (digits' ``convrelu_1``, channel 0,
40 samples: 8e-5 against 3.4e-6 between the five best), so its picks were partly rounding;
the per-unit form is also what lets the agent score every channel's
candidate ``k`` with one forward.  :func:`pick_best` is unchanged: strict ``>`` from 0.0.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32


def eq_candidates(
    scale: float | np.float32, lower: float = 0.5, upper: float = 2.0, steps: int = 100
) -> np.ndarray:
    """``scale_lower + k * scale_step`` for ``k = 0..steps-1``, float32 as in the C++.

    ``scale_lower = scale * 0.5f``, ``scale_upper = scale * 2.0f``,
    ``scale_step = (scale_upper - scale_lower) / steps``; ``upper*scale`` itself is never tried.
    """
    if steps <= 0:
        raise ValueError("steps must be positive")
    s = F32(scale)
    lo = s * F32(lower)
    hi = s * F32(upper)
    step = (hi - lo) / F32(steps)
    k = np.arange(steps, dtype=np.float32)
    return (lo + k * step).astype(np.float32)


def pick_best(similarity_sums: np.ndarray) -> int | None:
    """Index of the largest sum, strict ``>`` starting from 0.0 (first wins, NaN never wins).

    ``None`` when no sum is > 0: ncnn then keeps the old scale.
    """
    best: int | None = None
    best_val = 0.0
    for k, v in enumerate(np.asarray(similarity_sums, dtype=np.float64).tolist()):
        if best_val < v:
            best_val = v
            best = k
    return best


def pick_pruned(sums: np.ndarray, counts: np.ndarray, n: int, slack: float) -> int | None:
    """:func:`pick_best` of a row whose candidates the agent pruned exactly (its result form 2,
    ``edgecal_agent.eqsearch``): among the sums complete over ``n`` samples.

    ``counts[k]``: the samples ``sums[k]`` covers; a pruned candidate's partial sum, even with
    ``1 + slack`` for each remaining sample, must stay below the pick's sum (0.0 without a
    pick), else ``ValueError``: the pick could have been another candidate."""
    s = np.asarray(sums, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    if s.shape != c.shape or bool(((c < 1) | (c > n)).any()):
        raise ValueError(f"sample counts {c.tolist()} are not within 1..{n}")
    k = pick_best(np.where(c == n, s, np.nan))
    best = 0.0 if k is None else float(s[k])
    for p, t in zip(s[c < n].tolist(), c[c < n].tolist(), strict=True):
        if not (math.isnan(p) or p + (n - t) * (1.0 + slack) < best):  # NaN never wins
            raise ValueError(
                f"a candidate pruned after {t} of {n} samples (partial sum {p!r}) could still "
                f"beat the pick's {best!r}"
            )
    return k


def _channels(a: np.ndarray) -> np.ndarray:
    """(channels, w*h) view of a pyncnn-layout blob: 4-D blobs keep their first depth slice."""
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[:, 0]
    if arr.ndim == 3:
        return arr.reshape(arr.shape[0], -1)
    return arr.reshape(1, -1)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.float32:
    """ncnn2table's ``cosine_similarity``: float accumulators, sequential, then
    ``(float)sum / sqrtf(sa) / sqrtf(sb)`` (NaN or inf when a blob is all zero)."""
    pa = _channels(a).reshape(-1)
    pb = _channels(b).reshape(-1)
    if pa.size != pb.size:
        raise ValueError("blobs differ in size")
    if pa.size == 0:
        return F32(np.nan)
    sa = np.add.accumulate(pa * pa)[-1]
    sb = np.add.accumulate(pb * pb)[-1]
    sab = np.add.accumulate(pa * pb)[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return F32(F32(sab / np.sqrt(sa)) / np.sqrt(sb))
