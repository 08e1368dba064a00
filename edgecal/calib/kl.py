"""ncnn2table's KL-divergence threshold search (spec 2.7), vectorised and bit-exact.

The C++ loops (``QuantNet::quantize_KL``) try every ``threshold`` t in ``[128, 2047]``.  For
each they build, all in float32: the clipped reference ``P`` (length t, ``eps + h``, outliers
added sequentially into ``P[t-1]``), the 128-bin quantized ``Q`` (mean density over each bin's
span, fractional edge bins weighted), its expansion ``E`` (length t, ``eps +`` contributions
added in bin order) and ``KL = sum P*logf(P/E)`` accumulated sequentially in a float.  The first
strict minimum wins.

The exact path (``_kl_exact``) computes every candidate on 2-D arrays (rows = t), bit-identical
to the C code: all bin boundaries ``j*t/128`` are exact in float32, every sequential sum is done
sequentially, and glibc's ``logf`` is emulated bit for bit (:mod:`edgecal.calib.logf`).  It costs
O(t) per candidate, so the search runs it only on the few candidates a screening pass leaves:

1. ``_screen``: a float64 model of every candidate with O(128) work and no per-source-bin work.
   With prefix sums of p = eps+h and of p log p, the bins fully inside Q-bin j contribute
   ``sum p log p - W_j log e_j`` (W_j their p-mass), each boundary's straddling bin one term
   ``p log(fr*e_{j-1} + (1-fr)*e_j)``, the folded tail one term.  The 255 logs per candidate are
   numpy's float64 log of the float32-rounded E (``_TABLE_LOG``: or a 10-bit table plus ``x/c``,
   error <= 2**-21 + float32 rounding, bounded in ``_table_log_error``), weighted sums in
   float64.  The p-mass of Q-bin j is qs_j + npb*eps, so e_j is one product of a difference.
   The arrays are (Q-bin, candidate) per chunk of 128 candidates: a shift by one Q-bin is a
   contiguous block, so each numpy pass is one flat loop (1.4-1.6x faster than rows of
   candidates).  The layout (~4 MB, read only) is cached; each call has its own chunk
   workspace (~1 MB), so calls in several threads share nothing mutable.
2. ``bound``: for every candidate ``|ncnn's float32 KL - value| <= bound``, where

   * screening error: log-table error times sum W, float64 prefix-sum errors (absolute,
     relative to eps), float32 weight/E roundings;
   * per term (Higham's model, u = 2**-24, gamma_n = nu/(1-nu)): P is within u (tail:
     gamma_{1+#nonzero h beyond t}), E within a_E = gamma_{floor(npb)+6} (Q: <= floor(npb)+2
     terms, one product, sums, one division; E: <= 3 more roundings), the ratio within u, logf
     within 1 ulp <= 2u|log| (glibc: 0.82 ulp), the product within u.  So
     ``|T^ - T| <= |T| c_T + p c_p`` with ``c_T = (1+a_P)(1+u)(1+2u) - 1`` and
     ``c_p = (1+a_P)(1+u)(1+2u) * (-log1p(-a_P) - log1p(-u) - log1p(-a_E))``; summed with
     ``sum |T| <= |KL| + 2 * mass(h below t)`` (T >= p - e) and ``sum p``;
   * the sequential float32 sum: ``|err| <= u * sum_i |S^_i|`` over the partial sums, and by
     the log-sum inequality every real partial sum lies in ``[-max_j Qmass_j, KL + max_j
     Qmass_j]`` (the E- and P-CDFs differ by at most one Q-bin's mass), so
     ``sum_i |S^_i| <= (t-1) (|KL| + max_j Qmass_j + D + gamma_t (sum|T| + D))``.

   Only candidates whose interval meets the lowest upper end go on; if just one remains, it is
   strictly below every other candidate and is the answer without evaluation.
3. ``_refine`` (the second stage, on those few): ncnn's float32 P and E exactly (cheap: E is a
   repeat of ``eps + Q`` plus the straddling bins), the real KL in float64, and a running error
   bound (``u * sum |partial sums|`` instead of the a-priori one, see ``_refine``): some 50x
   tighter, so usually one candidate is left and glibc's ``logf`` is never emulated.  It sees
   the ``_PROBE`` lowest screened values first; their lowest upper end then drops every other
   candidate whose screened lower end lies above it (so some 10-60 rows instead of 50-300).
4. ``_exact_rows``: the bit-exact float32 KL of whatever is still left; the first minimum wins.

The result equals a literal port of the loops (``tests/oracle/kl_loop.py``) bin for bin.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgecal.calib.histogram import NUM_BINS
from edgecal.calib.logf import logf as glibc_logf

TARGET_BINS = 128
KL_EPS = np.float32(0.0001)

_F32 = np.float32
_ROW_BLOCK = 128  # candidates per block: keeps the working set small
_last_candidates = [0, 0]  # sizes of the last second-stage and exact sets (tests, benchmarks)


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
        every = int(cnt.min(initial=0))  # steps every Q-bin has
        lu_p = lu.astype(np.intp)
        self.q_full = []
        for i in range(steps):
            idx = lu_p + i
            if i >= every:
                idx[cnt <= i] = NUM_BINS
            self.q_full.append(idx)
        self.q_denom = (cnt.astype(_F32) + self.q_ls) + self.q_rs  # (rl-lu) + ls + rs, in order
        # --- E: source bin k gets eps + Q[jk] (jk = the Q bin holding point k), or, when a Q
        # boundary b falls strictly inside (k, k+1): (eps + (b-k)*Q[jk]) + (k+1-b)*Q[jk+1]. --
        # Q-bin j holds the source bins ceil(j*t/128) .. ceil((j+1)*t/128) - 1 (bin 127 also
        # the junk columns t..width-1): E is a repeat of eps + Q, then the straddling bins.
        self.width = int(ts.max())
        bj = np.arange(1, TARGET_BINS, dtype=np.int64)[None, :]  # boundaries j = 1..127
        b128 = bj * t  # 128 * b_j
        first = -((-b128) // TARGET_BINS)  # ceil(b_j): the first source bin of Q-bin j
        edges = np.empty((rows, TARGET_BINS + 1), dtype=np.int64)
        edges[:, 0] = 0
        edges[:, 1:TARGET_BINS] = first
        edges[:, TARGET_BINS] = self.width
        self.e_counts = np.diff(edges, axis=1).reshape(-1)
        straddle = b128 % TARGET_BINS != 0  # b_j inside source bin k = floor(b_j) (jk = j-1)
        k = b128 // TARGET_BINS
        self.st_pos = (self.rows[:, None] * self.width + k)[straddle].astype(np.intp)
        self.st_j = (self.rows[:, None] * TARGET_BINS + bj - 1)[straddle].astype(np.intp)
        num = (b128 - k * TARGET_BINS)[straddle]
        self.st_rs = (num / TARGET_BINS).astype(_F32)
        self.st_ls = ((TARGET_BINS - num) / TARGET_BINS).astype(_F32)


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


def _distributions(h: np.ndarray, g: _Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bit-exact float32 ``eps + h`` (1 x width), E (rows x width) and P[t-1] (rows).

    Columns k >= t of a row hold finite junk: callers read sums at column t-1 only.
    """
    hz = np.concatenate([h, np.zeros(1, dtype=_F32)])
    q = _quantized(hz, g).reshape(-1)
    e = np.repeat(KL_EPS + q, g.e_counts).reshape(g.ts.size, g.width)
    qs = q[g.st_j]
    e.reshape(-1)[g.st_pos] = (KL_EPS + g.st_rs * qs) + g.st_ls * q[g.st_j + 1]
    p = (KL_EPS + h[: g.width])[None, :]
    return p, e, _tails(h, g.ts)


