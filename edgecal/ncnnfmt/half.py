"""float32 -> float16 exactly as ncnn's ``cast_float32_to_float16`` writes weights on x86.

ncnn's x86 Cast layer converts blocks of 16/8/4 values with F16C (IEEE round to nearest even,
subnormals kept) and the last ``n % 4`` values with the scalar ``float32_to_float16``, which
rounds half away from zero on the mantissa and flushes results below the fp16 normal range to
signed zero.  Measured against pip ``ncnn`` 1.0.20261020 (AVX2/F16C) on 63k values incl. ties,
NaN, inf and the overflow boundary.  ncnn2int8 writes every still-float tagged weight this way.

``ncnn_compat=True`` reproduces the ncnn2int8 the reference set was made with (Tencent/ncnn
``a4d2ea1``, 1.0.20260722): its scalar ``float32_to_float16`` (``src/mat.cpp``) *truncates* the
mantissa (``significand >> 13``) instead of rounding, so the last ``n % 4`` values of a record
whose length is not a multiple of 4 are rounded toward zero there (and a value just below the
fp16 overflow boundary stays finite).  The F16C blocks round to nearest even in both.
"""

from __future__ import annotations

import numpy as np


def _scalar_f16_bits(x: np.ndarray, truncate: bool = False) -> np.ndarray:
    u = x.astype(np.float32).view(np.uint32).astype(np.int64)
    sign = (u >> 31) & 1
    exp = (u >> 23) & 0xFF
    sig = u & 0x7FFFFF
    newexp = exp - 127 + 15
    half_ulp = 0 if truncate else 0x1000
    val = (newexp << 10) + ((sig + half_ulp) >> 13)  # a mantissa carry moves into the exponent
    val = np.where(val >= 0x7C00, 0x7C00, val)
    val = np.where(newexp <= 0, 0, val)
    val = np.where(exp == 0, 0, val)
    val = np.where(exp == 0xFF, 0x7C00 | np.where(sig != 0, 0x200, 0), val)
    return ((sign << 15) | val).astype(np.uint16)


def float32_to_float16_bits(values: np.ndarray, *, ncnn_compat: bool = False) -> np.ndarray:
    """uint16 fp16 bit patterns of a flat float32 array, ncnn x86 semantics.

    ``ncnn_compat``: the scalar tail truncates as in ncnn2int8 1.0.20260722 (module docstring).
    """
    x = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    n = x.size
    head = n - n % 4
    out = np.empty(n, dtype=np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        out[:head] = x[:head].astype(np.float16).view(np.uint16)
    out[head:] = _scalar_f16_bits(x[head:], truncate=ncnn_compat)
    return out


def float16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float32)
