"""EQ's greedy scale search for one layer (spec 2.9, intended algorithm), on the device.

The search: for each weight scale ``j`` in order (channels, or groups of a depthwise/grouped
layer), then for the bottom scale, score each of the ``steps`` candidates by the similarity of
the one-layer int8 probe's output to the fp32 output, summed over the samples, with the
earlier rows already set to their choice; keep the first strict maximum above 0.

**The similarity** (edgecal's definition; it diverges from ncnn2table, whose EQ crashes since
2025, spec 2.9): the output is split into *units* -- the channels of a 3-D blob (the first
``w*h`` values of each, as ncnn reads them), the columns of a 2-D InnerProduct output, the
elements of a 1-D one.  Per unit, ``sum(ref * q)`` and ``sum(q * q)`` in float64 (the products
of two float32 are exact in float64), summed by ``np.add.reduce`` over the unit's contiguous row
(numpy's pairwise summation: the result depends on that row alone); per sample the unit terms
summed sequentially in unit order, ``cosine = dot / sqrt(ref_norm) / sqrt(q_norm)`` (NaN when
either norm is 0); the cosines summed sequentially over the samples in float64.  ncnn2table
accumulates the whole blob in float32.  No sum depends on how many units, samples or candidates
are computed at once (``tests/unit/test_eq_search_math.py``).

**Why the search needs only ``2 * steps + 3`` forwards per sample** (not
``(n_weight_scales + 1) * steps``): in an int8 Convolution, ConvolutionDepthWise or
InnerProduct, output unit ``c`` depends only on its own weights, its own weight scale, the
bottom scale and its bias (the integer accumulation is exact, the dequantization is per
element).  One forward of the probe with *every* weight scale at its ``k``-th candidate gives
every unit's output at candidate ``k``, bit for bit the output the per-candidate evaluation
(only row ``j`` changed) gives for row ``j``'s units.  The greedy search is then arithmetic on
the per-(candidate, sample, unit) terms: row ``j`` at candidate ``k`` sums row ``j``'s terms at
``k`` and every other unit's terms at its current choice.  The claim is checked on every layer:
two forwards of mixed scale vectors (one fixed pattern, and the final choice) must give exactly
the terms assembled from the per-candidate forwards; if not, or when the output units do not
split evenly into the weight scales, the layer is searched the literal way (one probe per
candidate and row).  The bottom scale changes every unit: its ``steps`` candidates are
``steps`` forwards, as before.

**The bottom scale's candidates are pruned exactly** (result form 2, ``EQ_RESULT``): a cosine is
at most 1, so a candidate whose first ``t`` of ``n`` per-sample cosines sum to ``p`` ends at most
at ``p + (n - t) * (1 + EQ_PRUNE_SLACK)``; when that bound is below the largest complete sum so
far (or below 0.0: a sum must be > 0 to be picked) the candidate can no longer be picked, and
its remaining samples are not forwarded.  A tie with the best is never pruned (the bound must be
strictly below), so the first strict maximum is the literal evaluation's.  The candidates are
tried nearest the starting scale first (a strong bound early); each row of ``sim`` holds the
complete sums and, for a pruned candidate, its partial sum, with ``counts`` (the artifact's
``sim_samples``) the samples each covers.  The host re-checks every bound
(``edgecal.calib.eq.pick_pruned``).  The weight rows are not pruned: one forward at candidate
``k`` serves every row, and a bound of 1 per sample is far weaker than what separates one row's
candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecal_agent.errors import JobError, ModelLoadError
from edgecal_agent.messages import EQ_PRUNE_SLACK, EQ_SIMILARITY

#: The similarity definition above, named in every ``eq_layer`` result.
SIMILARITY = EQ_SIMILARITY
#: Output values reduced at once (float64 products of this many values stay in a CPU cache).
CHUNK_VALUES = 65536


# -- the similarity (pure) -----------------------------------------------------------------------
def unit_rows(out: np.ndarray) -> np.ndarray:
    """``(units, values)`` of one fp32 layer output in pyncnn's layout, C-contiguous: channels
    of a 3-D blob, the first depth slice of each channel of a 4-D one, the columns of a 2-D
    blob, the elements of a 1-D one."""
    a = np.asarray(out, dtype=np.float32)
    if a.ndim == 4:
        a = a[:, 0]
    if a.ndim == 3:
        return np.ascontiguousarray(a.reshape(a.shape[0], -1))
    if a.ndim == 2:
        return np.ascontiguousarray(a.T)
    return np.ascontiguousarray(a.reshape(-1, 1))


def unit_rows_into(out: np.ndarray, dst: np.ndarray) -> None:
    """:func:`unit_rows` of ``out`` written into ``dst`` ``(units, values)`` (any float dtype,
    C-contiguous) in one pass: the same values, without the float32 copies."""
    a = np.asarray(out)
    if a.ndim == 4:
        a = a[:, 0]
    if a.ndim == 3:
        np.copyto(dst.reshape(a.shape), a)
    elif a.ndim == 2:
        np.copyto(dst, a.T)
    else:
        np.copyto(dst, a.reshape(-1, 1))


def seq_sum(x: np.ndarray) -> np.ndarray:
    """Sequential float64 sums along the last axis (``double acc = x[0]; acc += x[i]`` order,
    whatever the leading axes)."""
    return np.cumsum(x, axis=-1, dtype=np.float64)[..., -1]


def unit_terms(
    ref: np.ndarray, q: np.ndarray, scratch: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per unit ``sum(ref * q)`` and ``sum(q * q)`` in float64: ``ref`` (float32 or float64)
    and ``q`` (float32), C-contiguous, of shape ``(..., units, values)``; results
    ``(..., units)``.
    ``scratch``: an optional float64 buffer of shape ``(2, *q.shape)``.

    The products are exact (float32 x float32 in float64); each unit's values are summed by
    ``np.add.reduce`` over the contiguous last axis, numpy's pairwise summation of that row,
    which depends on the row alone, not on how many rows are reduced at once."""
    tmp = np.empty((2, *q.shape), dtype=np.float64) if scratch is None else scratch
    q64, prod = tmp[0], tmp[1]
    np.copyto(q64, q)
    return unit_terms64(ref, q64, prod)


