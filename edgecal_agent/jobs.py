"""Op handlers.  Each takes the job context and returns ``(result, artifacts)``.

Memory is bounded by one sample: samples are streamed from the shards, activations are reduced
to statistics at once and dropped.  Only ``eq_layer`` keeps (at most 50) in/out pairs of one
layer, as the algorithm needs them for every candidate.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import numpy as np

import edgecal_agent
from edgecal_agent import stats
from edgecal_agent.backend import NcnnModel, import_ncnn
from edgecal_agent.errors import (
    ArtifactMissing,
    BadRequest,
    InputCorrupt,
    InputError,
    JobError,
    ModelLoadError,
    NonFiniteActivation,
)
from edgecal_agent.fileio import fd_state, sha256_cached_at, sha256_fh
from edgecal_agent.messages import (
    Artifact,
    CaptureParams,
    EqLayerParams,
    InputDesc,
    ProtocolViolation,
    Request,
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
    with _model_file(ctx, p.model.param) as fh_param, _model_file(ctx, p.model.bin) as fh_bin:
        key: tuple[Any, ...] = (fd_state(fh_param), fd_state(fh_bin), runtime, threads)
        model = _MODEL_CACHE.get(key)
        if model is None:
            _MODEL_CACHE.clear()  # drop the old net before loading another
            # ncnn opens paths: it gets the files already opened (and checked), by descriptor
            param = fd_path(fh_param.fileno()) or os.path.join(ctx.workdir.path, p.model.param)
            bin_ = fd_path(fh_bin.fileno()) or os.path.join(ctx.workdir.path, p.model.bin)
            model = NcnnModel(
                param, bin_, runtime=runtime, threads=threads, labels=(p.model.param, p.model.bin)
            )
            _MODEL_CACHE[key] = model
    model.check_inputs(p.inputs)
    ctx.timing_s["load"] = time.perf_counter() - t0
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
    scratch = stats._Scratch()
    accs = [stats.AbsMaxAccumulator(scratch) for _ in p.blobs]
    adders = [acc.add for acc in accs]
    per_sample = [0] * n_blobs

    def reduce(b: int, values: np.ndarray) -> None:
        adders[b](values)  # NaN never wins, as std::max(absmax, fabs(x)) in ncnn2table
        per_sample[b] = values.size  # c * w * h of the last sample, as ncnn2table

    _run_stats(ctx, model, samples, p, reduce)
    absmax = [acc.value for acc in accs]
    bad = [b for b, acc in enumerate(accs) if acc.nonfinite]
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
    scratch = stats._Scratch()
    accs = [stats.HistogramAccumulator(r, scratch) for r in ranges]
    adders = [acc.add for acc in accs]

    def reduce(b: int, values: np.ndarray) -> None:
        adders[b](values)

    _run_stats(ctx, model, samples, p, reduce)
    counts = (
        np.stack([acc.counts() for acc in accs])
        if accs
        else np.zeros((0, stats.NUM_BINS), dtype=np.uint64)
    )
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
    reduce: Callable[[int, np.ndarray], None],
) -> None:
    """Every sample through the net; ``reduce(b, values)`` gets each blob's visited elements
    at once (memory: one sample's activations, whatever the number of samples)."""
    tick = _Throttle(ctx.progress, samples.total)
    inputs, blobs = p.inputs, p.blobs
    visit = model.for_each_visited
    t0 = time.perf_counter()
    for i, sample in samples:
        visit(sample, inputs, blobs, reduce, f"sample {i}")
        tick(i + 1)
    ctx.timing_s["infer"] = time.perf_counter() - t0


def output_key(i: int, b: int) -> str:
    """Member of sample ``i`` (within its shard), blob ``b`` in a ``run`` output file."""
    return f"s{i:06d}_b{b}"


def op_run(ctx: JobContext) -> Result:
    """Outputs of ``blobs`` for every sample, one npz per shard (``outputs_<k>.npz``)."""
    p: CaptureParams = ctx.request.params
    model = _load_model(ctx, p, p.runtime, p.threads)
    model.check_blobs(p.blobs)
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
            w.add("schema", np.int64(ARTIFACT_SCHEMA))
            w.add("names", names_array(p.blobs))
            w.add("n_samples", np.int64(samples.total))
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
        total += samples.total
        artifacts.update([ctx.artifact(name)])
    ctx.timing_s["infer"] = time.perf_counter() - t0
    result: dict[str, Any] = {"n_samples": total, "n_shards": len(streams)}
    if p.timed:
        result["latency_s"] = latency
    return result, artifacts


# -- eq_layer ------------------------------------------------------------------------------------
def _cos_terms(ref: np.ndarray) -> np.ndarray:
    """The first w*h floats of each channel of an elempack-1 fp32 blob, flattened."""
    return np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)


