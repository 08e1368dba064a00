"""Op handlers.  Each takes the job context and returns ``(result, artifacts)``.

Memory is bounded by one sample: samples are streamed from the shards, activations are reduced
to statistics at once and dropped.  Only ``eq_layer`` keeps (at most 50) in/out pairs of one
layer and their per-unit similarity terms for every candidate (:mod:`edgecal_agent.eqsearch`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import numpy as np

import edgecal_agent
from edgecal_agent import binworker, eqsearch, stats
from edgecal_agent.backend import NcnnModel, import_ncnn
from edgecal_agent.errors import (
    ArtifactMissing,
    BadRequest,
    BlobMismatch,
    InputCorrupt,
    InputError,
    JobError,
    ModelLoadError,
    NonFiniteActivation,
)
from edgecal_agent.fileio import fd_state, sha256_cached_at, sha256_fh
from edgecal_agent.messages import (
    EQ_RESULT,
    JOBS_DIR,
    Artifact,
    CaptureParams,
    EqLayerParams,
    InputDesc,
    ModelFiles,
    ProtocolViolation,
    Request,
    VariantRun,
    content_digest,
)
from edgecal_agent.npzio import ARTIFACT_SCHEMA, NpzWriter, load_npz, names_array
from edgecal_agent.shards import ShardInfo, iter_shard, read_shard_info
from edgecal_agent.workdir import (
    O_CLOEXEC,
    O_DIRECTORY,
    O_NOFOLLOW,
    Workdir,
    fd_path,
    open_file_at,
    split_relpath,
)

Progress = Callable[[int, int], None]

#: CPU features worth knowing for ncnn kernels, as /proc/cpuinfo spells them.
CPU_FEATURES = (
    "neon",
    "asimd",
    "asimdhp",
    "asimddp",
    "asimdrdm",
    "fphp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sse2",
    "sse4_1",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
)


@dataclass
class JobContext:
    """One job's view of the device: every file it names is reached through ``workdir``
    (never through a symlink, never outside the work directory)."""

    workdir: Workdir
    job_fd: int
    job_id: str
    request: Request
    progress: Progress
    timing_s: dict[str, float] = field(default_factory=dict)

    def open_input(self, rel: str, what: str = "input") -> IO[bytes]:
        """Workdir file ``rel``, open for reading; a pushed input (``files/<sha256>/<name>``)
        is checked against its sha256 first, and removed if it does not match (the name in its
        real folder is unlinked, only if it is still the file that was checked)."""
        want = content_digest(rel)
        with self.workdir.parent(rel, what) as (dfd, name):
            fh = open_file_at(dfd, name, rel, what)
            if want is None:
                return fh
            try:
                got = sha256_cached_at(dfd, name, fh)
                if got != want:
                    with contextlib.suppress(OSError):
                        if os.path.samestat(
                            os.stat(name, dir_fd=dfd, follow_symlinks=False), os.fstat(fh.fileno())
                        ):
                            os.unlink(name, dir_fd=dfd)
                    raise InputCorrupt(
                        f"{rel} on the device has sha256 {got}: a damaged upload "
                        "or disk; it was removed, push it again"
                    )
            except BaseException:
                fh.close()
                raise
            return fh

    def read_job_file(self, rel: str) -> bytes:
        """The bytes of job-relative file ``rel`` (a job input the host wrote)."""
        parts = split_relpath(rel, "job file")
        fd = os.open(".", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC, dir_fd=self.job_fd)
        try:
            for part in parts[:-1]:
                nfd = os.open(part, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nfd
            with open_file_at(fd, parts[-1], rel, "job file") as fh:
                return fh.read()
        except OSError as e:
            raise BadRequest(f"job file {rel} cannot be read: {e.strerror or e}") from None
        finally:
            os.close(fd)

    def writer(self, name: str) -> NpzWriter:
        """An npz artifact ``name`` of this job (a plain name in the job folder)."""
        if split_relpath(name, "artifact") != (name,):
            raise BadRequest(f"artifact {name!r} must be a plain file name")
        return NpzWriter(name, dir_fd=self.job_fd)

    def artifact(self, name: str) -> tuple[str, Artifact]:
        """Register a job-relative artifact file (call after it is written); a file that has
        vanished or was replaced by something else is ``ArtifactMissing``."""
        try:
            with open_file_at(self.job_fd, name, name, "artifact") as fh:
                digest = sha256_fh(fh)
        except BadRequest as e:
            raise ArtifactMissing(
                f"job {self.job_id}: artifact {name} it wrote is gone: {e}"
            ) from None
        return name, Artifact(file=name, sha256=digest)


Result = tuple[dict[str, Any], dict[str, Artifact]]


# -- hello ---------------------------------------------------------------------------------------
def cpu_features(cpuinfo: str) -> list[str]:
    """The interesting CPU features listed in ``/proc/cpuinfo`` text (x86 ``flags``, ARM
    ``Features``).  ``asimddp`` is ARM's dotprod."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(value.split())
    return [f for f in CPU_FEATURES if f in found]


