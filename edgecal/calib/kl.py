"""ncnn2table's KL-divergence threshold search (spec 2.7), vectorised and bit-exact.

The C++ loops (``QuantNet::quantize_KL``) try every ``threshold`` t in ``[128, 2047]``.  For
each they build, all in float32: the clipped reference ``P`` (length t, ``eps + h``, outliers
added sequentially into ``P[t-1]``), the 128-bin quantized ``Q`` (mean density over each bin's
span, fractional edge bins weighted), its expansion ``E`` (length t, ``eps +`` contributions
added in bin order) and ``KL = sum P*logf(P/E)`` accumulated sequentially in a float.  The first
strict minimum wins.

Here every candidate is computed at once on 2-D arrays (rows = t).  All bin boundaries
``j*t/128`` are exact in float32 (``j*t < 2**24``), so the edge weights are computed from
integers.  Every sum the C code does sequentially is done sequentially (an explicit loop over
the few terms of a Q bin, ``np.add.accumulate`` for the outlier tail and for the KL sum), so
``P``, ``Q``, ``E`` and the KL terms are bit-identical to the C code's.  The only operation that
is expensive to reproduce exactly is glibc's ``logf``; the search therefore runs in two passes:

1. every candidate with a float64 ``log`` rounded to float32 (within 1 ulp of glibc's ``logf``),
   together with a rigorous bound of how far each float32 KL can be from the exact one;
2. only the candidates that can still be the first minimum under that bound are recomputed with
   the bit-exact glibc ``logf`` (:mod:`edgecal.calib.logf`), and the first strict minimum among
   them is the answer.  Every other candidate is provably strictly worse.

The result equals a literal port of the loops (``tests/oracle/kl_loop.py``) bin for bin.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgecal.calib.logf import logf as glibc_logf

NUM_BINS = 2048
TARGET_BINS = 128
KL_EPS = np.float32(0.0001)

_F32 = np.float32
_U = 2.0**-23  # float32 ulp of 1
_ROW_BLOCK = 128  # candidates per block: keeps the working set small
_last_candidates = [0]  # size of the last exact re-evaluation set (for tests and benchmarks)


def normalize(counts: np.ndarray) -> np.ndarray:
    """``h[k] = (float)(count[k] / (double)sum)``; NaN everywhere when the sum is 0."""
    c = np.asarray(counts)
    if c.shape != (NUM_BINS,):
        raise ValueError(f"a histogram has {NUM_BINS} bins, got shape {c.shape}")
    c = c.astype(np.uint64)
    total = np.add.reduce(c, dtype=np.uint64)  # uint64 like the C loop (wraps identically)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c.astype(np.float64) / np.float64(total)).astype(np.float32)


class _Block:
    """Everything about a block of candidate thresholds that does not depend on the histogram.

    Built once per block and cached: the bin geometry is the same for every blob.
    """

    def __init__(self, ts: np.ndarray) -> None:
        self.ts = ts
        t = ts.astype(np.int64)[:, None]
        rows = ts.size
        self.rows = np.arange(rows)
        self.last = (self.rows, ts - 1)
        # --- Q: bin j spans [j*t/128, (j+1)*t/128) -----------------------------------------
        j = np.arange(TARGET_BINS, dtype=np.int64)[None, :]
        s128 = j * t  # 128 * start (exact: boundaries are multiples of 1/128)
        e128 = s128 + t  # 128 * end
        lu = -((-s128) // TARGET_BINS)  # ceil(start)
        rl = e128 // TARGET_BINS  # floor(end)
        self.q_ls = ((lu * TARGET_BINS - s128) / TARGET_BINS).astype(_F32)
        self.q_rs = ((e128 - rl * TARGET_BINS) / TARGET_BINS).astype(_F32)
        # index NUM_BINS is a zero appended to h: a skipped term adds +0, which changes nothing
        self.q_left = np.where(self.q_ls > 0, lu - 1, NUM_BINS).astype(np.intp)
        self.q_right = np.where(self.q_rs > 0, rl, NUM_BINS).astype(np.intp)
        cnt = rl - lu
        steps = int(cnt.max(initial=0))
        p = np.arange(steps, dtype=np.int64)[None, None, :]
        full = np.where(p < cnt[:, :, None], lu[:, :, None] + p, NUM_BINS)
        self.q_full = [full[:, :, i].astype(np.intp) for i in range(steps)]
        self.q_denom = (cnt.astype(_F32) + self.q_ls) + self.q_rs  # (rl-lu) + ls + rs, in order
        # --- E: source bin k gets eps + Q[jk] (jk = the Q bin holding point k), or, when a Q
        # boundary b falls strictly inside (k, k+1): (eps + (b-k)*Q[jk]) + (k+1-b)*Q[jk+1]. --
        self.width = int(ts.max())
        k = np.arange(self.width, dtype=np.int64)[None, :]
        jk = np.minimum((k * TARGET_BINS) // t, TARGET_BINS - 1)
        b128 = (jk + 1) * t
        straddle = (b128 < (k + 1) * TARGET_BINS) & (jk < TARGET_BINS - 1) & (k < t)
        flat_j = jk + self.rows[:, None] * TARGET_BINS
        self.e_idx = flat_j.astype(np.intp)
        self.st_pos = np.flatnonzero(straddle)
        self.st_j = flat_j.reshape(-1)[self.st_pos].astype(np.intp)
        num = (b128 - k * TARGET_BINS).reshape(-1)[self.st_pos]
        self.st_rs = (num / TARGET_BINS).astype(_F32)
        self.st_ls = ((TARGET_BINS - num) / TARGET_BINS).astype(_F32)
        self.col_valid = k < t


@lru_cache(maxsize=64)
def _block(t0: int, t1: int) -> _Block:
    return _Block(np.arange(t0, t1, dtype=np.int64))


def _quantized(hz: np.ndarray, g: _Block) -> np.ndarray:
    """``Q`` (rows x 128, float32): C's Q[j] = 0 + ls*h[lu-1] + rs*h[rl] + h[lu] + ... ."""
    acc = g.q_ls * hz[g.q_left] + g.q_rs * hz[g.q_right]
    for idx in g.q_full:
        acc = acc + hz[idx]
    return acc / g.q_denom


