"""The int8 weight quantizer: ncnn's ``quantize_to_int8`` (the Quantize layer) on x86.

``q = clamp(round_half_away(float32(w * s)), -127, 127)``; the x86 SIMD kernels round as
``trunc(v + copysign(0.5, v))`` in float32 (so 0.49999997 -> 1), and convert NaN (``0 * inf``
from an all-zero channel with scale ``inf``) to -127.  ``-128`` is never produced.

Out of int32 range (``w * s`` is ``+-inf`` or ``|v + 0.5| >= 2**31``, i.e. an ``inf`` or absurd
scale) edgecal saturates to the sign (``+-127``).  ncnn's ``cvttps_epi32`` gives ``INT_MIN``
there, so ncnn2int8 writes ``-127`` for every such weight, positive ones too;
``ncnn_compat=True`` reproduces that.
"""

from __future__ import annotations

import numpy as np

_INT32_LIMIT = np.float32(2.0**31)


def quantize_rows(
    weights: np.ndarray, scales: np.ndarray, *, ncnn_compat: bool = False
) -> np.ndarray:
    """Quantize ``weights`` (rows x k, float32) with one float32 scale per row."""
    w = np.asarray(weights, dtype=np.float32)
    s = np.asarray(scales, dtype=np.float32).reshape(-1, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        v = (w * s).astype(np.float32)
        adj = (v + np.copysign(np.float32(0.5), v)).astype(np.float32)
        r = np.trunc(adj)
        bad = np.isnan(r)
        if ncnn_compat:
            bad |= np.abs(adj) >= _INT32_LIMIT
        r = np.where(bad, np.float32(-127), r)
        r = np.clip(r, -127, 127)
    return r.astype(np.int8)


def quantize_tensor(weights: np.ndarray, scale: float, *, ncnn_compat: bool = False) -> np.ndarray:
    """Quantize a whole tensor with one scale."""
    flat = np.asarray(weights, dtype=np.float32).reshape(1, -1)
    scales = np.array([scale], dtype=np.float32)
    return quantize_rows(flat, scales, ncnn_compat=ncnn_compat).reshape(-1)


def absmax_scales(rows: np.ndarray, *, ncnn_compat: bool = False) -> np.ndarray:
    """``127 / absmax`` per row in float32, ``1.0`` for an all-zero row (Gemm's rule).

    A row whose absmax is so small (denormal) that ``127 / absmax`` overflows float32 gets ``1.0``
    too (its weights quantize to 0, their value); ncnn2int8, and ``ncnn_compat``, write ``inf``.
    """
    a = np.fmax.reduce(np.abs(np.asarray(rows, dtype=np.float32)), axis=1)  # NaN ignored
    a = np.where(np.isnan(a), np.float32(0), a).astype(np.float32)  # like std::max(absmax, nan)
    with np.errstate(divide="ignore", over="ignore"):
        s = (np.float32(127) / a).astype(np.float32)
    guard = a == 0 if ncnn_compat else ~np.isfinite(s)
    return np.where(guard, np.float32(1), s).astype(np.float32)