def hello_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "agent_version": edgecal_agent.__version__,
        "protocol": edgecal_agent.PROTOCOL_VERSION,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "system": platform.system(),
        "cores": os.cpu_count() or 1,
        "agent_kind": "python",
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            info["cpu_features"] = cpu_features(fh.read())
    except OSError:
        info["cpu_features"] = []
    try:
        ncnn = import_ncnn()
    except JobError as e:
        info.update(ncnn=None, ncnn_ok=False, ncnn_error=str(e))
    else:
        info.update(ncnn=getattr(ncnn, "__version__", "unknown"), ncnn_ok=True)
        probes = {
            "arm_asimdhp": "cpu_support_arm_asimdhp",
            "arm_neon": "cpu_support_arm_neon",
            "x86_avx": "cpu_support_x86_avx",
            "x86_avx2": "cpu_support_x86_avx2",
        }
        info["ncnn_cpu"] = {
            k: bool(getattr(ncnn, f)()) for k, f in probes.items() if hasattr(ncnn, f)
        }
    return info


def op_hello(ctx: JobContext) -> Result:
    return hello_info(), {}


def op_sleep(ctx: JobContext) -> Result:
    time.sleep(ctx.request.params.seconds)
    return {"slept_s": ctx.request.params.seconds}, {}


# -- samples -------------------------------------------------------------------------------------
class SampleStream:
    """The samples of several shards, one at a time, checked against the request's inputs."""

    def __init__(self, ctx: JobContext, shards: Sequence[str], inputs: Sequence[InputDesc]):
        self.ctx = ctx
        self.inputs = tuple(inputs)
        self.shards = tuple(shards)
        self.infos: list[ShardInfo] = []
        for rel in self.shards:
            with self._open(rel) as fh:
                try:
                    info = read_shard_info(fh, rel)
                except (ProtocolViolation, OSError, ValueError) as e:
                    raise BadRequest(f"sample shard {rel} is unreadable: {e}") from e
            if info.inputs != self.inputs:
                raise BadRequest(
                    f"sample shard {rel} was written for inputs "
                    f"{[d.to_dict() for d in info.inputs]}, the request names "
                    f"{[d.to_dict() for d in self.inputs]}"
                )
            self.infos.append(info)
        self.total = sum(i.n_samples for i in self.infos)

    def _open(self, rel: str) -> IO[bytes]:
        try:
            return self.ctx.open_input(rel, "sample shard")
        except InputCorrupt:
            raise
        except BadRequest as e:
            raise BadRequest(
                f"sample shard {rel} is not on the device (push it first): {e}"
            ) from None

    def __iter__(self) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
        index = 0
        for rel, info in zip(self.shards, self.infos):
            with self._open(rel) as fh:
                try:
                    for sample in iter_shard(fh, info, rel):
                        yield index, sample
                        index += 1
                except (KeyError, ProtocolViolation) as e:
                    raise InputError(f"shard {rel} is damaged: {e}") from None


#: The last loaded model, reused by the next job of a serving agent that names the same
#: files (same identity: path, inode, size, mtime, ctime) with the same options -- e.g. the
#: per-shard abs-max jobs and the histogram job of one calibration.  One model at most.
_MODEL_CACHE: dict[tuple[Any, ...], NcnnModel] = {}


