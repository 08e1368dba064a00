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

from typing import Any

import numpy as np

#: ncnn2table's ``num_histogram_bins``.
NUM_BINS = 2048

_F32_BINS = np.float32(NUM_BINS)
_F32_LAST = np.float32(NUM_BINS - 1)
_F32_INF = np.float32(np.inf)


def count_nonfinite(values: np.ndarray) -> tuple[int, int]:
    """``(NaN count, inf count)`` of ``values`` (any shape)."""
    arr = np.asarray(values, dtype=np.float32)
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    return n_nan, n_inf


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
    """``max |x|`` in float32 over ``values`` (already :func:`visited`, any shape); 0 when empty.

    NaN is ignored as ``std::max(absmax, fabs(nan))`` ignores it.  Two SIMD reductions
    (``max(v.max(), -v.min())``) and no temporary; the NaN-aware pass only runs when a NaN is
    there.
    """
    arr = np.asarray(values, dtype=np.float32)
    if arr.size == 0:
        return np.float32(0.0)
    hi = arr.max()
    if hi != hi:  # a NaN propagated: ignore NaNs the slow way
        return _abs_max_nan(arr)
    lo = arr.min()
    return np.float32(abs(max(hi, -lo)))  # abs: -0.0 -> 0.0


def _abs_max_nan(arr: np.ndarray) -> np.float32:
    m = np.fmax.reduce(np.abs(arr).reshape(-1))  # fmax ignores NaN like std::max(absmax, x)
    if np.isnan(m):
        return np.float32(0.0)
    return np.float32(m)


def _histogram_reference(values: np.ndarray, absmax: np.float32) -> np.ndarray:
    """The straightforward binning, for every case the fast path does not take (NaN, inf,
    values above ``absmax``, a tiny or non-finite ``absmax``)."""
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
    q = np.nan_to_num(q, nan=float(_F32_LAST))  # inf/inf: ncnn has UB; put it in the last bin
    idx = q.astype(np.intp)  # truncation toward zero, q >= 0
    return np.bincount(idx, minlength=NUM_BINS).astype(np.uint64)


#: The fast path divides by ``absmax / 2048`` instead of dividing by ``absmax`` and then
#: multiplying by 2048.  For ``absmax >= 2**-100`` (finite) that gives the same bin for every
#: ``|x| <= absmax``: ``absmax / 2048`` is exact (a normal float), and scaling a float32 quotient
#: by a power of two commutes with its rounding except where the quotient is subnormal -- then
#: both are far below 1 and land in bin 0.
_FAST_MIN_ABSMAX = np.float32(2.0**-100)

#: Floats staged per blob before one vectorised reduction: small blobs would otherwise pay
#: numpy's per-call cost several times per sample; 256 KiB stays in the L2 cache.
STAGE_FLOATS = 1 << 16

#: ``bincount`` runs this many interleaved sub-histograms (element ``i`` counts in copy
#: ``i % 4``): runs of equal indices (the zeros of a ReLU output) otherwise serialise on one
#: counter.
_LANES = 4
_WIDE = NUM_BINS + 1  # |x| == absmax gives index 2048, folded into 2047 at the end


class _Scratch:
    """Work buffers shared by the accumulators of one job (single-threaded): the int32 bin
    indices and the interleaving offsets, grown on demand, so the hot loop allocates little."""

    def __init__(self) -> None:
        self.i32: np.ndarray = np.empty(0, dtype=np.int32)
        self.lanes: np.ndarray = np.empty(0, dtype=np.int32)
        self.f32 = np.empty(0, dtype=np.float32)

    def indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.i32.size < n:
            size = max(n, STAGE_FLOATS)
            self.i32 = np.empty(size, dtype=np.int32)
            self.lanes = ((np.arange(size) % _LANES) * _WIDE).astype(np.int32)
        return self.i32[:n], self.lanes[:n]

    def floats(self, n: int) -> np.ndarray:
        if self.f32.size < n:
            self.f32 = np.empty(n, dtype=np.float32)
        return self.f32[:n]


class _Stage:
    """``|x|`` of successive arrays, packed into one float32 buffer until it is full."""

    def __init__(self, scratch: _Scratch, size: int) -> None:
        self.scratch = scratch
        self.buf = np.empty(size, dtype=np.float32)
        self.pos = 0

    def put(self, v: np.ndarray, flush: Any) -> None:
        n = v.size
        if self.pos + n > self.buf.size:
            self.drain(flush)
            if n > self.buf.size:  # a blob larger than the stage: on its own
                a = self.scratch.floats(n)
                np.abs(v, out=a.reshape(v.shape))
                flush(a)
                return
        a = self.buf[self.pos : self.pos + n]
        np.abs(v, out=a.reshape(v.shape))  # a contiguous slice: reshape is a view
        self.pos += n

    def drain(self, flush: Any) -> None:
        if self.pos:
            flush(self.buf[: self.pos])
            self.pos = 0