def _kl_exact(h: np.ndarray, g: _Block) -> np.ndarray:
    """ncnn2table's float32 KL of each candidate of the block, bit for bit."""
    p, e, tail = _distributions(h, g)
    return _exact_rows(p, e, tail, g.ts)


def _exact_rows(p: np.ndarray, e: np.ndarray, tail: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The float32 KL of rows ``ts`` from their exact distributions (:func:`_distributions`)."""
    last = (np.arange(ts.size), ts - 1)
    width = int(ts.max())
    pw, ew = p[:, :width], e[:, :width]
    terms = pw * glibc_logf(pw / ew)
    terms[last] = tail * glibc_logf(tail / ew[last])
    return np.add.accumulate(terms, axis=1)[last]


def _refine(
    p: np.ndarray, e: np.ndarray, tail: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(value, bound) per row with ``|ncnn's float32 KL - value| <= bound``: the second stage.

    P and E here are ncnn's float32 values exactly, so only its last four roundings remain.
    Per term (u = 2**-24, L = log(p/e) real): ``fl(p/e)`` moves the log by <= 1.01u, glibc
    ``logf`` is within 0.82 ulp <= 2u|log| of the log of its argument, the product rounds once:
    ``|T^ - pL| <= tau = p*(lam*(1+u) + u|L|)`` with ``lam = 1.01u + 2u(|L| + 1.01u)``.  The
    sequential float32 sum adds ``u|S^_i|`` per partial sum, ``|S^_i| <= |S_i| + D``, so
    ``D <= (sum tau + u sum_i |S_i|) / (1 - t u)`` with S_i the real partial sums (running
    error analysis; far tighter than the screen's a-priori bound).  L, S_i and the sums are
    float64 (relative error ~t * 2**-53, covered by the margin).
    """
    rows = np.arange(ts.size)
    width = int(ts.max())
    u = _u32
    c0 = (1.01 * u + 2.02 * u * u) * (1.0 + u)  # tau = p * (c0 + c1 |L|)
    c1 = 2.0 * u * (1.0 + u) + u
    # every column with p_k = eps + h_k (the bin t-1 corrected for the tail below)
    prev = (rows, ts - 2)
    p64 = p[0, :width].astype(np.float64)
    lg = e[:, :width].astype(np.float64)
    np.divide(p64, lg, out=lg)
    np.log(lg, out=lg)  # L_k
    part = p64 * lg
    np.cumsum(part, axis=1, out=part)  # real partial sums S_i
    s_prev = part[prev]
    np.abs(lg, out=lg)
    lg *= c1
    lg += c0
    lg *= p64  # tau_k
    np.abs(part, out=part)
    part *= u
    lg += part
    num_all = np.cumsum(lg, axis=1, out=lg)  # sum tau_k + u |S_k|, read at k = t-2
    # column t-1 holds the folded tail: p = P[t-1] = tail there
    lt = np.log(tail.astype(np.float64) / e[rows, ts - 1].astype(np.float64))
    t_tail = tail * lt
    value = s_prev + t_tail
    tau_tail = tail * (c0 + c1 * np.abs(lt))
    num = num_all[prev] + tau_tail + u * np.abs(value)
    tf = ts.astype(np.float64)
    # float64's own error (L, the partial sums): <= 8 (t+8) 2**-53 (sum |T| + sum |S| + sum p),
    # each of those <= num / u (tau_k >= u p_k (1 + |L_k|))
    d = num * (1.0 / (1.0 - tf * u) + 3.0 * 8.0 * (tf + 8.0) * _u64 / u)
    return value, d * (1.0 + 1e-6) + 1e-30


# --------------------------------------------------------------------------------------------
# Screening: every candidate at O(128) float64 work, no per-source-bin work.
#
# Real-number model of candidate t (h as given, float32 values taken exactly):
#   p_k = eps + h_k (k < t-1),  p_tail = eps + sum_{k >= t-1} h_k,
#   Q-bin j spans [b_j, b_{j+1}), b_j = j*t/128;  e_j = eps + qs_j / npb with qs_j its mass,
#   KL(t) = sum_{k<t-1} p_k log p_k  -  sum_{k<t-1} p_k log e_k  +  p_tail log(p_tail / e_127).
# Source bin F_j = floor(b_j) (j = 1..127) is the "slot" of boundary j: its E is
# fr_j*e_{j-1} + (1-fr_j)*e_j (fr_j = b_j - F_j; fr_j = 0 gives e_j).  Every other bin k < t-1
# lies fully inside one Q-bin, so sum_k p_k log e_k = sum_j W_j log e_j + sum_slots p_F log e_F,
# with W_j = (#full bins) * eps + (H[F_{j+1}] - H[F_j + 1]) from prefix sums of p = eps + h, and
# sum_{k<t-1} p log p from one prefix sum.  That is 128 + 127 logs per candidate, all candidates
# in chunks of (255 bins, 128 candidates) arrays (t = 128 has a one-term closed form).
# --------------------------------------------------------------------------------------------

_u32 = 2.0**-24  # unit roundoff, float32
_u64 = 2.0**-53  # unit roundoff, float64
_EPS64 = float(KL_EPS)  # the float32 eps, exactly
_T_LO = 129  # rows of the screening arrays: t = 129..2047 (t = 128 is done in closed form)
_LOG_BITS = 10  # mantissa bits indexing the log table
_LOG_E_LO, _LOG_E_HI = -15, 9  # table domain [2**-15, 2**9); e >= eps > 2**-14 always


def _gamma(n: np.ndarray | float, u: float = _u32) -> np.ndarray | float:
    """Higham's gamma_n = n*u / (1 - n*u)."""
    return n * u / (1.0 - n * u)


class _Screen:
    """Histogram-independent layout of the screening pass (about 5 MB, built once)."""

    def __init__(self) -> None:
        ts = np.arange(_T_LO, NUM_BINS, dtype=np.int64)
        self.ts = ts
        m = np.arange(TARGET_BINS + 1, dtype=np.int64)[None, :] * ts[:, None]  # 128 * b_j
        f = m >> 7
        floor = f.astype(np.intp)  # F_j = floor(b_j), j = 0..128
        frac = (m & 127) / TARGET_BINS  # b_j - F_j (float64: no casts in the passes)
        nfull = f[:, 1:] - f[:, :-1] - 1  # bins strictly between the slots F_j and F_{j+1}
        nfull[:, 0] += 1  # bin 0 is not a slot
        nfull[:, -1] -= 1  # bin t-1 is the folded tail, done separately
        # per chunk of _CHUNK candidates, transposed (bin j x candidate), contiguous: a shift
        # by one Q-bin is then a contiguous block, so every pass is one flat inner loop
        self.chunks = [
            (
                r0,
                min(r0 + _CHUNK, ts.size),
                np.ascontiguousarray(floor[r0 : r0 + _CHUNK].T),
                np.ascontiguousarray(frac[r0 : r0 + _CHUNK].T),
            )
            for r0 in range(0, ts.size, _CHUNK)
        ]
        self.nfull_err = nfull.astype(np.float64).max(axis=1)  # for the rounding bound above
        self.inv_npb = TARGET_BINS / ts.astype(np.float64)
        self.npb_floor = ts // TARGET_BINS
        # log table: c = x with its mantissa cut to _LOG_BITS bits; T = log(c) - 1 (float32)
        lo = (127 + _LOG_E_LO) << _LOG_BITS
        hi = (127 + _LOG_E_HI) << _LOG_BITS
        c = (np.arange(lo, hi, dtype=np.uint32) << np.uint32(23 - _LOG_BITS)).view(_F32)
        self.log_base = np.uint32(lo)
        self.log_table = (np.log(c.astype(np.float64)) - 1.0).astype(_F32)
        self.log_max = float(max(-_LOG_E_LO, _LOG_E_HI) * np.log(2.0))

    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (
                self.ts,
                *(a for c in self.chunks for a in c[2:]),
                self.nfull_err,
                self.inv_npb,
                self.npb_floor,
                self.log_table,
            )
        )