def _load_model(
    ctx: JobContext, p: CaptureParams | EqLayerParams, runtime: str, threads: int
) -> NcnnModel:
    t0 = time.perf_counter()
    model = _open_model(ctx, p.model, runtime, threads, cache=True)
    model.check_inputs(p.inputs)
    ctx.timing_s["load"] = time.perf_counter() - t0
    return model


def _open_model(
    ctx: JobContext, files: ModelFiles, runtime: str, threads: int, *, cache: bool
) -> NcnnModel:
    """The net of ``files`` (``cache``: the one :data:`_MODEL_CACHE` keeps, loaded only when
    the files or options changed)."""
    with _model_file(ctx, files.param) as fh_param, _model_file(ctx, files.bin) as fh_bin:
        key: tuple[Any, ...] = (fd_state(fh_param), fd_state(fh_bin), runtime, threads)
        model = _MODEL_CACHE.get(key) if cache else None
        if model is None:
            if cache:
                _MODEL_CACHE.clear()  # drop the old net before loading another
            # ncnn opens paths: it gets the files already opened (and checked), by descriptor
            param = fd_path(fh_param.fileno()) or os.path.join(ctx.workdir.path, files.param)
            bin_ = fd_path(fh_bin.fileno()) or os.path.join(ctx.workdir.path, files.bin)
            model = NcnnModel(
                param, bin_, runtime=runtime, threads=threads, labels=(files.param, files.bin)
            )
            if cache:
                _MODEL_CACHE[key] = model
    return model


def _model_file(ctx: JobContext, rel: str) -> IO[bytes]:
    try:
        return ctx.open_input(rel, "model file")
    except InputCorrupt:
        raise
    except BadRequest as e:
        raise ModelLoadError(f"model file {rel} is not usable on the device: {e}") from None


class _Throttle:
    """Report progress at most every ``interval_s`` (and always at the end)."""

    def __init__(self, progress: Progress, total: int, interval_s: float = 0.25) -> None:
        self.progress, self.total, self.interval_s = progress, total, interval_s
        self.last = time.monotonic()
        progress(0, total)

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if done >= self.total or now - self.last >= self.interval_s:
            self.last = now
            self.progress(done, self.total)


# -- absmax / histogram / run --------------------------------------------------------------------
def op_absmax(ctx: JobContext) -> Result:
    p: CaptureParams = ctx.request.params
    model = _load_model(ctx, p, p.runtime, p.threads)
    model.check_blobs(p.blobs)
    samples = SampleStream(ctx, p.shards, p.inputs)
    n_blobs = len(p.blobs)
    accs = stats.AbsMaxSet(n_blobs)
    per_sample = [0] * n_blobs

    def seen(b: int, n: int) -> None:
        per_sample[b] = n  # c * w * h of the last sample, as ncnn2table

    # NaN never wins, as std::max(absmax, fabs(x)) in ncnn2table.  No worker process: the
    # in-place max/min costs less than copying the blobs out to one.
    _run_stats(ctx, model, samples, p, accs, None, seen)
    absmax = [acc.value for acc in accs.accs]
    bad = [b for b, acc in enumerate(accs.accs) if acc.nonfinite]
    if bad:
        _raise_nonfinite(ctx, model, samples, p, bad)
    name = "absmax.npz"
    with ctx.writer(name) as w:
        w.add("schema", np.int64(ARTIFACT_SCHEMA))
        w.add("names", names_array(p.blobs))
        w.add("absmax", np.array(absmax, dtype=np.float32).reshape(n_blobs))
        w.add("elements_per_sample", np.array(per_sample, dtype=np.int64))
        w.add("n_samples", np.int64(samples.total))
    return {"n_samples": samples.total}, dict([ctx.artifact(name)])


#: At most this many (sample, blob) entries are named in a NonFiniteActivation error.
NONFINITE_REPORT_MAX = 1000