#: Blobs of at least this many floats are reduced in place by :class:`AbsMaxAccumulator`
#: (``max`` and ``min``, two reads) rather than staged (``|x|`` written, then read).
DIRECT_FLOATS = 2048


class AbsMaxAccumulator:
    """Pass 1 of one blob: ``max |x|`` over everything added (NaN ignored, 0 when empty),
    equal to ``max(abs_max(v) for v in added)``; one numpy call per :meth:`add`."""

    def __init__(self, scratch: _Scratch | None = None, stage: int = STAGE_FLOATS) -> None:
        self._value = np.float32(0.0)
        self._stage = _Stage(scratch if scratch is not None else _Scratch(), stage)
        #: a NaN or inf was added (read after :attr:`value`); the caller decides what it means
        self.nonfinite = False

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float32)
        if v.size == 0:
            return
        if v.size >= DIRECT_FLOATS:  # max and min of the values themselves: no |x| written
            hi = v.max()
            if hi != hi:  # a NaN propagated
                self.nonfinite = True
                m = _abs_max_nan(v)
            else:
                m = max(hi, -v.min())
                if not m < _F32_INF:
                    self.nonfinite = True
            if m > self._value:  # -0.0 never wins over the initial 0.0
                self._value = np.float32(m)
        else:
            self._stage.put(v, self._reduce)

    def _reduce(self, a: np.ndarray) -> None:
        m = a.max()
        if not m < _F32_INF:  # NaN or inf (one comparison on the fast path)
            self.nonfinite = True
            if m != m:  # NaN: ignore it as std::max(absmax, fabs(nan)) does
                m = _abs_max_nan(a)
        if m > self._value:
            self._value = np.float32(m)

    @property
    def value(self) -> np.float32:
        self._stage.drain(self._reduce)
        return self._value

    def merge(self, value: np.float32, nonfinite: bool) -> None:
        """Fold in another accumulator's :attr:`value` and :attr:`nonfinite` (``max`` and
        ``or``: the result is the one a single accumulator given both inputs would have)."""
        if value > self._value:
            self._value = np.float32(value)
        self.nonfinite = self.nonfinite or nonfinite


class HistogramAccumulator:
    """ncnn2table's pass-2 histogram of one blob, summed over any number of :meth:`add` calls.

    Bit-identical to :func:`histogram_counts` on the concatenation of the arrays added, at a
    fraction of its cost: ``|x|`` is staged (one numpy call per add), then per stage one
    check (``max |x| <= absmax``, which also catches NaN), ``|x| / (absmax/2048)`` in place,
    a truncating cast to int32 and one ``bincount`` (2049 bins: ``|x| == absmax`` gives 2048,
    folded into 2047 at the end).  Exact zeros land in bin 0 too; they are counted apart
    (``count_nonzero`` on the bits of ``|x|``: only +0.0 is all zeros) and removed at the end.
    Whatever the fast path cannot prove exact goes to :func:`_histogram_reference`.
    """

    def __init__(
        self, absmax: float | np.float32, scratch: _Scratch | None = None, stage: int = STAGE_FLOATS
    ) -> None:
        self.absmax = np.float32(absmax)
        self.fast = bool(np.isfinite(self.absmax)) and bool(self.absmax >= _FAST_MIN_ABSMAX)
        self.step = np.float32(self.absmax / _F32_BINS) if self.fast else np.float32(0.0)
        self.scratch = scratch if scratch is not None else _Scratch()
        self.wide: np.ndarray = np.zeros(_LANES * _WIDE, dtype=np.int64)
        self.zeros = 0
        self.slow = np.zeros(NUM_BINS, dtype=np.uint64)
        self._stage = _Stage(self.scratch, stage) if self.fast else None

    def merge(self, counts: np.ndarray) -> None:
        """Add another accumulator's :meth:`counts` (of the same ``absmax``): counts sum."""
        self.slow += np.asarray(counts, dtype=np.uint64)

    def add(self, values: np.ndarray) -> None:
        """Add the (already :func:`visited`, any shape, any strides) float32 ``values``."""
        v = np.asarray(values, dtype=np.float32)
        if v.size == 0:
            return
        if self._stage is None:
            self.slow += _histogram_reference(v, self.absmax)
        else:
            self._stage.put(v, self._bin)

    def _bin(self, a: np.ndarray) -> None:
        """Count the staged ``|x|`` (1-D, contiguous; overwritten)."""
        if not a.max() <= self.absmax:  # NaN or a value above absmax
            self.slow += _histogram_reference(a, self.absmax)
            return
        n = a.size
        self.zeros += n - int(np.count_nonzero(a.view(np.int32)))
        np.divide(a, self.step, out=a)  # 0 <= a <= 2048
        idx, lanes = self.scratch.indices(n)
        np.copyto(idx, a, casting="unsafe")  # truncation toward zero
        idx += lanes
        self.wide += np.bincount(idx, minlength=_LANES * _WIDE)

    def counts(self) -> np.ndarray:
        """The uint64 ``[2048]`` counts so far."""
        if self._stage is not None:
            self._stage.drain(self._bin)
        wide = self.wide.reshape(_LANES, _WIDE).sum(axis=0)
        c = wide[:NUM_BINS].copy()
        c[NUM_BINS - 1] += wide[NUM_BINS]
        c[0] -= self.zeros
        return c.astype(np.uint64) + self.slow