#: The screen's logs from the 10-bit table (True) or numpy's float64 log (False: measured 17 %
#: faster on numpy 2 with AVX-512, and its error bound is tighter, so fewer candidates go on).
_TABLE_LOG = False
_CHUNK = 128  # candidates per pass: keeps every temporary small and reused


class _Work:
    """Preallocated buffers for one chunk (about 1 MB, bin x candidate): no large temporaries.

    The table log (``_TABLE_LOG``) allocates its own.
    """

    def __init__(self) -> None:
        r, b = _CHUNK, TARGET_BINS
        self.ha = np.empty((b + 1, r))
        self.hf = np.empty((b + 1, r))
        self.cdf = np.empty((b + 1, r))
        self.lt64 = np.empty((2 * b - 1, r))
        self.wt = np.empty((b, r))

    def nbytes(self) -> int:
        return sum(a.nbytes for a in vars(self).values())


@lru_cache(maxsize=1)
def _screen_layout() -> _Screen:
    return _Screen()


def _table_log(x: np.ndarray, s: _Screen) -> np.ndarray:
    """log of positive float32 x in [2**-15, 2**9): T[c] + x/c with c = x cut to 10 bits.

    log x = log c + log(x/c) and 0 <= (x/c - 1) - log(x/c) <= (x/c - 1)**2 / 2 <= 2**-21;
    with the float32 roundings of T, x/c and the sum the error is <= _table_log_error().
    """
    bits = x.view(np.uint32)
    u = np.right_shift(bits, np.uint32(23 - _LOG_BITS))
    u -= s.log_base
    out = s.log_table.take(u.astype(np.intp))
    c = np.bitwise_and(bits, np.uint32((0xFFFFFFFF << (23 - _LOG_BITS)) & 0xFFFFFFFF), out=u)
    q = np.divide(x, c.view(_F32))
    out += q
    return out