def _raise_nonfinite(
    ctx: JobContext, model: NcnnModel, samples: SampleStream, p: CaptureParams, bad: Sequence[int]
) -> None:
    """Blobs ``bad`` held NaN or inf: run the samples again for those blobs only, count per
    sample and blob, and fail the job naming them (the fast pass only knows *that* it happened).

    ncnn2table takes ``inf`` as the abs-max (scale 0) and a NaN sample's activations vanish
    from the statistics; neither gives a usable scale, so the job fails instead.
    """
    names = [p.blobs[b] for b in bad]
    found: list[list[Any]] = []
    totals = {n: [0, 0] for n in names}
    current = [0]

    def count(b: int, values: np.ndarray) -> None:
        n_nan, n_inf = stats.count_nonfinite(values)
        if n_nan or n_inf:
            totals[names[b]][0] += n_nan
            totals[names[b]][1] += n_inf
            if len(found) < NONFINITE_REPORT_MAX:
                found.append([current[0], names[b], n_nan, n_inf])

    for i, sample in samples:
        current[0] = i
        model.for_each_visited(sample, p.inputs, names, count, f"sample {i}")
    per_blob = "; ".join(
        f"blob {n!r}: {t[0]} NaN, {t[1]} inf on "
        f"{len({s for s, m, _, _ in found if m == n})} sample(s)"
        for n, t in totals.items()
    )
    first = found[0] if found else None
    raise NonFiniteActivation(
        f"non-finite activations ({per_blob})"
        + (f"; first: sample {first[0]} of the job, blob {first[1]!r}" if first else ""),
        {"samples": found, "totals": {n: t for n, t in totals.items()}},
    )


def op_histogram(ctx: JobContext) -> Result:
    p: CaptureParams = ctx.request.params
    if p.absmax is None:
        raise BadRequest("histogram request lacks params.absmax")
    missing = [b for b in p.blobs if b not in p.absmax]
    if missing:
        raise BadRequest(f"histogram request lacks absmax for blob(s) {missing}")
    ranges = [np.float32(p.absmax[b]) for b in p.blobs]
    model = _load_model(ctx, p, p.runtime, p.threads)
    model.check_blobs(p.blobs)
    samples = SampleStream(ctx, p.shards, p.inputs)
    accs = stats.HistogramSet(ranges)
    _run_stats(ctx, model, samples, p, accs, lambda: stats.HistogramSet(ranges))
    counts = np.stack(accs.state()) if p.blobs else np.zeros((0, stats.NUM_BINS), dtype=np.uint64)
    name = "histograms.npz"
    with ctx.writer(name) as w:
        w.add("schema", np.int64(ARTIFACT_SCHEMA))
        w.add("names", names_array(p.blobs))
        w.add("absmax", np.array(ranges, dtype=np.float32).reshape(len(p.blobs)))
        w.add("counts", counts.astype(np.uint64))
        w.add("n_samples", np.int64(samples.total))
    return {"n_samples": samples.total}, dict([ctx.artifact(name)])


def _run_stats(
    ctx: JobContext,
    model: NcnnModel,
    samples: SampleStream,
    p: CaptureParams,
    reducer: binworker.Reducer,
    make: Callable[[], binworker.Reducer] | None,
    seen: Callable[[int, int], None] | None = None,
) -> None:
    """Every sample through the net; ``reducer`` gets each blob's visited elements (memory:
    one sample's activations, whatever the number of samples) and ``seen(b, n)`` their count.

    With ``make``, a spare core and enough samples, a forked :class:`binworker.BinWorker` (its own
    reducer from ``make``) reduces whichever samples it has room for while this process runs
    the next forward; its state is merged into ``reducer`` at the end (exactly the same
    statistics: max and sums)."""
    tick = _Throttle(ctx.progress, samples.total)
    inputs, blobs = p.inputs, p.blobs
    visit = model.for_each_visited
    add = reducer.add
    sizes = [0]

    def inline(b: int, values: np.ndarray) -> None:
        add(b, values)
        if seen is not None:
            seen(b, values.size)
        sizes[0] += values.size

    t0 = time.perf_counter()
    it = iter(samples)
    worker: binworker.BinWorker | None = None
    with contextlib.ExitStack() as stack:
        clock = binworker.CpuShare()
        for i, sample in it:  # the first samples here: their size, and whether a core is free
            visit(sample, inputs, blobs, inline, f"sample {i}")
            tick(i + 1)
            if i + 1 < binworker.WARMUP_SAMPLES:
                continue
            if (
                make is not None
                and samples.total - i - 1 >= binworker.MIN_SAMPLES
                and clock.alone()
                and binworker.spare_core(1 if p.runtime == "calibration" else p.threads)
            ):
                floats = int(sizes[0] / (i + 1) * binworker.SLOT_MARGIN) + 1024
                worker = stack.enter_context(binworker.BinWorker(make, floats))
            break
        if worker is not None:
            _run_overlapped(worker, it, visit, inputs, blobs, inline, seen, tick)
            reducer.merge(worker.finish())
        else:
            for i, sample in it:
                visit(sample, inputs, blobs, inline, f"sample {i}")
                tick(i + 1)
    ctx.timing_s["infer"] = time.perf_counter() - t0


