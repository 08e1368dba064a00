"""glibc's ``logf``, vectorised, bit for bit.

ncnn2table's KL search calls ``log(float)`` (the C++ float overload, i.e. glibc ``logf``) 4
million times per blob.  Numpy's float32 ``np.log`` is a different approximation and differs in
the last bit for some arguments, which can move a near-tie KL choice.  This module evaluates
glibc's algorithm (``sysdeps/ieee754/flt-32/e_logf.c``, glibc >= 2.27, unchanged through at
least 2.36 -- the reference tool ran on Debian 12's glibc 2.36) with the same double-precision
operations and table, so every result equals glibc's.

x86-64 glibc dispatches ``logf`` to a copy compiled with ``-mfma`` when the CPU has FMA (every
x86 CPU of the last decade, and the one the reference tables were made on).  There the four
``a*b + c`` steps are fused.  Numpy has no FMA, so the fused result is computed by plain double
arithmetic and, for the rare arguments whose double result lies so close to a float32 rounding
boundary that fusing could matter, recomputed exactly with :class:`fractions.Fraction`.
Set ``fused=False`` for the non-FMA variant (older x86, or aarch64 glibc which also fuses
-- aarch64 compilers contract by default, so ``fused=True`` is the right default there too).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

_h = float.fromhex

_TABLE = (
    (_h("0x1.661ec79f8f3bep+0"), -_h("0x1.57bf7808caadep-2")),
    (_h("0x1.571ed4aaf883dp+0"), -_h("0x1.2bef0a7c06ddbp-2")),
    (_h("0x1.49539f0f010bp+0"), -_h("0x1.01eae7f513a67p-2")),
    (_h("0x1.3c995b0b80385p+0"), -_h("0x1.b31d8a68224e9p-3")),
    (_h("0x1.30d190c8864a5p+0"), -_h("0x1.6574f0ac07758p-3")),
    (_h("0x1.25e227b0b8eap+0"), -_h("0x1.1aa2bc79c81p-3")),
    (_h("0x1.1bb4a4a1a343fp+0"), -_h("0x1.a4e76ce8c0e5ep-4")),
    (_h("0x1.12358f08ae5bap+0"), -_h("0x1.1973c5a611cccp-4")),
    (_h("0x1.0953f419900a7p+0"), -_h("0x1.252f438e10c1ep-5")),
    (_h("0x1p+0"), _h("0x0p+0")),
    (_h("0x1.e608cfd9a47acp-1"), _h("0x1.aa5aa5df25984p-5")),
    (_h("0x1.ca4b31f026aap-1"), _h("0x1.c5e53aa362eb4p-4")),
    (_h("0x1.b2036576afce6p-1"), _h("0x1.526e57720db08p-3")),
    (_h("0x1.9c2d163a1aa2dp-1"), _h("0x1.bc2860d22477p-3")),
    (_h("0x1.886e6037841edp-1"), _h("0x1.1058bc8a07ee1p-2")),
    (_h("0x1.767dcf5534862p-1"), _h("0x1.4043057b6ee09p-2")),
)
_INVC = np.array([t[0] for t in _TABLE], dtype=np.float64)
_LOGC = np.array([t[1] for t in _TABLE], dtype=np.float64)
_LN2 = _h("0x1.62e42fefa39efp-1")
_A0, _A1, _A2 = -_h("0x1.00ea348b88334p-2"), _h("0x1.5575b0be00b6ap-2"), -_h("0x1.ffffef20a4123p-2")
_OFF = 0x3F330000

# Fused and unfused evaluation differ by a few double ulps of y; 256 is a wide margin.
_DANGER_ULPS = 256


def _core(ix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Table index, exponent and the reduced ``z`` for positive normal float32 bit patterns."""
    tmp = (ix - np.uint32(_OFF)).astype(np.uint32)
    i = ((tmp >> np.uint32(19)) % np.uint32(16)).astype(np.intp)
    k = tmp.view(np.int32) >> np.int32(23)
    iz = (ix - (tmp & np.uint32(0xFF800000))).astype(np.uint32)
    z = iz.view(np.float32).astype(np.float64)
    return i, k, z, iz


def _exact_fused(z: float, invc: float, logc: float, k: int) -> np.float32:
    """The FMA variant for one argument, every fused step rounded once (exact rationals)."""

    def fma(a: float, b: float, c: float) -> float:
        return float(Fraction(a) * Fraction(b) + Fraction(c))

    r = fma(z, invc, -1.0)
    y0 = fma(float(k), _LN2, logc)
    r2 = r * r
    y = fma(_A1, r, _A2)
    y = fma(_A0, r2, y)
    y = fma(y, r2, y0 + r)
    return np.float32(y)


def logf(x: np.ndarray | float, *, fused: bool = True) -> np.ndarray:
    """glibc ``logf`` of a float32 array (or scalar); returns a float32 array of the same shape."""
    xa = np.asarray(x, dtype=np.float32)
    shape = xa.shape
    xf = np.ascontiguousarray(xa).reshape(-1)
    ix = xf.view(np.uint32).copy()
    out = np.empty(xf.shape, dtype=np.float32)

    special = (ix - np.uint32(0x00800000)).astype(np.uint32) >= np.uint32(0x7F800000 - 0x00800000)
    if special.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            out[special] = np.log(xf[special].astype(np.float64)).astype(np.float32)
        # subnormal positives are normalised as glibc does and then take the normal path
        sub = special & (ix > 0) & (ix < np.uint32(0x00800000))
        ix[sub] = (xf[sub] * np.float32(2.0**23)).view(np.uint32) - np.uint32(23 << 23)
        special &= ~sub
    normal = ~special
    if not normal.any():
        return out.reshape(shape)

    i, k, z, _ = _core(ix[normal])
    invc = _INVC[i]
    logc = _LOGC[i]
    kd = k.astype(np.float64)
    r = z * invc - 1.0
    y0 = logc + kd * _LN2
    r2 = r * r
    y = _A1 * r + _A2
    y = _A0 * r2 + y
    y = y * r2 + (y0 + r)
    f = y.astype(np.float32)

    if fused:
        # Fusing moves y by a few double ulps; only a y whose low 29 mantissa bits (the ones
        # float32 rounding drops) lie within 256 ulps of the rounding midpoint could round
        # differently.  Those few are recomputed exactly.
        low = (y.view(np.uint64) & np.uint64(0x1FFFFFFF)).view(np.int64)
        risky = np.flatnonzero(np.abs(low - np.int64(1 << 28)) <= np.int64(_DANGER_ULPS))
        if risky.size:
            # same argument, same result: evaluate each distinct argument once
            _, first, inverse = np.unique(ix[normal][risky], return_index=True, return_inverse=True)
            exact = np.array(
                [
                    _exact_fused(float(z[j]), float(invc[j]), float(logc[j]), int(k[j]))
                    for j in risky[first].tolist()
                ],
                dtype=np.float32,
            )
            f[risky] = exact[inverse.reshape(-1)]

    res = out[normal]
    res[:] = f
    res[ix[normal] == np.uint32(0x3F800000)] = np.float32(0.0)
    out[normal] = res
    return out.reshape(shape)