def _table_log_error(s: _Screen) -> float:
    """Bound of |_table_log(x) - log x| on the table's domain (see _table_log)."""
    lmax = s.log_max + 1.0
    return 2.0**-21 + _u32 * (lmax + 1.0) + 1.01 * _u32 + _u32 * (lmax + 2.0**-20)


def _screen(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, bound) for every t = 128..2047: ``|ncnn's float32 KL - value| <= bound``.

    See the module docstring for the derivation of the bound.
    """
    s = _screen_layout()
    ts = s.ts
    h64 = h.astype(np.float64)
    hmax = float(h64.max())
    csum = np.cumsum(h64)
    htot = float(csum[-1])
    cum = np.zeros(NUM_BINS + 2)  # cum[k] = H[k] = sum_{i<k} h_i, k = 0..2049 (H[2049] = H[2048])
    cum[1 : NUM_BINS + 1] = csum
    cum[NUM_BINS + 1] = htot
    # the loop works on p = eps + h: cum_p[k] = H[k] + k*eps.  The p-mass in [0, b_j) is then
    # cdf_j + b_j*eps, so a Q-bin's p-mass is qs_j + npb*eps and e_j = (that) / npb, and the
    # full bins' weights are differences of cum_p (their eps included)
    pz = np.zeros(NUM_BINS + 1)
    np.add(h64, _EPS64, out=pz[:NUM_BINS])
    cum_p = np.zeros(NUM_BINS + 1)
    np.cumsum(pz[:NUM_BINS], out=cum_p[1:])
    p_last = pz[ts - 1]
    dot = np.empty(ts.size)
    max_qp = np.empty(ts.size)
    e127 = np.empty(ts.size)
    w = _Work()  # per call (uninitialised, ~1 MB): calls in several threads share nothing
    emax = _EPS64 + hmax  # every e and slot E is <= eps + max h
    use_table = _TABLE_LOG and emax < 2.0 ** (_LOG_E_HI - 1)
    lmax = max(-np.log(_EPS64), float(np.log(emax)))
    for r0, r1, fl, fr in s.chunks:  # arrays are (bin j, candidate)
        n = r1 - r0
        ha = cum_p.take(fl, out=w.ha[:, :n])  # H[F_j] + F_j eps
        pf = pz.take(fl, out=w.hf[:, :n])  # p[F_j]
        cdf = np.multiply(fr, pf, out=w.cdf[:, :n])
        cdf += ha  # p-mass in [0, b_j)
        lt64 = w.lt64[:, :n]  # E of the Q-bins, then of the slots; their logs in place below
        e64 = np.subtract(cdf[1:], cdf[:-1], out=lt64[:TARGET_BINS])  # p-mass of Q-bin j
        e64.max(axis=0, out=max_qp[r0:r1])
        e64 *= s.inv_npb[r0:r1]
        e127[r0:r1] = e64[-1]
        est = np.subtract(e64[:-1], e64[1:], out=lt64[TARGET_BINS:])
        est *= fr[1:TARGET_BINS]
        est += e64[1:]
        # weights: full bins of Q-bin j (cum_p[F_{j+1}] - cum_p[F_j + 1]), then slots p[F_j]
        wf = np.subtract(ha[1:], ha[:-1], out=w.wt[:, :n])
        wf -= pf[:-1]
        wf[0] += pz[0]
        wf[-1] -= p_last[r0:r1]
        if use_table:
            lt64[...] = _table_log(lt64.astype(_F32), s)
        else:  # float64 log of E (the bound allows for E rounded to float32 as well)
            np.log(lt64, out=lt64)
        lt64[:TARGET_BINS] *= wf
        lt64[TARGET_BINS:] *= pf[1:TARGET_BINS]
        lt64.sum(axis=0, out=dot[r0:r1])  # 255 terms: within the bound's 300 u64 sum |w log e|
    lam = _table_log_error(s) if use_table else 16.0 * _u64 * (lmax + 1.0)

    p = _EPS64 + h64
    plogp = p * np.log(p)
    fpre = np.concatenate([[0.0], np.cumsum(plogp)])
    fabs = float(np.abs(plogp).sum())
    p_tail = _EPS64 + (htot - cum[ts - 1])
    log_e127 = np.log(e127)
    t_tail = p_tail * (np.log(p_tail) - log_e127)
    value = fpre[ts - 1] - dot + t_tail

    # ---- screening arithmetic error (float64 prefix sums, float32 logs) --------------------
    tf = ts.astype(np.float64)
    sw = (tf - 1.0) * _EPS64 + cum[ts - 1]  # sum_{k<t-1} p_k = sum of all weights
    # |error| of a mass from prefix sums (of h, or of p = eps + h: <= htot + 2048 eps)
    d_cdf = 4.0 * (NUM_BINS + 2) * _u64 * max(htot + NUM_BINS * _EPS64, 1.0)
    max_qs = max_qp - (tf * (1.0 - 1e-9) / TARGET_BINS) * _EPS64 + 2.0 * d_cdf
    lam_total = lam + 1.01 * (_u32 + 1000.0 * _u64 + 2.0 * d_cdf / _EPS64)
    w_err = 2 * TARGET_BINS * (2.0 * d_cdf + 4.0 * _u64 * (s.nfull_err + 1.0) * _EPS64)
    b_screen = (
        lam_total * sw
        + w_err * (lmax + lam_total)
        + 300.0 * _u64 * (sw + w_err) * (lmax + lam_total)
        + 2.0 * (NUM_BINS + 8) * _u64 * fabs
        + 16.0 * _u64 * (np.abs(p_tail * np.log(p_tail)) + p_tail * np.abs(log_e127))
        + p_tail * 2.0 * d_cdf / _EPS64
    )

    # ---- ncnn's float32 arithmetic against the real KL -------------------------------------
    nz = np.concatenate([[0], np.cumsum(h != 0)])
    nnz_tail = nz[NUM_BINS] - nz[ts]  # nonzero h_k, k >= t: roundings of the tail sum
    a_e = _gamma(s.npb_floor + 6.0)  # E: Q's <= floor(npb)+2 terms, product, sums, division
    b_c = _c_bound(tf, value, b_screen, a_e, nnz_tail, sw, cum[ts], max_qs + d_cdf, p_tail, t_tail)
    bound = (b_screen + b_c) * (1.0 + 1e-3) + 1e-30

    # t = 128: npb = 1, so E[k] = P[k] for k < 127 and logf(1) = 0: one term, no rounded sum
    pt0 = _EPS64 + (htot - cum[127])
    v0 = pt0 * (np.log(pt0) - np.log(_EPS64 + h64[127]))
    a_pt0 = _gamma(1.0 + float(nz[NUM_BINS] - nz[128]))
    k0 = (1.0 + a_pt0) * (1.0 + _u32) * (1.0 + 2.0 * _u32)
    l0 = -np.log1p(-a_pt0) - 2.0 * np.log1p(-_u32)
    b0 = (abs(v0) * (k0 - 1.0) + pt0 * k0 * l0 + 64.0 * _u64 * (abs(v0) + pt0 * 10.0)) * 1.01
    return np.concatenate([[v0], value]), np.concatenate([[b0], bound])


def _c_bound(
    tf: np.ndarray,
    value: np.ndarray,
    b_screen: np.ndarray,
    a_e: np.ndarray | float,
    nnz_tail: np.ndarray,
    sw: np.ndarray,
    mass_t: np.ndarray,
    max_qs: np.ndarray,
    p_tail: np.ndarray,
    t_tail: np.ndarray,
) -> np.ndarray:
    """Bound of |ncnn's float32 KL - real KL| (module docstring, "The bound")."""
    u = _u32

    def coeffs(a_p: np.ndarray | float) -> tuple[np.ndarray | float, np.ndarray | float]:
        k = (1.0 + a_p) * (1.0 + u) * (1.0 + 2.0 * u)
        ell = -np.log1p(-a_p) - np.log1p(-u) - np.log1p(-a_e)
        return k - 1.0, k * ell

    c_t, c_p = coeffs(u)
    c_tt, c_pt = coeffs(_gamma(1.0 + nnz_tail))
    kl_abs = np.abs(value) + b_screen
    s_abs = kl_abs + 2.0 * mass_t * (1.0 + 1e-9)  # sum |terms| <= |KL| + 2 * mass below t
    d_t = c_t * s_abs + c_p * sw + c_tt * (np.abs(t_tail) + b_screen) + c_pt * p_tail
    partial = kl_abs + max_qs + d_t + _gamma(tf) * (s_abs + d_t)  # >= every |partial sum|
    return d_t + u * (tf - 1.0) * partial