def _tails(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``P[t-1] = ((eps + h[t-1]) + h[t]) + ... + h[2047]`` for each t, sequentially."""
    nz = np.flatnonzero(h)
    last = int(nz[-1]) if nz.size else -1
    width = max(0, last - int(t.min()) + 1)  # h[t..last]; beyond it only zeros are added
    first = KL_EPS + h[t - 1]
    if width == 0:
        return first
    pad = np.concatenate([h, np.zeros(width, dtype=_F32)])
    win = np.lib.stride_tricks.sliding_window_view(pad, width)[t]
    block = np.concatenate([first[:, None], win], axis=1)
    return np.add.accumulate(block, axis=1)[:, -1]


def _distributions(
    h: np.ndarray, g: _Block
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bit-exact float32 ``eps + h`` (1 x width), E (rows x width) and P[t-1] (rows).

    Columns k >= t of a row hold finite junk: callers read sums at column t-1 only.
    """
    hz = np.concatenate([h, np.zeros(1, dtype=_F32)])
    q = _quantized(hz, g).reshape(-1)
    e = KL_EPS + q[g.e_idx]
    qs = q[g.st_j]
    e.reshape(-1)[g.st_pos] = (KL_EPS + g.st_rs * qs) + g.st_ls * q[g.st_j + 1]
    p = (KL_EPS + h[: g.width])[None, :]
    return p, e, _tails(h, g.ts)


def _kl_exact(h: np.ndarray, g: _Block) -> np.ndarray:
    """ncnn2table's float32 KL of each candidate of the block, bit for bit."""
    p, e, tail = _distributions(h, g)
    terms = p * glibc_logf(p / e)
    e_last = e[g.last]
    terms[g.last] = tail * glibc_logf(tail / e_last)
    return np.add.accumulate(terms, axis=1)[g.last]


@lru_cache(maxsize=1)
def _fast_log_ulps() -> float:
    """Max ulp error of numpy's float32 ``log`` here, measured once (about 3 on x86 AVX2).

    The screening pass trusts it only when it is small; otherwise it uses float64 ``log``.
    """
    x = np.geomspace(1e-6, 1e6, 1 << 16).astype(_F32)
    x = np.concatenate([x, (1 + np.linspace(-0.01, 0.01, 1 << 14)).astype(_F32)])
    ref = np.log(x.astype(np.float64))
    err = np.abs(np.log(x).astype(np.float64) - ref)
    ulp = np.spacing(np.abs(ref).astype(_F32)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        worst = np.nanmax(np.where(ulp > 0, err / ulp, 0.0))
    return float(worst)


def _screen_log(x: np.ndarray) -> np.ndarray:
    if _fast_log_ulps() <= 4.0:
        return np.log(x)
    return np.log(x.astype(np.float64)).astype(_F32)


def _kl_approx(h: np.ndarray, g: _Block) -> tuple[np.ndarray, np.ndarray]:
    """Screening KL: float32 terms with a <= 4 ulp log, summed in float64; and sum |terms|."""
    p, e, tail = _distributions(h, g)
    terms = p * _screen_log(p / e)
    e_last = e[g.last]
    terms[g.last] = tail * _screen_log(tail / e_last)
    terms = np.where(g.col_valid, terms, _F32(0))
    return terms.sum(axis=1, dtype=np.float64), np.abs(terms).sum(axis=1, dtype=np.float64)


def _blocks() -> list[_Block]:
    return [
        _block(lo, min(lo + _ROW_BLOCK, NUM_BINS))
        for lo in range(TARGET_BINS, NUM_BINS, _ROW_BLOCK)
    ]


def kl_divergences(counts: np.ndarray, *, exact: bool = True) -> np.ndarray:
    """The KL of every candidate threshold 128..2047 (index ``t - 128``).

    ``exact=True``: float32, bit-identical to ncnn2table's ``kl_divergence`` values.
    ``exact=False``: float64 sums of the float64 terms (faster; what the search screens with).
    """
    h = normalize(counts)
    if exact:
        return np.concatenate([_kl_exact(h, g) for g in _blocks()])
    return np.concatenate([_kl_approx(h, g)[0] for g in _blocks()])


def kl_best_bin(counts: np.ndarray) -> int:
    """The ``target_threshold`` ncnn2table picks for a 2048-bin histogram.

    An all-zero histogram gives 128 (every KL is NaN, so nothing beats ``FLT_MAX``), exactly
    like ncnn2table; :func:`edgecal.calib.scales.blob_scale` turns that case into a warning.
    """
    h = normalize(counts)
    if not np.isfinite(h).all():
        return TARGET_BINS
    kls, bounds = [], []
    for g in _blocks():
        kl, mag = _kl_approx(h, g)
        kls.append(kl)
        # |ncnn's float32 KL - kl| <= t*2^-24*S (its sequential float32 sum) + <= 6 ulp per
        # term (logf within 0.82 ulp of log, the screening log within 4 ulp, both products
        # round once), with S = sum |terms|; padded to 8 ulp and 1%.
        bounds.append((g.ts / 2.0 + 8.0) * _U * mag * 1.01 + 1e-30)
    kl = np.concatenate(kls)
    bound = np.concatenate(bounds)
    ts = np.arange(TARGET_BINS, NUM_BINS, dtype=np.int64)
    finite = np.isfinite(kl)
    if not finite.any():
        return TARGET_BINS
    upper = np.min(np.where(finite, kl + bound, np.inf))
    cand = ts[finite & (kl - bound <= upper)]  # every other t is provably strictly worse
    _last_candidates[0] = int(cand.size)
    exact = np.concatenate(
        [_kl_exact(h, _Block(cand[lo : lo + _ROW_BLOCK])) for lo in range(0, cand.size, _ROW_BLOCK)]
    )
    best = TARGET_BINS
    best_kl = float(np.finfo(_F32).max)
    for t_val, v in zip(cand.tolist(), exact.tolist(), strict=True):
        if v < best_kl:  # strict: the first minimum wins (NaN never wins)
            best_kl = v
            best = t_val
    return best


def threshold_from_bin(best_bin: int, absmax: float) -> np.float32:
    """``(best + 0.5f) * absmax / 2048`` in float32, in that order."""
    return _F32(_F32(_F32(best_bin) + _F32(0.5)) * _F32(absmax)) / _F32(NUM_BINS)


def kl_threshold(counts: np.ndarray, absmax: float) -> np.float32:
    """The KL clipping threshold of a blob, as ncnn2table computes ``stat.threshold``."""
    return threshold_from_bin(kl_best_bin(counts), absmax)