def histogram_counts(values: np.ndarray, absmax: float) -> np.ndarray:
    """ncnn2table's 2048-bin histogram of ``values`` (already :func:`visited`), uint64.

    ``absmax`` must be the global (all samples) float32 absmax of the blob.  Elements equal to
    zero are skipped; the bin index is ``min(int(float32(|x|) / absmax * 2048), 2047)``
    evaluated in float32 in exactly that order.
    """
    acc = HistogramAccumulator(absmax)
    acc.add(values)
    return acc.counts()


class AbsMaxSet:
    """Pass 1 of every blob of a job: one :class:`AbsMaxAccumulator` per blob, one scratch.

    ``state()`` is what another process sends back and :meth:`merge` folds in, so a job
    split between processes gives exactly the single-process values.
    """

    def __init__(self, n_blobs: int) -> None:
        scratch = _Scratch()
        self.accs = [AbsMaxAccumulator(scratch) for _ in range(n_blobs)]
        self._adders = [acc.add for acc in self.accs]

    def add(self, b: int, values: np.ndarray) -> None:
        self._adders[b](values)

    def state(self) -> tuple[list[float], list[bool]]:
        return [float(acc.value) for acc in self.accs], [acc.nonfinite for acc in self.accs]

    def merge(self, state: tuple[list[float], list[bool]]) -> None:
        for acc, value, bad in zip(self.accs, *state):
            acc.merge(np.float32(value), bad)


class HistogramSet:
    """Pass 2 of every blob of a job: one :class:`HistogramAccumulator` per blob (its pass-1
    ``absmax``), one scratch; ``state()`` / :meth:`merge` as :class:`AbsMaxSet`."""

    def __init__(self, ranges: list[np.float32]) -> None:
        scratch = _Scratch()
        self.accs = [HistogramAccumulator(r, scratch) for r in ranges]
        self._adders = [acc.add for acc in self.accs]

    def add(self, b: int, values: np.ndarray) -> None:
        self._adders[b](values)

    def state(self) -> list[np.ndarray]:
        return [acc.counts() for acc in self.accs]

    def merge(self, state: list[np.ndarray]) -> None:
        for acc, counts in zip(self.accs, state):
            acc.merge(counts)


# -- comparison with a reference model (validate's per-layer figures) ---------------------------
#: The order of :func:`pair_sums`' four sums.
PAIR_SUMS = ("ref_ref", "test_test", "ref_test", "err_err")


def pair_sums(ref: np.ndarray, test: np.ndarray, scale: float | None = None) -> np.ndarray:
    """``[sum ref^2, sum t^2, sum ref*t, sum (ref - t)^2]`` in float64 of two blobs of the same
    shape, ``t`` being ``test`` or, with ``scale``, its raw int8 codes as values
    (``codes / scale`` in float32, ncnn's dequantization of a requantized top): every
    per-layer figure of validate (cosine, SQNR) is made of these, so the blobs stay on the
    device."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    t32 = np.asarray(test, dtype=np.float32)
    if scale is not None:
        t32 = (t32 / np.float32(scale)).astype(np.float32)
    t = t32.astype(np.float64).ravel()
    d = r - t
    return np.array([dot(r, r), dot(t, t), dot(r, t), dot(d, d)], dtype=np.float64)


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` of two 1-D float64 arrays by numpy's pairwise summation
    (``np.add.reduce``), never BLAS: the same bits on every machine and in the native agent,
    and no BLAS thread pool spinning against ncnn's threads in the agent (which made every
    ``extract`` of the next forward 100x slower)."""
    return float(np.add.reduce(a * b))
