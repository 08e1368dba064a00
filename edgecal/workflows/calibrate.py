"""Orchestration: calibrate (abs-max pass, histogram pass, thresholds, EQ).

Everything here drives a :class:`edgecal.device.base.Device` and the pure core; it does no
printing (progress goes through a callback) and writes no user-visible file (the CLI does,
atomically).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecal import __version__
from edgecal.calib.build import TableBuild, build_table
from edgecal.calib.eq import eq_candidates, pick_best, pick_pruned
from edgecal.calib.histogram import NUM_BINS, BlobHistogram, merge_counts, reduce_absmax
from edgecal.calib.methods import METHODS, Method, parse_method
from edgecal.calib.table import CalibrationTable, weight_key
from edgecal.calib.weightcheck import refuse_nonfinite_weights
from edgecal.device import capture
from edgecal.device.base import Device
from edgecal.errors import AgentCrash, AgentError, CalibrationError, ProtocolError
from edgecal.files.cleanup import temporary_folder
from edgecal.fleet.scheduler import Fleet, Job, RetryPolicy
from edgecal.inputs.model import Model
from edgecal.inputs.samples import SampleSource
from edgecal.ncnnfmt.modelbin import WeightRecord, write_records
from edgecal.ncnnfmt.param import Layer, ParamFile, ParamValue, render_param
from edgecal.runs.calibrun import CalibRun, Part, build_manifest, check_accounting
from edgecal.runs.histfile import HistogramSet
from edgecal_agent.messages import EQ_MAX_SAMPLES, EQ_PRUNE_SLACK, InputDesc

# progress(description, total) -> per-step callback(done, total)
ProgressFactory = Callable[[str, int], Callable[[int, int], None]]


def _no_progress(description: str, total: int) -> Callable[[int, int], None]:
    return lambda done, total: None


@dataclass
class EqLayerReport:
    layer: str
    cosine_kl: float  # mean single-layer cosine over the EQ samples with the KL scales
    cosine_eq: float  # the same with the scales EQ chose


@dataclass
class CalibrationRun:
    table: CalibrationTable
    build: TableBuild
    histograms: HistogramSet
    n_samples: int
    method: str
    warnings: list[str]
    timings_s: dict[str, float]
    device: dict[str, Any]
    eq: list[EqLayerReport] = field(default_factory=list)
    fleet: list[dict[str, Any]] = field(default_factory=list)  # per board: BoardAccount


def calibration_blobs(model: Model) -> list[str]:
    """The blobs ncnn2table extracts: bottoms[0] of every calibrated layer, first use first."""
    seen: dict[str, None] = {}
    for layer in model.calibrated_layers:
        seen.setdefault(layer.bottoms[0], None)
    return list(seen)


@dataclass(frozen=True)
class ShardUnit:
    """One shard of one pass, as the fleet runs it."""

    pass_name: str
    index: int
    path: Path
    count: int


class _Closing:
    """What a pass's threads write into its folders, stopped once the pass is left.

    An interrupted :meth:`Fleet.run` raises at once in the main thread while its threads may
    still answer a job (the job's part file) or decode the next shard: a write after the
    folders were removed would create them again, left behind in the temporary folder.
    Every write happens under :attr:`lock` and only while the pass is open; :meth:`close`
    (taking the lock: it waits for a write under way) makes every later write a no-op."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        with self.lock:
            self.closed = True


class _PassClosed(Exception):
    """A shard was decoded after its pass was left (interrupted): nothing was written."""


def _decode_shard(
    source: SampleSource, shard: Any, shard_dir: Path, closing: _Closing | None = None
) -> Path:
    """Decode and write one planned shard (``.index``/``.start``/``.count``); with
    ``closing``, not once the pass was left (:class:`_PassClosed`)."""
    from edgecal_agent.shards import write_shard

    descs = [InputDesc.from_dict(s.to_dict()) for s in source.specs]
    path = shard_dir / f"shard_{shard.index:05d}.npz"
    samples = [source.load(i) for i in range(shard.start, shard.start + shard.count)]
    with closing.lock if closing is not None else contextlib.nullcontext():
        if closing is not None and closing.closed:
            raise _PassClosed(str(path))
        shard_dir.mkdir(parents=True, exist_ok=True)
        write_shard(path, samples, descs)
    return path


def measure(
    model: Model,
    source: SampleSource,
    devices: Sequence[Device],
    *,
    histograms: bool,
    threads: int,
    runtime: str,
    shard_dir: Path,
    progress: ProgressFactory,
    allow_zero_blobs: bool = False,
    run: CalibRun | None = None,
    fleet: Fleet | None = None,
    decode_all: bool = False,
) -> tuple[HistogramSet, list[Path], dict[str, float]]:
    """Pass 1 (abs-max) and, when asked, pass 2 (histograms), shard by shard over the fleet.

    Abs-max reduces by max and histograms (on the fixed pass-1 ranges) by summing counts, so
    the result does not depend on how the shards were split between devices, nor on which
    were answered before an interruption: each shard's answer is kept in the run directory
    (``run``; a temporary one by default) and a resumed run computes only the missing ones.
    ``decode_all``: write every shard into ``shard_dir`` (EQ needs the first samples).
    """
    blobs = calibration_blobs(model)
    work = capture.Workload.of(model, source.specs, blobs, runtime, threads)
    n = source.n_samples
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        if run is None:
            tmp = stack.enter_context(temporary_folder("edgecal-run-"))
            manifest = build_manifest(
                model,
                source,
                method="",
                runtime=runtime,
                threads=threads,
                histograms=histograms,
                options={},
                workers=len(devices),
            )
            run = CalibRun.create(tmp / "run", manifest, ["edgecal"])
            run.durable = False  # removed below, never resumed
            stack.callback(run.close)
        # left first (LIFO): no thread of this pass writes into its folders once they go
        closing = _Closing()
        stack.callback(closing.close)
        fleet = fleet or Fleet(devices)
        plan = run.manifest.shards
        done1, done2 = run.done("absmax"), run.done("histogram")
        if done1 and histograms and len(done2) < len(plan):  # resumed: the shards are there
            for part in run.parts("absmax"):
                fleet.remember_home(part.index, part.board)
        paths: dict[int, Path] = {}

        def path_of(shard: Any) -> Path:  # decoded when a pass first needs it
            if shard.index not in paths:
                paths[shard.index] = _decode_shard(source, shard, shard_dir, closing)
            return paths[shard.index]

        def units1() -> Iterator[ShardUnit]:
            """The shards of pass 1, each decoded while the devices work on the one before
            (one thread: Pillow decodes without the GIL, the host only waits for the jobs)."""
            todo = [shard for shard in plan if shard.index not in done1]
            with ThreadPoolExecutor(max_workers=1) as pool:
                ahead: dict[int, Future[Path]] = {}

                def prefetch(k: int) -> None:
                    if k < len(todo) and todo[k].index not in paths and k not in ahead:
                        ahead[k] = pool.submit(_decode_shard, source, todo[k], shard_dir, closing)

                for k, shard in enumerate(todo):
                    if closing.closed:  # interrupted: decode no more
                        return
                    prefetch(k)
                    if k in ahead:
                        paths[shard.index] = ahead.pop(k).result()
                    prefetch(k + 1)
                    yield ShardUnit("absmax", shard.index, path_of(shard), shard.count)

        def run_capture(
            dev: Device, op: str, params: Any, u: ShardUnit, job_id: str, tick: Any
        ) -> Any:
            """One capture job; errors that every board would repeat name the model and
            the sample or layer."""
            try:
                return dev.run_job(op, params, job_id=job_id, progress=tick)
            except AgentError as e:
                if e.kind == "NonFiniteActivation":
                    raise nonfinite_error(e, model, source, plan[u.index].start) from None
                raise
            except AgentCrash as e:
                raise crash_error(e, model, u.path) from None

        def start1(dev: Device, u: ShardUnit, job_id: str, tick: Any) -> Any:
            params = capture.absmax_request(dev, work.on(u.path))
            job = run_capture(dev, "absmax", params, u, job_id, tick)
            return capture.parse_absmax(dev, job, blobs)

        def collect1(dev: Device, u: ShardUnit, job_id: str) -> Any:
            job = dev.collect_job(job_id)
            return None if job is None else capture.parse_absmax(dev, job, blobs)

        def record(u: ShardUnit, answer: Any, board: str, job_id: str) -> None:
            sh = plan[u.index]
            part = Part(
                u.pass_name, u.index, u.count, sh.digest, board, job_id, list(answer), answer
            )
            with closing.lock:
                # an answer that came after the pass was left (interrupted): its folder may
                # be gone, and the run was unlocked; a resumed run computes it again
                if not closing.closed:
                    run.write(part)

        def run_pass(
            label: str,
            units: Iterator[ShardUnit],
            start: Callable[..., Any],
            collect: Callable[..., Any],
            done: Collection[int],
        ) -> None:
            """One pass over the shards not ``done`` (a resumed run) on the fleet."""
            already = sum(plan[i].count for i in done)
            tick = progress(label, n)
            tick(already, n)
            fleet.run(units, _job(start, collect), record, n, lambda k, total: tick(already + k, n))

        t0 = time.perf_counter()
        run_pass("count the absmax", units1(), start1, collect1, done1)
        timings["absmax"] = time.perf_counter() - t0
        parts1 = run.parts("absmax")
        check_accounting(run.manifest, parts1, "absmax", blobs, str(run.run.path))
        last = max(parts1, key=lambda p: p.index) if parts1 else None
        absmax = {
            b: (
                reduce_absmax(p.values[b][0] for p in parts1),
                last.values[b][1] if last is not None else 0,
            )
            for b in blobs
        }
        run.write_ranges(absmax)
        zero = [b for b in blobs if not float(absmax[b][0]) > 0.0]
        if zero and not allow_zero_blobs:
            users = [layer.name for layer in model.calibrated_layers if layer.bottoms[0] in zero]
            raise CalibrationError(
                f"blob(s) {', '.join(zero)} (input of layer(s) {', '.join(users)}) are zero on "
                f"every one of the {n} calibration samples of {model.param_path}",
                hint="check --mean/--norm/--pixel/--shape and the image list; "
                "--allow-zero-blobs writes the table anyway with a neutral scale",
            )
        counts: dict[str, np.ndarray] = {b: np.zeros(NUM_BINS, np.uint64) for b in blobs}
        live = [b for b in blobs if b not in zero]
        if histograms and live:
            ranges = {b: float(absmax[b][0]) for b in live}
            work2 = replace(work, blobs=live)

            def units2() -> Iterator[ShardUnit]:  # a resumed run decodes as it goes
                for sh in plan:
                    if closing.closed:  # interrupted: decode no more
                        return
                    if sh.index not in done2:
                        yield ShardUnit("histogram", sh.index, path_of(sh), sh.count)

            def start2(dev: Device, u: ShardUnit, job_id: str, tick: Any) -> Any:
                params = capture.histogram_request(dev, work2.on(u.path), ranges)
                job = run_capture(dev, "histogram", params, u, job_id, tick)
                return capture.parse_histograms(dev, job, live)

            def collect2(dev: Device, u: ShardUnit, job_id: str) -> Any:
                job = dev.collect_job(job_id)
                return None if job is None else capture.parse_histograms(dev, job, live)

            t0 = time.perf_counter()
            run_pass("build histogram", units2(), start2, collect2, done2)
            parts2 = run.parts("histogram")
            check_accounting(run.manifest, parts2, "histogram", live, str(run.run.path))
            for b in live:
                counts[b] = merge_counts(part.values[b] for part in parts2)
            timings["histogram"] = time.perf_counter() - t0
        shard_paths = (
            [path_of(sh) for sh in plan] if decode_all else [paths[k] for k in sorted(paths)]
        )
    stats = {
        layer.name: BlobHistogram(
            counts=np.asarray(counts[layer.bottoms[0]], dtype=np.uint64),
            absmax=np.float32(absmax[layer.bottoms[0]][0]),
            elements_per_sample=int(absmax[layer.bottoms[0]][1]),
        )
        for layer in model.calibrated_layers
    }
    hs = HistogramSet(
        blobs={layer.name: layer.bottoms[0] for layer in model.calibrated_layers},
        stats=stats,
        meta={
            "edgecal": __version__,
            "param": str(model.param_path.resolve()),
            "bin": str(model.bin_path.resolve()),
            "param_sha256": model.param_sha256,
            "bin_sha256": model.bin_sha256,
            "runtime": runtime,
            "n_samples": n,
            "histograms": histograms,
            "inputs": [s.to_dict() for s in source.specs],
        },
    )
    return hs, shard_paths, timings


def crash_error(e: AgentCrash, model: Model, shard: Path) -> CalibrationError:
    """ncnn crashing in the agent, as an error naming the model and, when a re-run on this
    host finds it, the layer (never retried)."""
    from edgecal.workflows.crashsite import crash_layer

    layer = crash_layer(model.param, model.param_path, model.bin_path, shard)
    where = (
        f"; on this host ncnn crashes in layer {layer.name!r} ({layer.type})"
        if layer is not None
        else ""
    )
    return CalibrationError(f"{model.param_path}: {e.message}{where}", hint=e.hint)


def nonfinite_error(
    e: AgentError, model: Model, source: SampleSource, start: int
) -> CalibrationError:
    """The agent's ``NonFiniteActivation`` (sample indices within one shard starting at sample
    ``start``) as an error naming the blobs, their layers and the sample files."""
    names = source.sample_names()
    users: dict[str, list[str]] = {}
    for layer in model.calibrated_layers:
        users.setdefault(layer.bottoms[0], []).append(layer.name)
    entries = e.details.get("samples")
    lines: list[str] = []
    if isinstance(entries, list):
        for entry in entries[:10]:
            try:
                i, blob, n_nan, n_inf = int(entry[0]), str(entry[1]), int(entry[2]), int(entry[3])
                sample = names[start + i]
            except (TypeError, ValueError, IndexError):
                continue
            what = ", ".join(f"{n} {k}" for n, k in ((n_nan, "NaN"), (n_inf, "inf")) if n)
            lines.append(
                f"  blob {blob} (input of {', '.join(users.get(blob, ['?']))}): "
                f"{what} on sample {sample}"
            )
        if len(entries) > 10:
            lines.append(f"  ... {len(entries) - 10} more in this shard")
    if not lines:
        return CalibrationError(
            f"{model.param_path}: {e.message}", hint="check the model's weights and the samples"
        )
    return CalibrationError(
        f"{model.param_path}: activations are NaN or inf, no scale can be computed:\n"
        + "\n".join(lines),
        hint="check those samples and the weights of the layers before these blobs "
        "(a NaN/inf weight, or values overflowing float32); remove a bad sample from the list",
    )


def _job(start: Callable[..., Any], collect: Callable[..., Any]) -> Job[ShardUnit]:
    return Job(
        start=start,
        collect=collect,
        size=lambda u: u.count,
        name=lambda u: f"shard {u.index} ({u.pass_name})",
        op=lambda u: u.pass_name,
        home=lambda u: u.index,
    )  # pass 2 goes where pass 1 pushed the shard


def table_from_histograms(model: Model, hs: HistogramSet, method: str | Method) -> TableBuild:
    """Thresholds from measured statistics (no device): the offline half of calibrate."""
    method = parse_method(method)
    if METHODS[method].needs_histograms and hs.meta.get("histograms") is False:
        raise CalibrationError(
            f"these statistics hold abs-max values only, {METHODS[method].label} needs the "
            "histograms",
            hint=f"re-run calibrate with --method {method}, or pass --histograms-out with any "
            "method",
        )
    layers = [(layer, model.weights.get(layer.name, {})) for layer in model.param.layers]
    return build_table(layers, hs.stats, method)


def probe_model(layer: Layer, weights: dict[str, WeightRecord]) -> tuple[str, bytes]:
    """A one-layer net (Input -> ``layer`` with ``8=1``) and its .bin without the scales.

    The agent appends the candidate weight scales and the bottom scale; ncnn then quantizes
    the fp32 weights at load time (spec 4.2), which is exactly the int8 layer EQ scores.
    """
    params = dict(layer.params)
    params[8] = ParamValue(kind="int", value=1, text="1")
    params.pop(30, None)  # shape hints describe the original graph
    probe = Layer(type=layer.type, name=layer.name, bottoms=["in"], tops=["out"], params=params)
    source = Layer(type="Input", name="in", bottoms=[], tops=["in"], params={})
    text = render_param(ParamFile(layers=[source, probe], declared_blob_count=2))
    records = [WeightRecord("weight", "f32", weights["weight"].values.astype(np.float32))]
    if "bias" in weights:
        records.append(WeightRecord("bias", "raw", weights["bias"].values.astype(np.float32)))
    return text, write_records(records)


@dataclass(frozen=True)
class EqUnit:
    """One layer of EQ's search, as the fleet runs it (``index``: its place in the model's
    calibrated layers)."""

    index: int
    layer: Layer


def refine_eq(
    model: Model,
    table: CalibrationTable,
    source: SampleSource,
    shards: Sequence[Path],
    device: Device | Sequence[Device],
    *,
    progress: ProgressFactory,
    retry: RetryPolicy | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[CalibrationTable, list[EqLayerReport]]:
    """EQ as ncnn2table meant it (spec 2.9), starting from the KL table.

    Each layer's search depends only on that layer's own scales in ``table`` and on fp32
    activations (upstream error is not propagated), so the layers are searched independently,
    one agent job per layer, spread over ``device`` (several: a fleet; a board lost mid-search
    gives its layer to another); the table is the same whatever the number of devices."""
    devices = [device] if isinstance(device, Device) else list(device)
    layers = model.calibrated_layers
    found: dict[int, tuple[np.ndarray, np.float32, EqLayerReport]] = {}
    tick = progress("search eq scales", len(layers))
    if layers:
        plans = {u: _eq_plan(model, table, lay, source, shards) for u, lay in enumerate(layers)}

        def start(dev: Device, u: EqUnit, job_id: str, tick_: Any) -> Any:
            return capture.eq_search_layer(dev, *plans[u.index].args, job_id=job_id)

        def collect(dev: Device, u: EqUnit, job_id: str) -> Any:
            return capture.collect_eq_layer(dev, job_id, plans[u.index].candidates.shape)

        def record(u: EqUnit, res: Any, board: str, job_id: str) -> None:
            found[u.index] = plans[u.index].choose(res)

        job: Job[EqUnit] = Job(
            start=start,
            collect=collect,
            size=lambda u: 1,
            name=lambda u: f"EQ search of layer {u.layer.name}",
            op=lambda u: "eq_layer",
        )
        fleet = Fleet(devices, retry=retry, say=say)
        fleet.run((EqUnit(i, lay) for i, lay in enumerate(layers)), job, record, len(layers), tick)
    out = CalibrationTable(records={k: v.copy() for k, v in table.records.items()})
    reports: list[EqLayerReport] = []
    for i, layer in enumerate(layers):  # in layer order, as the sequential search wrote them
        ws, bs, report = found[i]
        reports.append(report)
        out.records[weight_key(layer.name)] = ws
        out.records[layer.name] = np.array([bs], dtype=np.float32)
    return out, reports


@dataclass(frozen=True)
class _EqPlan:
    """What one layer's ``eq_layer`` job is given (:func:`capture.eq_search_layer`'s
    arguments after the device) and how its answer becomes the layer's scales."""

    layer: Layer
    args: tuple[Any, ...]
    candidates: np.ndarray
    ws0: np.ndarray
    bs0: np.float32
    n_eq: int

    def choose(self, res: capture.EqLayerResult) -> tuple[np.ndarray, np.float32, EqLayerReport]:
        cands, ws0, bs0 = self.candidates, self.ws0, self.bs0
        chosen = [*ws0, bs0]
        for j in range(len(chosen)):
            k = self._pick(res, j)
            if k is not None:
                chosen[j] = cands[j, k]
        want_ws = np.array(chosen[:-1], dtype=np.float32)
        if not (
            np.array_equal(want_ws, np.asarray(res.weight_scales, np.float32))
            and np.float32(chosen[-1]) == np.float32(res.bottom_scale)
        ):
            raise ProtocolError(
                f"EQ on layer {self.layer.name}: the agent's choice disagrees with its own "
                "similarity sums",
                hint="the agent on the device is out of date; re-run to re-push it",
            )
        # the agent's sums with the starting (KL) and the chosen scales: the same similarity
        n_eq = self.n_eq
        report = EqLayerReport(self.layer.name, res.sim_start / n_eq, res.sim_end / n_eq)
        return want_ws, np.float32(chosen[-1]), report

    def _pick(self, res: capture.EqLayerResult, j: int) -> int | None:
        """Row ``j``'s pick from the agent's sums, its pruning bounds checked."""
        sums = np.asarray(res.sim[j], dtype=np.float64)
        if res.sim_samples is None:
            return pick_best(sums)
        try:
            return pick_pruned(sums, res.sim_samples[j], res.n_samples, EQ_PRUNE_SLACK)
        except ValueError as e:
            raise ProtocolError(
                f"EQ on layer {self.layer.name}: the agent pruned a candidate it could not "
                f"rule out: {e}",
                hint="the agent on the device is out of date; re-run to re-push it",
            ) from None


def _eq_plan(
    model: Model,
    table: CalibrationTable,
    layer: Layer,
    source: SampleSource,
    shards: Sequence[Path],
) -> _EqPlan:
    n_eq = min(source.n_samples, EQ_MAX_SAMPLES)
    ws0 = table.records[weight_key(layer.name)].astype(np.float32)
    bs0 = np.float32(table.records[layer.name][0])
    text, prefix = probe_model(layer, model.weights[layer.name])
    cands = np.stack([eq_candidates(np.float32(s)) for s in [*ws0, bs0]])
    work = capture.Workload(model.param_path, model.bin_path, source.specs, shards)
    args = (work, layer.bottoms[0], layer.tops[0], text, prefix, cands, ws0, bs0, n_eq)
    return _EqPlan(layer, args, cands, ws0, bs0, n_eq)


def eq_layer(
    model: Model,
    table: CalibrationTable,
    layer: Layer,
    source: SampleSource,
    shards: Sequence[Path],
    device: Device,
) -> tuple[np.ndarray, np.float32, EqLayerReport]:
    """EQ's search for one layer, from that layer's scales in ``table``: the weight scales and
    bottom scale it chooses, and the single-layer cosine before and after."""
    plan = _eq_plan(model, table, layer, source, shards)
    return plan.choose(capture.eq_search_layer(device, *plan.args))


@contextlib.contextmanager
def _agents_started(devices: Sequence[Device]) -> Iterator[threading.Thread]:
    """Say hello to ``devices`` in the background (their agents start), joined on leaving; a
    device that fails fails again, and is handled, at its first job."""

    def hello() -> None:
        for d in devices:
            with contextlib.suppress(Exception):
                d.hello()

    thread = threading.Thread(target=hello, name="edgecal-eq-agents", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join()


def calibrate(
    model: Model,
    source: SampleSource,
    device: Device | Sequence[Device],
    *,
    method: str | Method = Method.KL,
    threads: int = 1,
    runtime: str = "calibration",
    keep_histograms: bool = False,
    allow_zero_blobs: bool = False,
    progress: ProgressFactory | None = None,
    run: CalibRun | None = None,
    retry: RetryPolicy | None = None,
    say: Callable[[str], None] | None = None,
    eq_devices: Sequence[Device] = (),
    eq_first_board_only: bool = False,
) -> CalibrationRun:
    """Calibrate over ``device`` (one, or a fleet: shards are shared, results identical).
    ``run``: the run directory that keeps each shard's answer (a temporary one by default);
    ``retry``: how often a board is retried before its shards go to the others;
    ``eq_devices``: more devices for EQ's per-layer search (e.g. more local agents), besides
    the ones still alive after the passes; ``eq_first_board_only``: EQ searches on the first
    board alive only (boards of different profiles choose differently: a mixed fleet's EQ
    table must not depend on which board took which layer)."""
    method = parse_method(method)
    spec = METHODS[method]
    progress = progress or _no_progress
    refuse_nonfinite_weights(
        ((layer, model.weights.get(layer.name, {})) for layer in model.param.layers),
        str(model.param_path),
    )
    devices = [device] if isinstance(device, Device) else list(device)
    if not devices:
        raise CalibrationError("no device to calibrate on")
    timings: dict[str, float] = {}
    fleet = Fleet(devices, retry=retry, say=say)
    t0 = time.perf_counter()
    info = fleet.call("hello", lambda d: d.hello())  # every agent starts now
    timings["connect"] = time.perf_counter() - t0
    with (
        # EQ's extra agents start while the passes run (else at their first layer)
        _agents_started(eq_devices if spec.needs_device else ()) as warm,
        temporary_folder("edgecal-shards-") as tmp,
    ):
        hs, shards, t = measure(
            model,
            source,
            devices,
            histograms=spec.needs_histograms or keep_histograms,
            threads=threads,
            runtime=runtime,
            shard_dir=Path(tmp),
            progress=progress,
            allow_zero_blobs=allow_zero_blobs,
            run=run,
            fleet=fleet,
            decode_all=spec.needs_device,
        )
        timings.update(t)
        if say is not None:
            for line in source.notes.lines():
                say(line)
        t0 = time.perf_counter()
        build = table_from_histograms(model, hs, spec.blob_rule)
        table = build.table
        timings["thresholds"] = time.perf_counter() - t0
        eq_reports: list[EqLayerReport] = []
        if spec.needs_device:
            t0 = time.perf_counter()
            warm.join()
            table, eq_reports = refine_eq(
                model,
                table,
                source,
                shards,
                [*(fleet.alive[:1] if eq_first_board_only else fleet.alive), *eq_devices],
                progress=progress,
                retry=retry,
                say=say,
            )
            timings[method.value] = time.perf_counter() - t0
    hs.meta["method"] = method
    return CalibrationRun(
        table=table,
        build=build,
        histograms=hs,
        n_samples=source.n_samples,
        method=method,
        warnings=list(build.warnings),
        timings_s=timings,
        device=info,
        eq=eq_reports,
        fleet=[a.to_dict() for a in fleet.accounts.values()],
    )
