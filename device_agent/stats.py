"""Per-blob statistics exactly as ncnn2table gathers them (pass 1 absmax, pass 2 histogram).

Runs on the board: Python 3.9 + numpy only, never imports ``edgecal``.  Everything is one
vectorised numpy pass per call, because it runs for every blob of every calibration image.

ncnn2table (tools/quantize/ncnn2table.cpp, spec 2.6):

* visits, for each channel ``p < out.c``, the first ``out.w * out.h`` floats of
  ``out.channel(p)`` -- so a 4-D blob (c, d, h, w) contributes only its first depth slice;
* pass 1: ``absmax = max(absmax, fabs(x))`` over the visited elements;
* pass 2: skips ``x == 0.f`` (also ``-0.0``), otherwise
  ``idx = min((int)(fabs(x) / absmax * 2048), 2047)`` with every operation in float32 and C
  truncation toward zero.

Non-finite values: ``std::max(absmax, NaN)`` keeps ``absmax``, so NaN is ignored by pass 1; in
pass 2 ncnn converts NaN to an int (undefined behaviour, an out-of-bounds write on x86), so
here NaN elements are simply skipped.  ``+-inf`` lands in the last bin.
"""

from __future__ import annotations

import numpy as np

#: ncnn2table's ``num_histogram_bins``.
NUM_BINS = 2048

_F32_BINS = np.float32(NUM_BINS)
_F32_LAST = np.float32(NUM_BINS - 1)


def visited(blob: np.ndarray) -> np.ndarray:
    """The float32 elements of an extracted blob that ncnn2table looks at, as a 1-D array.

    ``blob`` uses pyncnn's ``numpy.array(mat)`` layout: 1-D ``(w,)``, 2-D ``(h, w)``,
    3-D ``(c, h, w)``, 4-D ``(c, d, h, w)``.  For 1-D to 3-D every element is visited
    (``c`` channels of ``w*h``); for 4-D only ``[:, 0]``, because ncnn2table ignores ``d``.
    """
    arr = np.asarray(blob, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[:, 0]
    elif arr.ndim > 4:
        raise ValueError(f"ncnn blobs have at most 4 dimensions, got shape {arr.shape!r}")
    return np.ascontiguousarray(arr).reshape(-1)


def elements_per_sample(blob: np.ndarray) -> int:
    """ACIQ's ``N``: ``c * w * h`` of the blob (the number of visited elements)."""
    arr = np.asarray(blob)
    if arr.ndim == 4:
        return int(arr.shape[0] * arr.shape[2] * arr.shape[3])
    return int(arr.size)


def abs_max(values: np.ndarray) -> np.float32:
    """``max |x|`` in float32 over ``values`` (already :func:`visited`); 0 when empty.

    NaN is ignored as ``std::max(absmax, fabs(nan))`` ignores it.
    """
    arr = np.abs(np.asarray(values, dtype=np.float32).reshape(-1))
    if arr.size == 0:
        return np.float32(0.0)
    m = np.fmax.reduce(arr)  # fmax ignores NaN like std::max(absmax, x) does
    if np.isnan(m):
        return np.float32(0.0)
    return np.float32(m)


def histogram_counts(values: np.ndarray, absmax: float) -> np.ndarray:
    """ncnn2table's 2048-bin histogram of ``values`` (already :func:`visited`), uint64.

    ``absmax`` must be the global (all samples) float32 absmax of the blob.  Elements equal to
    zero are skipped; the bin index is ``min(int(float32(|x|) / absmax * 2048), 2047)``
    evaluated in float32 in exactly that order.
    """
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    a = np.abs(arr)
    a = a[a > 0]  # drops +-0.0 and NaN in one comparison
    if a.size == 0:
        return np.zeros(NUM_BINS, dtype=np.uint64)
    amax = np.float32(absmax)
    if not amax > 0:
        raise ValueError("absmax must be > 0 when the blob has non-zero elements")
    with np.errstate(over="ignore", invalid="ignore"):
        q = a / amax  # float32 / float32
        q *= _F32_BINS  # float32 * 2048
    np.minimum(q, _F32_LAST, out=q)  # min before the cast: (int)q >= 2047 <=> q >= 2047
    q = np.nan_to_num(q, nan=_F32_LAST)  # inf/inf: ncnn has UB; put it in the last bin
    idx = q.astype(np.intp)  # truncation toward zero, q >= 0
    return np.bincount(idx, minlength=NUM_BINS).astype(np.uint64)