def _run_overlapped(
    worker: binworker.BinWorker,
    it: Iterator[tuple[int, tuple[np.ndarray, ...]]],
    visit: Callable[..., None],
    inputs: Sequence[InputDesc],
    blobs: Sequence[str],
    inline: Callable[[int, np.ndarray], None],
    seen: Callable[[int, int], None] | None,
    tick: _Throttle,
) -> None:
    """The samples of ``it``: each into a free slot of ``worker`` (reduced there), or reduced
    here by ``inline`` when the worker holds every slot -- or for good once this process no
    longer has a core to itself (the worker then only competes with it)."""
    layout: list[tuple[int, int, int]] = []
    row = worker.slots[0]
    pos = [0]
    end = worker.floats
    copyto = np.copyto

    def put(b: int, values: np.ndarray) -> None:
        n = values.size
        at = pos[0]
        if at + n > end:  # larger than the first samples' blobs: reduce it here
            inline(b, values)
            return
        copyto(row[at : at + n].reshape(values.shape), values)
        layout.append((b, at, n))
        pos[0] = at + n
        if seen is not None:
            seen(b, n)

    clock = binworker.CpuShare()
    sharing = True
    for k, (i, sample) in enumerate(it, 1):
        slot = worker.take_slot() if sharing else None
        if slot is None:
            visit(sample, inputs, blobs, inline, f"sample {i}")
        else:
            row = worker.slots[slot]
            layout = []
            pos[0] = 0
            visit(sample, inputs, blobs, put, f"sample {i}")
            worker.give(slot, layout)
        tick(i + 1)
        if sharing and k % binworker.CHECK_SAMPLES == 0:
            sharing = clock.alone()
            clock = binworker.CpuShare()


def _outputs_header(w: NpzWriter, blobs: Sequence[str], n_samples: int) -> None:
    """The members every ``outputs_<k>.npz`` of a ``run`` starts with."""
    w.add("schema", np.int64(ARTIFACT_SCHEMA))
    w.add("names", names_array(blobs))
    w.add("n_samples", np.int64(n_samples))


def output_key(i: int, b: int) -> str:
    """Member of sample ``i`` (within its shard), blob ``b`` in a ``run`` output file."""
    return f"s{i:06d}_b{b}"


