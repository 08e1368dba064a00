"""The int8 weight quantizer: ncnn's ``quantize_to_int8`` (the Quantize layer) on x86.

``q = clamp(round_half_away(float32(w * s)), -127, 127)``; the x86 SIMD kernels round as
``trunc(v + copysign(0.5, v))`` in float32 (so 0.49999997 -> 1), and convert NaN (``0 * inf``
from an all-zero channel with scale ``inf``) to -127.  ``-128`` is never produced.
"""

from __future__ import annotations

import numpy as np


def quantize_rows(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Quantize ``weights`` (rows x k, float32) with one float32 scale per row."""
    w = np.asarray(weights, dtype=np.float32)
    s = np.asarray(scales, dtype=np.float32).reshape(-1, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        v = (w * s).astype(np.float32)
        r = np.trunc((v + np.copysign(np.float32(0.5), v)).astype(np.float32))
        r = np.where(np.isnan(r), np.float32(-127), r)
        r = np.clip(r, -127, 127)
    return r.astype(np.int8)


def quantize_tensor(weights: np.ndarray, scale: float) -> np.ndarray:
    """Quantize a whole tensor with one scale."""
    flat = np.asarray(weights, dtype=np.float32).reshape(1, -1)
    return quantize_rows(flat, np.array([scale], dtype=np.float32)).reshape(-1)


def absmax_scales(rows: np.ndarray) -> np.ndarray:
    """``127 / absmax`` per row in float32, ``1.0`` for an all-zero row (Gemm's rule)."""
    a = np.max(np.abs(np.asarray(rows, dtype=np.float32)), axis=1)
    with np.errstate(divide="ignore"):
        s = (np.float32(127) / a).astype(np.float32)
    return np.where(a == 0, np.float32(1), s).astype(np.float32)