def _seq_sum(x: np.ndarray) -> np.ndarray:
    """Sequential float32 sums along the last axis (``float acc; acc += x[i]`` order)."""
    return np.cumsum(x, axis=-1, dtype=np.float32)[..., -1]


class _EqProbe:
    """The one-layer int8 probe net, rebuilt from memory for each candidate scale vector."""

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
        self.net, self.model_bytes = net, model_bytes  # old net dropped only now
        self.input_name, self.output_name = ins[0], outs[0]

    def forward(self, mat: Any) -> np.ndarray:
        ex = self.net.create_extractor()
        ex.set_light_mode(True)
        ex.set_blob_allocator(self.allocator)
        ex.set_workspace_allocator(self.workspace)
        ex.input(self.input_name, mat)
        ret, out = ex.extract(self.output_name)
        del ex
        if ret != 0:
            raise JobError(f"the EQ probe forward failed (extract returned {ret})")
        return np.array(out, dtype=np.float32)


def op_eq_layer(ctx: JobContext) -> Result:
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
        refs.append(_cos_terms(np.array(got[p.top])))
    ctx.timing_s["fp32"] = time.perf_counter() - t0
    if not ins:
        raise BadRequest("eq_layer needs at least one sample")
    same_shape = len({r.shape for r in refs}) == 1
    ref_stack = np.stack(refs) if same_shape else None
    ref_norm = [math.sqrt(float(_seq_sum(r * r))) for r in refs]

    probe = _EqProbe(model.ncnn, probe_param, prefix, n_w)
    probe.scales[:n_w] = weight_scales
    probe.scales[n_w] = bottom_scale

    def similarity() -> float:
        probe.build()
        outs = [_cos_terms(probe.forward(m)) for m in ins]
        if (
            ref_stack is not None
            and len({o.shape for o in outs}) == 1
            and outs[0].shape == ref_stack.shape[1:]
        ):
            q = np.stack(outs)
            dots = _seq_sum(ref_stack * q)
            qnorm = _seq_sum(q * q)
        else:
            if any(o.shape != r.shape for o, r in zip(outs, refs)):
                raise JobError("the EQ probe output shape differs from the fp32 top blob")
            dots = np.array([_seq_sum(r * o) for r, o in zip(refs, outs)], dtype=np.float32)
            qnorm = np.array([_seq_sum(o * o) for o in outs], dtype=np.float32)
        total = 0.0
        for d, rn, qn in zip(dots.tolist(), ref_norm, qnorm.tolist()):
            total += d / rn / math.sqrt(qn) if rn > 0.0 and qn > 0.0 else math.nan
        return total

    steps = candidates.shape[1]
    sim = np.zeros(candidates.shape, dtype=np.float64)
    tick = _Throttle(ctx.progress, candidates.size)
    t0 = time.perf_counter()
    for j in range(n_w + 1):
        best_sum, best_k = 0.0, -1
        for k in range(steps):
            probe.scales[j] = candidates[j, k]
            s = similarity()
            sim[j, k] = s
            if s > best_sum:  # strict, from 0.0: first wins, NaN never wins
                best_sum, best_k = s, k
            tick(j * steps + k + 1)
        old = weight_scales[j] if j < n_w else bottom_scale
        probe.scales[j] = candidates[j, best_k] if best_k >= 0 else old
    ctx.timing_s["search"] = time.perf_counter() - t0

    chosen = probe.scales.astype(np.float32)
    name = "eq.npz"
    with ctx.writer(name) as w:
        w.add("schema", np.int64(ARTIFACT_SCHEMA))
        w.add("sim", sim)
        w.add("weight_scales", chosen[:n_w].copy())
        w.add("bottom_scale", chosen[n_w:].copy())
        w.add("n_samples", np.int64(len(ins)))
    return {"n_samples": len(ins)}, dict([ctx.artifact(name)])


HANDLERS: dict[str, Callable[[JobContext], Result]] = {
    "hello": op_hello,
    "sleep": op_sleep,
    "absmax": op_absmax,
    "histogram": op_histogram,
    "run": op_run,
    "eq_layer": op_eq_layer,
}