def op_run(ctx: JobContext) -> Result:
    """Outputs of ``blobs`` for every sample, one npz per shard (``outputs_<k>.npz``); with
    ``compare``, the per-pair sums against the reference model too (``layers_<k>.npz``)."""
    p: CaptureParams = ctx.request.params
    model = _load_model(ctx, p, p.runtime, p.threads)
    model.check_blobs(p.blobs)
    if p.variants is not None:
        return _run_variants(ctx, p, model)
    ref: NcnnModel | None = None
    if p.compare is not None:
        ref = _open_model(ctx, p.compare.model, p.runtime, p.threads, cache=False)
        ref.check_inputs(p.inputs)
        pair_blobs = [b for b, _ in p.compare.pairs]
        model.check_blobs(pair_blobs)
        ref.check_blobs(pair_blobs)
    artifacts: dict[str, Artifact] = {}
    total = 0
    done = 0
    streams = [SampleStream(ctx, [s], p.inputs) for s in p.shards]
    tick = _Throttle(ctx.progress, sum(s.total for s in streams))
    latency: list[float] = []
    t0 = time.perf_counter()
    for k, samples in enumerate(streams):
        name = f"outputs_{k}.npz"
        with ctx.writer(name) as w:
            _outputs_header(w, p.blobs, samples.total)
            for i, sample in samples:
                only = None
                if p.timed and p.blobs:
                    # one blob: the timed forward's own output is the answer (one forward)
                    secs, only = model.time_extract(
                        sample, p.inputs, p.blobs[0], f"sample {done}", keep=len(p.blobs) == 1
                    )
                    latency.append(secs)
                if only is not None:
                    w.add(output_key(i, 0), only)
                else:
                    for b, (_, mat) in enumerate(
                        model.extract(sample, p.inputs, p.blobs, f"sample {done}", light_mode=False)
                    ):
                        w.add(output_key(i, b), np.array(mat, dtype=np.float32))
                done += 1
                tick(done)
        artifacts.update([ctx.artifact(name)])
        if ref is not None:  # after the shard's timed forwards, which it must not disturb
            artifacts.update([_compare(ctx, model, ref, p, samples, k, total)])
        total += samples.total
    ctx.timing_s["infer"] = time.perf_counter() - t0
    result: dict[str, Any] = {"n_samples": total, "n_shards": len(streams)}
    if p.timed:
        result["latency_s"] = latency
    return result, artifacts


def variant_key(j: int, i: int, b: int) -> str:
    """Member of variant ``j``, sample ``i`` (within its shard), blob ``b`` in the output file
    of a ``run`` with ``variants``."""
    return f"v{j}_s{i:06d}_b{b}"


#: A patched ``.bin``'s pieces are copied this many bytes at a time.
PIECE_BLOCK = 1 << 20


def _variant_net(ctx: JobContext, p: CaptureParams, v: VariantRun, j: int) -> NcnnModel:
    """Variant ``j``'s net: from its pushed files, or with its ``.bin`` put together from the
    base's and the pushed piece (:class:`~edgecal_agent.messages.BinPatch`) in the job folder,
    checked against its digest, and removed once ncnn has read it."""
    if v.patch is None:
        assert v.bin is not None
        return _open_model(ctx, ModelFiles(v.param, v.bin), p.runtime, p.threads, cache=False)
    name = f"variant_{j}.bin"
    label = f"variant {j}'s .bin"
    made = f"{label} (made from {p.model.bin} and {v.patch.data})"
    digest = hashlib.sha256()
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600,
                 dir_fd=ctx.job_fd)  # fmt: skip
    out = os.fdopen(fd, "w+b")
    try:
        with _model_file(ctx, p.model.bin) as base, _model_file(ctx, v.patch.data) as data:
            for source, offset, length in v.patch.segments:
                fh, what = (base, p.model.bin) if source == 0 else (data, v.patch.data)
                size = os.fstat(fh.fileno()).st_size
                if offset > size or length > size - offset:
                    raise BadRequest(
                        f"{made}: a piece of {length} bytes at {offset} is past the end of {what}"
                    )
                fh.seek(offset)
                while length > 0:  # in blocks: a piece may be most of a large model
                    chunk = fh.read(min(length, PIECE_BLOCK))
                    if not chunk:  # the file shrank under us
                        raise BadRequest(f"{made}: {what} changed while it was read")
                    digest.update(chunk)
                    out.write(chunk)
                    length -= len(chunk)
        out.flush()
        if digest.hexdigest() != v.patch.sha256:
            raise BadRequest(
                f"{made} has sha256 {digest.hexdigest()}, the host expects {v.patch.sha256}"
            )
        with _model_file(ctx, v.param) as fh_param:
            param = fd_path(fh_param.fileno()) or os.path.join(ctx.workdir.path, v.param)
            bin_ = fd_path(out.fileno()) or os.path.join(
                ctx.workdir.path, JOBS_DIR, ctx.job_id, name
            )
            return NcnnModel(
                param, bin_, runtime=p.runtime, threads=p.threads, labels=(v.param, label)
            )
    finally:
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=ctx.job_fd)