def unit_terms64(
    ref: np.ndarray, q64: np.ndarray, prod: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unit_terms` of ``q64``, the float32 output already widened to float64;
    ``prod``: a float64 buffer of its shape."""
    np.multiply(ref, q64, out=prod)
    dot = np.add.reduce(prod, axis=-1)
    np.multiply(q64, q64, out=prod)
    return dot, np.add.reduce(prod, axis=-1)


def cosines(dot: np.ndarray, ref_norm: np.ndarray, q_norm: np.ndarray) -> np.ndarray:
    """``dot / sqrt(ref_norm) / sqrt(q_norm)`` per sample, NaN where a norm is not > 0."""
    ok = (ref_norm > 0.0) & (q_norm > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = dot / np.sqrt(ref_norm) / np.sqrt(q_norm)
    return np.where(ok, c, np.nan)


def cosine(dot: float, ref_norm: float, q_norm: float) -> float:
    """:func:`cosines` of one sample (the same float64 operations)."""
    if not (ref_norm > 0.0 and q_norm > 0.0):
        return math.nan
    return dot / math.sqrt(ref_norm) / math.sqrt(q_norm)


def similarity(dots: np.ndarray, qqs: np.ndarray, ref_norm: np.ndarray) -> np.ndarray:
    """Similarity sums from per-unit terms ``(..., samples, units)`` and the per-sample fp32
    norms ``(samples,)``: units summed in order, cosines summed over the samples in order."""
    return seq_sum(cosines(seq_sum(dots), ref_norm, seq_sum(qqs)))


def pick(sums: np.ndarray) -> int | None:
    """Index of the largest sum, strict ``>`` from 0.0: first wins, NaN never wins; ``None``
    when no sum is > 0 (the old scale stays)."""
    best: int | None = None
    best_val = 0.0
    for k, v in enumerate(np.asarray(sums, dtype=np.float64).tolist()):
        if best_val < v:
            best_val, best = v, k
    return best


# -- exact pruning (pure) ------------------------------------------------------------------------
def out_of_reach(partial: float, done: int, n: int, best: float) -> bool:
    """Whether a candidate whose first ``done`` of ``n`` per-sample cosines sum to ``partial``
    can no longer be picked against ``best`` (the largest complete sum so far, or 0.0): its sum
    is NaN, or even ``1 + EQ_PRUNE_SLACK`` for every remaining sample keeps it below ``best``."""
    return math.isnan(partial) or partial + (n - done) * (1.0 + EQ_PRUNE_SLACK) < best


def search_order(candidates: np.ndarray, start: float) -> list[int]:
    """The candidates' indices nearest ``start`` first (in float64; ties: the lower index)."""
    dist = np.abs(np.asarray(candidates, dtype=np.float64) - float(start))
    return [int(k) for k in np.argsort(dist, kind="stable")]


def pruned_row(
    order: Sequence[int], n: int, cosines_of: Callable[[int], Iterable[float]]
) -> tuple[np.ndarray, np.ndarray]:
    """One row's similarity sums, pruned exactly: candidates in ``order``, each summing the
    per-sample cosines ``cosines_of(k)`` yields (``n`` of them) sequentially until it is
    :func:`out_of_reach` of the best complete sum.  Returns the sums (partial for a pruned
    candidate) and the samples each covers; :func:`pick` of the complete sums is the pick of the
    full row."""
    sums = np.full(len(order), np.nan)
    counts: np.ndarray = np.zeros(len(order), dtype=np.int64)
    best = 0.0
    for k in order:
        acc, done = 0.0, 0
        for c in cosines_of(k):
            acc = c if done == 0 else acc + c
            done += 1
            if done < n and out_of_reach(acc, done, n, best):
                break
        sums[k], counts[k] = acc, done
        if done == n and acc > best:
            best = acc
    return sums, counts


def pick_complete(sums: np.ndarray, counts: np.ndarray, n: int) -> int | None:
    """:func:`pick` among the sums complete over ``n`` samples."""
    return pick(np.where(np.asarray(counts) == n, sums, np.nan))


def _substituted_totals(cur: np.ndarray, block: np.ndarray, a: int) -> np.ndarray:
    """Sequential unit sums ``(steps, samples)`` of ``cur`` ``(samples, units)`` with units
    ``a:a+width`` replaced by each of ``block`` ``(steps, samples, width)``: the value
    :func:`seq_sum` gives on each substituted row, one unit at a time for all rows at once."""
    steps, n_samples, width = block.shape
    if a > 0:
        acc = np.empty((steps, n_samples), dtype=np.float64)
        acc[:] = seq_sum(cur[:, :a])  # the partial sum a sequential pass reaches at unit a
        first = 0
    else:
        acc = block[:, :, 0].copy()
        first = 1
    for u in range(first, width):
        acc += block[:, :, u]
    for u in range(a + width, cur.shape[1]):
        acc += cur[:, u]
    return acc


def greedy_weights(
    dots: np.ndarray, qqs: np.ndarray, ref_norm: np.ndarray, n_rows: int
) -> tuple[np.ndarray, list[int | None], np.ndarray, np.ndarray]:
    """The weight rows of the search from per-candidate terms.

    ``dots``/``qqs``: ``(steps + 1, samples, units)``, the unit terms with every weight scale
    at candidate ``k`` (index ``steps``: the starting scales); row ``j`` owns units
    ``j*u:(j+1)*u``, ``u = units // n_rows``.  Returns the similarity sums ``(n_rows, steps)``,
    each row's pick (``None``: kept), and the unit terms ``(samples, units)`` of the final state.
    """
    steps = dots.shape[0] - 1
    per = dots.shape[2] // n_rows
    cur_d, cur_q = dots[steps].copy(), qqs[steps].copy()
    sim = np.empty((n_rows, steps), dtype=np.float64)
    picks: list[int | None] = []
    for j in range(n_rows):
        a, b = j * per, (j + 1) * per
        td = _substituted_totals(cur_d, dots[:steps, :, a:b], a)
        tq = _substituted_totals(cur_q, qqs[:steps, :, a:b], a)
        sim[j] = seq_sum(cosines(td, ref_norm, tq))
        k = pick(sim[j])
        if k is not None:
            cur_d[:, a:b] = dots[k, :, a:b]
            cur_q[:, a:b] = qqs[k, :, a:b]
        picks.append(k)
    return sim, picks, cur_d, cur_q


# -- the probe and the search (ncnn) -------------------------------------------------------------
class Probe:
    """The one-layer int8 probe net, rebuilt from memory for each scale vector."""

    def __init__(self, ncnn: Any, param_text: str, prefix: bytes, n_weight_scales: int) -> None:
        self.ncnn = ncnn
        self.param_text = param_text
        self.buf = bytearray(prefix) + bytearray(4 * (n_weight_scales + 1))
        self.scales = np.frombuffer(self.buf, dtype="<f4", offset=len(prefix))
        self.net: Any = None
        self.model_bytes = b""
        self.allocator = ncnn.UnlockedPoolAllocator()
        self.workspace = ncnn.PoolAllocator()
        self.input_name = ""
        self.output_name = ""

    def build(self) -> None:
        net = self.ncnn.Net()
        net.opt.use_packing_layout = False
        # one thread: int8 accumulation is exact integer arithmetic, so the thread split
        # cannot change results, and per-forward OpenMP start-up would dominate a tiny layer
        net.opt.num_threads = 1
        if net.load_param_mem(self.param_text) != 0:
            raise ModelLoadError("ncnn cannot parse the EQ probe .param")
        # load_model_mem may reference this memory: keep the bytes alive as long as the net
        model_bytes = bytes(self.buf)
        net.load_model_mem(model_bytes)
        ins, outs = list(net.input_names()), list(net.output_names())
        if len(ins) != 1 or len(outs) != 1:
            raise ModelLoadError(
                f"the EQ probe must have one input and one output, it has {ins} and {outs}"
            )
        # the extractors' allocators (set after loading: the weights are not taken from them);
        # light mode is ncnn's default
        net.opt.blob_allocator = self.allocator
        net.opt.workspace_allocator = self.workspace
        self.net, self.model_bytes = net, model_bytes  # old net dropped only now
        self.input_name, self.output_name = ins[0], outs[0]

    def forward(self, mat: Any) -> Any:
        """The probe's output Mat for input ``mat`` (read it before the next forward)."""
        ex = self.net.create_extractor()
        ex.input(self.input_name, mat)
        ret, out = ex.extract(self.output_name)
        del ex
        if ret != 0:
            raise JobError(f"the EQ probe forward failed (extract returned {ret})")
        return out


@dataclass
class EqOutcome:
    """``sim`` ``(n_weight_scales + 1, steps)`` and ``counts``, the samples each sum covers
    (fewer than all: a pruned candidate's partial sum); the chosen scales; the similarity sums
    with the starting and with the chosen scales; ``path``: "fast" or "literal"."""

    sim: np.ndarray
    counts: np.ndarray
    weight_scales: np.ndarray
    bottom_scale: np.float32
    sim_start: float
    sim_end: float
    path: str


class _NotIndependent(Exception):
    """A mixed scale vector's forward differs from the terms assembled per candidate."""


class EqSearch:
    """The search of one layer over the samples' probe inputs ``ins`` (ncnn Mats) and fp32
    outputs ``refs``."""

    def __init__(
        self, probe: Probe, ins: Sequence[Any], refs: Sequence[np.ndarray], tick: Callable[[], None]
    ) -> None:
        self.probe = probe
        self.ins = list(ins)
        self.shapes = [np.shape(r) for r in refs]
        # the fp32 outputs, once, in float64 (8 bytes a value, as the float32 list and stack
        # of the per-candidate search were)
        rows = [unit_rows(r) for r in refs]  # float32, C-contiguous
        self.chunk = 0
        if len({r.shape for r in rows}) == 1:
            # the same output shape for every sample (the usual case): the fp32 outputs in one
            # stack, the probe's outputs gathered and reduced a few samples at a time
            self.ref_stack: np.ndarray | None = np.empty((len(rows), *rows[0].shape))
            for i, r in enumerate(rows):
                self.ref_stack[i] = r
            rows = list(self.ref_stack)
            per_sample = max(rows[0].size, 1)
            self.chunk = max(1, min(len(rows), CHUNK_VALUES // per_sample))
            # the probe's outputs widened straight into float64, and the products
            self.chunk_scratch = np.empty((2, self.chunk, *rows[0].shape), dtype=np.float64)
        else:
            self.ref_stack = None
            rows = [r.astype(np.float64) for r in rows]
        self.refs = rows
        self.scratch: dict[tuple[int, ...], np.ndarray] = {}
        self.ref_norm = np.array([seq_sum(unit_terms(r, r)[1]) for r in rows])
        self.tick = tick

    def terms(self) -> tuple[np.ndarray, np.ndarray]:
        """Build the probe with its current scales and forward every sample: unit terms
        ``(samples, units)``."""
        self.probe.build()
        n = len(self.ins)
        units = self.refs[0].shape[0]
        dots = np.empty((n, units), dtype=np.float64)
        qqs = np.empty((n, units), dtype=np.float64)
        done = filled = 0
        for s, (mat, ref, shape) in enumerate(zip(self.ins, self.refs, self.shapes)):
            out = np.asarray(self.probe.forward(mat))
            if out.shape != shape or ref.shape[0] != units:
                raise JobError("the EQ probe output shape differs from the fp32 top blob")
            if self.ref_stack is not None:
                unit_rows_into(out, self.chunk_scratch[0, filled])  # before the next forward
                filled += 1
                if filled == self.chunk or s == n - 1:  # the float64 products stay in cache
                    end = done + filled
                    dots[done:end], qqs[done:end] = unit_terms64(
                        self.ref_stack[done:end],
                        self.chunk_scratch[0, :filled],
                        self.chunk_scratch[1, :filled],
                    )
                    done, filled = end, 0
                continue
            scratch = self.scratch.get(ref.shape)
            if scratch is None:
                scratch = self.scratch[ref.shape] = np.empty((2, *ref.shape), dtype=np.float64)
            dots[s], qqs[s] = unit_terms(ref, unit_rows(out), scratch)
        self.tick()
        return dots, qqs

    def sums(self) -> float:
        d, q = self.terms()
        return float(similarity(d, q, self.ref_norm))

    def _sample_terms(self, s: int, out: Any) -> tuple[np.ndarray, np.ndarray]:
        """Unit terms ``(units,)`` of sample ``s``'s probe output ``out``."""
        a = np.asarray(out)
        if a.shape != self.shapes[s]:
            raise JobError("the EQ probe output shape differs from the fp32 top blob")
        if self.ref_stack is not None:
            q64, prod = self.chunk_scratch[0, 0], self.chunk_scratch[1, 0]
            unit_rows_into(a, q64)
            return unit_terms64(self.ref_stack[s], q64, prod)
        ref = self.refs[s]
        scratch = self.scratch.get(ref.shape)
        if scratch is None:
            scratch = self.scratch[ref.shape] = np.empty((2, *ref.shape), dtype=np.float64)
        return unit_terms(ref, unit_rows(a), scratch)

    def cosine_stream(self) -> Iterator[float]:
        """Build the probe with its current scales, then forward the samples one at a time,
        each sample's cosine (:func:`cosines`) as it comes: a pruned candidate stops reading."""
        self.probe.build()
        for s, mat in enumerate(self.ins):
            dot, qq = self._sample_terms(s, self.probe.forward(mat))
            yield cosine(float(seq_sum(dot)), float(self.ref_norm[s]), float(seq_sum(qq)))

    def _bottom_row(
        self, ws: np.ndarray, candidates: np.ndarray, start: np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bottom scale's row, pruned exactly (:func:`pruned_row`), weight scales ``ws``."""

        def cosines_of(k: int) -> Iterator[float]:
            self._set(ws, candidates[k])
            self.tick()  # one pass of the progress per candidate, however far it goes
            yield from self.cosine_stream()

        return pruned_row(search_order(candidates, float(start)), len(self.ins), cosines_of)

    @staticmethod
    def passes(n_rows: int, steps: int, fast: bool) -> int:
        """Probe passes over the samples (the progress total)."""
        return 2 * steps + 3 if fast else n_rows * steps + 2

    def fast_possible(self, n_weight_scales: int) -> bool:
        units = self.refs[0].shape[0]
        return units % n_weight_scales == 0 and all(r.shape[0] == units for r in self.refs)

    def run(
        self, candidates: np.ndarray, weight_scales: np.ndarray, bottom_scale: np.float32
    ) -> EqOutcome:
        n_w = weight_scales.size
        if self.fast_possible(n_w):
            try:
                return self._fast(candidates, weight_scales, bottom_scale)
            except _NotIndependent:
                pass
        return self._literal(candidates, weight_scales, bottom_scale)

    def _set(self, ws: np.ndarray, bs: np.float32) -> None:
        self.probe.scales[:-1] = ws
        self.probe.scales[-1] = bs

    def _fast(
        self, candidates: np.ndarray, weight_scales: np.ndarray, bottom_scale: np.float32
    ) -> EqOutcome:
        n_w, steps = weight_scales.size, candidates.shape[1]
        units = self.refs[0].shape[0]
        per = units // n_w
        dots = np.empty((steps + 1, len(self.ins), units), dtype=np.float64)
        qqs = np.empty_like(dots)
        for k in range(steps + 1):
            self._set(candidates[:n_w, k] if k < steps else weight_scales, bottom_scale)
            dots[k], qqs[k] = self.terms()
        # the independence claim on a mixed scale vector
        pattern = [(37 * j + 11) % (steps + 1) for j in range(n_w)]
        mix = np.array(
            [candidates[j, p] if p < steps else weight_scales[j] for j, p in enumerate(pattern)],
            dtype=np.float32,
        )
        unit_pick: np.ndarray = np.repeat(np.array(pattern), per)
        self._check(mix, bottom_scale, dots, qqs, unit_pick)

        sim = np.empty(candidates.shape, dtype=np.float64)
        sim[:n_w], picks, cur_d, cur_q = greedy_weights(dots, qqs, self.ref_norm, n_w)
        chosen = np.array(
            [weight_scales[j] if p is None else candidates[j, p] for j, p in enumerate(picks)],
            dtype=np.float32,
        )
        self._set(chosen, bottom_scale)
        d, q = self.terms()
        if not (_same_bits(d, cur_d) and _same_bits(q, cur_q)):
            raise _NotIndependent
        sim_start = float(similarity(dots[steps], qqs[steps], self.ref_norm))
        sim_chosen_w = float(similarity(d, q, self.ref_norm))
        counts = np.full(candidates.shape, len(self.ins), dtype=np.int64)
        sim[n_w], counts[n_w] = self._bottom_row(chosen, candidates[n_w], bottom_scale)
        kb = pick_complete(sim[n_w], counts[n_w], len(self.ins))
        bs = bottom_scale if kb is None else candidates[n_w, kb]
        sim_end = sim_chosen_w if kb is None else float(sim[n_w, kb])
        return EqOutcome(sim, counts, chosen, np.float32(bs), sim_start, sim_end, "fast")

    def _check(
        self,
        ws: np.ndarray,
        bs: np.float32,
        dots: np.ndarray,
        qqs: np.ndarray,
        unit_pick: np.ndarray,
    ) -> None:
        self._set(ws, bs)
        d, q = self.terms()
        cols = np.arange(dots.shape[2])
        if not (
            _same_bits(d, dots[unit_pick, :, cols].T) and _same_bits(q, qqs[unit_pick, :, cols].T)
        ):
            raise _NotIndependent

    def _literal(
        self, candidates: np.ndarray, weight_scales: np.ndarray, bottom_scale: np.float32
    ) -> EqOutcome:
        """One probe per candidate and row (the per-candidate evaluation itself)."""
        n_w, steps = weight_scales.size, candidates.shape[1]
        sim = np.empty(candidates.shape, dtype=np.float64)
        scales = np.append(weight_scales, bottom_scale).astype(np.float32)
        counts = np.full(candidates.shape, len(self.ins), dtype=np.int64)
        self._set(scales[:n_w], scales[n_w])
        sim_start = self.sums()
        for j in range(n_w):
            for k in range(steps):
                self.probe.scales[j] = candidates[j, k]
                sim[j, k] = self.sums()
            kb = pick(sim[j])
            if kb is not None:
                scales[j] = candidates[j, kb]
            self.probe.scales[j] = scales[j]
        sim[n_w], counts[n_w] = self._bottom_row(scales[:n_w], candidates[n_w], bottom_scale)
        kb = pick_complete(sim[n_w], counts[n_w], len(self.ins))
        if kb is not None:
            scales[n_w] = candidates[n_w, kb]
        self._set(scales[:n_w], scales[n_w])
        sim_end = self.sums()
        return EqOutcome(
            sim, counts, scales[:n_w].copy(), np.float32(scales[n_w]), sim_start, sim_end, "literal"
        )


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (NaN included)."""
    a64 = np.ascontiguousarray(a, dtype=np.float64)
    b64 = np.ascontiguousarray(b, dtype=np.float64)
    return a64.shape == b64.shape and bool(np.array_equal(a64.view(np.uint64), b64.view(np.uint64)))