def _blocks() -> list[_Block]:
    """The exact layout of all candidates (about 40 MB): built per call, never cached."""
    return [
        _Block(np.arange(lo, min(lo + _ROW_BLOCK, NUM_BINS), dtype=np.int64))
        for lo in range(TARGET_BINS, NUM_BINS, _ROW_BLOCK)
    ]


def kl_divergences(counts: np.ndarray, *, exact: bool = True) -> np.ndarray:
    """The KL of every candidate threshold 128..2047 (index ``t - 128``).

    ``exact=True``: float32, bit-identical to ncnn2table's ``kl_divergence`` values (slow).
    ``exact=False``: the float64 screening values (within :func:`screen_bounds` of them).
    """
    h = normalize(counts)
    if exact:
        return np.concatenate([_kl_exact(h, g) for g in _blocks()])
    return _screen(h)[0]


def screen_bounds(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(screening value, bound) per candidate: ``|exact float32 KL - value| <= bound``."""
    return _screen(normalize(counts))


def refine_bounds(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(second-stage value, bound) per candidate: ``|exact float32 KL - value| <= bound``."""
    h = normalize(counts)
    parts = []
    for g in _blocks():
        p, e, tail = _distributions(h, g)
        parts.append(_refine(p, e, tail, g.ts))
    return np.concatenate([v for v, _ in parts]), np.concatenate([b for _, b in parts])


def kl_best_bin(counts: np.ndarray) -> int:
    """The ``target_threshold`` ncnn2table picks for a 2048-bin histogram.

    An all-zero histogram gives 128 (every KL is NaN, so nothing beats ``FLT_MAX``), exactly
    like ncnn2table; :func:`edgecal.calib.scales.blob_scale` turns that case into a warning.
    """
    h = normalize(counts)
    if not np.isfinite(h).all():
        return TARGET_BINS
    value, bound = _screen(h)
    ts = np.arange(TARGET_BINS, NUM_BINS, dtype=np.int64)
    finite = np.isfinite(value) & np.isfinite(bound)
    if not finite.all():  # cannot happen for finite h; stay exact regardless
        cand = ts
    else:
        upper = float(np.min(value + bound))
        cand = ts[value - bound <= upper]  # every other t is provably strictly worse
    _last_candidates[:] = [int(cand.size), int(cand.size)]
    if cand.size == 1:  # the only t that can be minimal: strictly below all others
        return int(cand[0])
    if cand.size > _PROBE:
        # the second stage on the few lowest screened values first: its lowest upper end prunes
        # the others by their screened lower ends (lower > upper2: strictly worse than a probe)
        at = cand - TARGET_BINS
        probe = np.sort(cand[np.argsort(value[at], kind="stable")[:_PROBE]])
        blocks = _second_stage(h, probe)
        upper2 = min(float(np.min(b[4] + b[5])) for b in blocks)
        rest = cand[(value[at] - bound[at] <= upper2) & ~np.isin(cand, probe)]
        blocks += _second_stage(h, rest)
    else:
        blocks = _second_stage(h, cand)
    upper2 = min(float(np.min(b[4] + b[5])) for b in blocks)
    keep = [(b, b[4] - b[5] <= upper2) for b in blocks]
    left = int(sum(int(k.sum()) for _, k in keep))
    _last_candidates[1] = left
    if left == 1:
        return int(next(b[0][k][0] for b, k in keep if k.any()))
    ts_left = []
    exact = []
    for (ts_b, p, e, tail, _, _), k in keep:
        if k.any():
            ts_left.append(ts_b[k])
            exact.append(_exact_rows(p, e[k], tail[k], ts_b[k]))
    t_all = np.concatenate(ts_left)
    order = np.argsort(t_all, kind="stable")  # in t order: the first minimum wins
    best = TARGET_BINS
    best_kl = float(np.finfo(_F32).max)
    for t_val, v in zip(t_all[order].tolist(), np.concatenate(exact)[order].tolist(), strict=True):
        if v < best_kl:  # strict: the first minimum wins (NaN never wins)
            best_kl = v
            best = t_val
    return best


_PROBE = 8  # candidates the second stage sees first (kl_best_bin)


def _second_stage(h: np.ndarray, ts: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Per block of ``ts`` (increasing): (ts, P, E, tail, value, bound) of :func:`_refine`."""
    out: list[tuple[np.ndarray, ...]] = []
    for lo in range(0, ts.size, _ROW_BLOCK):
        g = _Block(ts[lo : lo + _ROW_BLOCK])
        p, e, tail = _distributions(h, g)
        out.append((g.ts, p, e, tail, *_refine(p, e, tail, g.ts)))
    return out


def threshold_from_bin(best_bin: int, absmax: float | np.float32) -> np.float32:
    """``(best + 0.5f) * absmax / 2048`` in float32, in that order."""
    return _F32(_F32(_F32(best_bin) + _F32(0.5)) * _F32(absmax)) / _F32(NUM_BINS)