def _run_variants(ctx: JobContext, p: CaptureParams, base: NcnnModel) -> Result:
    """``run`` with ``variants`` (:class:`~edgecal_agent.messages.VariantsParams`): per sample
    the base model once, every blob kept; each variant from the base's ``feed`` blobs."""
    assert p.variants is not None
    runs = p.variants.models
    t0 = time.perf_counter()
    nets: list[NcnnModel] = []
    for j, v in enumerate(runs):
        net = _variant_net(ctx, p, v, j)
        base.check_blobs(v.feed)
        net.check_blobs([*v.feed, *p.blobs])
        net.check_inputs(p.inputs)
        nets.append(net)
    ctx.timing_s["load"] = ctx.timing_s.get("load", 0.0) + time.perf_counter() - t0
    timed = p.variants.timed_samples
    latency: list[list[float]] = [[] for _ in runs]
    artifacts: dict[str, Artifact] = {}
    streams = [SampleStream(ctx, [s], p.inputs) for s in p.shards]
    tick = _Throttle(ctx.progress, sum(s.total for s in streams))
    done = 0
    t0 = time.perf_counter()
    for k, samples in enumerate(streams):
        name = f"outputs_{k}.npz"
        with ctx.writer(name) as w:
            _outputs_header(w, p.blobs, samples.total)
            w.add("n_variants", np.int64(len(runs)))
            for i, sample in samples:
                where = f"sample {done}"
                if done < timed:  # whole forwards, before the base's blobs take the memory
                    for j, net in enumerate(nets):
                        secs, _ = net.time_extract(sample, p.inputs, p.blobs[0], where)
                        latency[j].append(secs)
                with base.kept(sample, p.inputs, where) as ex:
                    raw: dict[str, Any] = {}
                    for j, (v, net) in enumerate(zip(runs, nets)):
                        fed = []
                        for blob in v.feed:
                            if blob not in raw:
                                raw[blob] = base.raw_blob(ex, blob, where)
                            fed.append((blob, raw[blob]))
                        for b, (_, mat) in enumerate(net.extract_fed(fed, p.blobs, where)):
                            w.add(variant_key(j, i, b), np.array(mat, dtype=np.float32))
                    del raw
                done += 1
                tick(done)
        artifacts.update([ctx.artifact(name)])
    ctx.timing_s["infer"] = time.perf_counter() - t0
    result: dict[str, Any] = {"n_samples": done, "n_shards": len(streams)}
    if timed:
        result["latency_s"] = latency
    return result, artifacts


def _compare(
    ctx: JobContext,
    model: NcnnModel,
    ref: NcnnModel,
    p: CaptureParams,
    samples: SampleStream,
    k: int,
    first: int,
) -> tuple[str, Artifact]:
    """``layers_<k>.npz``: per sample of shard ``k`` and pair, :func:`stats.pair_sums` of the
    blob in ``ref`` (the reference) and in ``model`` (``first``: the job's index of the
    shard's first sample, for messages)."""
    assert p.compare is not None
    pairs = p.compare.pairs
    blobs = [b for b, _ in pairs]
    sums: np.ndarray = np.empty((samples.total, len(pairs), len(stats.PAIR_SUMS)), dtype=np.float64)
    for i, sample in samples:
        where = f"sample {first + i}"
        refs = [
            np.array(mat, dtype=np.float32)
            for _, mat in ref.extract(sample, p.inputs, blobs, where, light_mode=False)
        ]
        for b, (name, mat) in enumerate(
            model.extract(sample, p.inputs, blobs, where, light_mode=False)
        ):
            got = np.array(mat, dtype=np.float32)
            if got.shape != refs[b].shape:
                raise BlobMismatch(
                    f"{where}: blob {name!r} is {got.shape} in {model.param} and "
                    f"{refs[b].shape} in the reference {ref.param}: they are not the same "
                    "network",
                    {
                        "blob": name,
                        "sample": first + i,
                        "shape": list(got.shape),
                        "ref_shape": list(refs[b].shape),
                    },
                )
            sums[i, b] = stats.pair_sums(refs[b], got, pairs[b][1])
    name = f"layers_{k}.npz"
    with ctx.writer(name) as w:
        w.add("schema", np.int64(ARTIFACT_SCHEMA))
        w.add("names", names_array(blobs))
        w.add("n_samples", np.int64(samples.total))
        w.add("sums", sums)
    return ctx.artifact(name)


# -- eq_layer ------------------------------------------------------------------------------------
def op_eq_layer(ctx: JobContext) -> Result:
    """EQ's search for one layer (:mod:`edgecal_agent.eqsearch`): the similarity sums of
    every candidate, the chosen scales, and the sums with the starting and chosen scales."""
    p: EqLayerParams = ctx.request.params
    try:
        probe_param = ctx.read_job_file(p.probe_param).decode("utf-8")
        prefix = ctx.read_job_file(p.probe_prefix)
        with load_npz(io.BytesIO(ctx.read_job_file(p.candidates)), p.candidates) as npz:
            candidates = np.asarray(npz["candidates"], dtype=np.float32)
            weight_scales = np.asarray(npz["weight_scales"], dtype=np.float32).reshape(-1)
            bottom_scale = np.float32(np.asarray(npz["bottom_scale"]).reshape(-1)[0])
    except (OSError, KeyError, ValueError, IndexError) as e:  # IndexError: empty bottom_scale
        raise BadRequest(f"eq_layer job inputs are incomplete: {e}") from e
    n_w = weight_scales.size
    if candidates.ndim != 2 or candidates.shape[0] != n_w + 1:
        raise BadRequest(
            f"candidates must be ({n_w} weight scales + 1, steps), got {candidates.shape}"
        )

    model = _load_model(ctx, p, "calibration", 1)
    model.check_blobs([p.bottom, p.top])
    samples = SampleStream(ctx, p.shards, p.inputs)
    n_samples = min(samples.total, p.max_samples)
    ins: list[Any] = []
    refs: list[np.ndarray] = []
    t0 = time.perf_counter()
    for i, sample in samples:
        if i >= n_samples:
            break
        got = dict(
            model.extract(sample, p.inputs, [p.bottom, p.top], f"sample {i}", light_mode=False)
        )
        ins.append(got[p.bottom])
        refs.append(np.array(got[p.top], dtype=np.float32))
    ctx.timing_s["fp32"] = time.perf_counter() - t0
    if not ins:
        raise BadRequest("eq_layer needs at least one sample")

    probe = eqsearch.Probe(model.ncnn, probe_param, prefix, n_w)
    passes = [0]

    def one_pass() -> None:
        passes[0] += 1
        tick(min(passes[0], total - 1))  # a fallback to the literal search runs past the total

    search = eqsearch.EqSearch(probe, ins, refs, one_pass)
    total = search.passes(n_w + 1, candidates.shape[1], search.fast_possible(n_w))
    tick = _Throttle(ctx.progress, total)
    t0 = time.perf_counter()
    found = search.run(candidates, weight_scales, bottom_scale)
    tick(total)
    ctx.timing_s["search"] = time.perf_counter() - t0

    name = "eq.npz"
    with ctx.writer(name) as w:
        w.add("schema", np.int64(ARTIFACT_SCHEMA))
        w.add("sim", found.sim)
        w.add("sim_samples", found.counts.astype(np.int64))
        w.add("weight_scales", found.weight_scales.astype(np.float32))
        w.add("bottom_scale", np.array([found.bottom_scale], dtype=np.float32))
        w.add("sim_start", np.float64(found.sim_start))
        w.add("sim_end", np.float64(found.sim_end))
        w.add("n_samples", np.int64(len(ins)))
    result = {
        "n_samples": len(ins),
        "similarity": eqsearch.SIMILARITY,
        "eq_result": EQ_RESULT,
        "search": found.path,
        "probe_passes": passes[0],
    }
    return result, dict([ctx.artifact(name)])


HANDLERS: dict[str, Callable[[JobContext], Result]] = {
    "hello": op_hello,
    "sleep": op_sleep,
    "absmax": op_absmax,
    "histogram": op_histogram,
    "run": op_run,
    "eq_layer": op_eq_layer,
}
