"""Orchestration: calibrate (abs-max pass, histogram pass, thresholds, EQ).

Everything here drives a :class:`edgecal.device.base.Device` and the pure core; it does no
printing (progress goes through a callback) and writes no user-visible file (the CLI does,
atomically).
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecal import __version__
from edgecal.calib.build import TableBuild, build_table
from edgecal.calib.eq import eq_candidates, pick_best
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.table import CalibrationTable, weight_key
from edgecal.device import capture
from edgecal.device.base import Device
from edgecal.errors import CalibrationError, ProtocolError
from edgecal.histfile import HistogramSet
from edgecal.inputs import SampleSource
from edgecal.model import Model
from edgecal.ncnnfmt.modelbin import WeightRecord, write_records
from edgecal.ncnnfmt.param import Layer, ParamFile, ParamValue, render_param

METHODS = ("kl", "aciq", "eq")
EQ_MAX_SAMPLES = 50
EQ_STEPS = 100

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


def calibration_blobs(model: Model) -> list[str]:
    """The blobs ncnn2table extracts: bottoms[0] of every calibrated layer, first use first."""
    seen: dict[str, None] = {}
    for layer in model.calibrated_layers:
        seen.setdefault(layer.bottoms[0], None)
    return list(seen)


class _Workers:
    """Jobs of one pass spread over the devices: each device runs one job at a time, results
    come back in submission order, and progress is summed over the running jobs."""

    def __init__(self, devices: Sequence[Device], total: int,
                 progress: Callable[[int, int], None]) -> None:
        self._idle: queue.Queue[Device] = queue.Queue()
        for d in devices:
            self._idle.put(d)
        self._pool = ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="edgecal")
        self._done: dict[int, int] = {}
        self._lock = threading.Lock()
        self._total = total
        self._progress = progress
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        key = len(self.futures)

        def tick(done: int, _total: int) -> None:
            with self._lock:
                self._done[key] = done
                self._progress(sum(self._done.values()), self._total)

        def run() -> Any:
            device = self._idle.get()
            try:
                return fn(device, *args, progress=tick, **kwargs)
            finally:
                self._idle.put(device)

        self.futures.append(self._pool.submit(run))

    def results(self) -> list[Any]:
        try:
            return [f.result() for f in self.futures]
        finally:
            self.close()

    def close(self) -> None:
        """Cancel what has not started and wait for what has (a failed pass leaves no job
        running behind the caller's back)."""
        for f in self.futures:
            f.cancel()
        self._pool.shutdown(wait=True)


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
) -> tuple[HistogramSet, list[Path], dict[str, float]]:
    """Pass 1 (abs-max) and, when asked, pass 2 (histograms), spread over ``devices``.

    Abs-max reduces by max and histograms (on the fixed pass-1 ranges) by summing counts, so
    the result does not depend on how the samples were split between devices.
    """
    blobs = calibration_blobs(model)
    n = source.n_samples
    shards, absmax, timings = _absmax_pass(
        model, source, devices, blobs, threads=threads, runtime=runtime, shard_dir=shard_dir,
        progress=progress("count the absmax", n),
    )
    zero = [b for b in blobs if not float(absmax[b][0]) > 0.0]
    if zero and not allow_zero_blobs:
        users = [layer.name for layer in model.calibrated_layers if layer.bottoms[0] in zero]
        raise CalibrationError(
            f"blob(s) {', '.join(zero)} (input of layer(s) {', '.join(users)}) are zero on every "
            f"one of the {n} calibration samples of {model.param_path}",
            hint="check --mean/--norm/--pixel/--shape and the image list; "
            "--allow-zero-blobs writes the table anyway with a neutral scale",
        )
    counts: dict[str, np.ndarray] = {b: np.zeros(2048, np.uint64) for b in blobs}
    live = [b for b in blobs if b not in zero]
    if histograms and live:
        t0 = time.perf_counter()
        workers = _Workers(devices, n, progress("build histogram", n))
        for group in _split(shards, len(devices)):
            workers.submit(
                lambda dev, group, **kw: capture.capture_histograms(
                    dev, model.param_path, model.bin_path, source.specs,
                    [path for path, _ in group], live, {b: float(absmax[b][0]) for b in live},
                    runtime=runtime, threads=threads, **kw,
                ),
                group,
            )
        for part in workers.results():
            for b in live:
                counts[b] = counts[b] + np.asarray(part[b], dtype=np.uint64)
        timings["histogram"] = time.perf_counter() - t0
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
    return hs, [path for path, _ in shards], timings


def _split(shards: Sequence[tuple[Path, int]], parts: int) -> list[list[tuple[Path, int]]]:
    """Contiguous groups of shards with about the same number of samples each."""
    total = sum(count for _, count in shards)
    groups: list[list[tuple[Path, int]]] = [[] for _ in range(max(1, parts))]
    seen = 0
    for shard in shards:
        index = min(len(groups) - 1, seen * len(groups) // max(total, 1))
        groups[index].append(shard)
        seen += shard[1]
    return [g for g in groups if g]


def _absmax_pass(
    model: Model,
    source: SampleSource,
    devices: Sequence[Device],
    blobs: Sequence[str],
    *,
    threads: int,
    runtime: str,
    shard_dir: Path,
    progress: Callable[[int, int], None],
) -> tuple[list[tuple[Path, int]], dict[str, tuple[np.float32, int]], dict[str, float]]:
    """Decode the samples into shards and run pass 1, overlapped: a worker thread decodes
    shard ``k+1`` while the devices run the abs-max jobs of earlier shards (small shards first,
    so the devices start early).  One job per shard; abs max is a max and
    ``elements_per_sample`` the last sample's, so the merged result is the one-job result.

    Timings: ``decode`` is the wait for the first shard, ``absmax`` the rest of the pass.
    """
    n = source.n_samples
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    shards: list[tuple[Path, int]] = []
    workers = _Workers(devices, n, progress)

    def job(dev: Device, shard_list: list[Path], **kw: Any) -> dict[str, tuple[np.float32, int]]:
        return capture.capture_absmax(
            dev, model.param_path, model.bin_path, source.specs, shard_list, blobs,
            runtime=runtime, threads=threads, **kw,
        )

    try:
        with capture.BackgroundShards(iter(source), source.specs, shard_dir,
                                      capture.growing_shard_size()) as produced:
            for shard, count in produced:
                if not shards:
                    timings["decode"] = time.perf_counter() - t0
                shards.append((shard, count))
                workers.submit(job, [shard])
    except BaseException:
        workers.close()
        raise
    if not shards:  # no sample at all: one job over no shard, as before
        timings["decode"] = time.perf_counter() - t0
        workers.submit(job, [])
    parts = workers.results()
    absmax = {
        b: (max((part[b][0] for part in parts), key=float), parts[-1][b][1]) for b in blobs
    }
    timings["absmax"] = time.perf_counter() - t0 - timings["decode"]
    return shards, absmax, timings


def table_from_histograms(model: Model, hs: HistogramSet, method: str) -> TableBuild:
    """Thresholds from measured statistics (no device): the offline half of calibrate."""
    if method == "kl" and hs.meta.get("histograms") is False:
        raise CalibrationError(
            "these statistics hold abs-max values only, KL needs the histograms",
            hint="re-run calibrate with --method kl, or pass --histograms-out with any method",
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


def refine_eq(
    model: Model,
    table: CalibrationTable,
    source: SampleSource,
    shards: Sequence[Path],
    device: Device,
    *,
    progress: ProgressFactory,
) -> tuple[CalibrationTable, list[EqLayerReport]]:
    """EQ as ncnn2table meant it (spec 2.9), starting from the KL table."""
    out = CalibrationTable(records={k: v.copy() for k, v in table.records.items()})
    reports: list[EqLayerReport] = []
    layers = model.calibrated_layers
    tick = progress("search eq scales", len(layers))
    for i, layer in enumerate(layers):
        ws, bs, report = eq_layer(model, out, layer, source, shards, device)
        reports.append(report)
        out.records[weight_key(layer.name)] = ws
        out.records[layer.name] = np.array([bs], dtype=np.float32)
        tick(i + 1, len(layers))
    return out, reports


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
    n_eq = min(source.n_samples, EQ_MAX_SAMPLES)
    ws0 = table.records[weight_key(layer.name)].astype(np.float32)
    bs0 = np.float32(table.records[layer.name][0])
    text, prefix = probe_model(layer, model.weights[layer.name])
    cands = np.stack([eq_candidates(np.float32(s)) for s in [*ws0, bs0]])
    common = dict(
        bottom=layer.bottoms[0], top=layer.tops[0], probe_param=text, probe_prefix=prefix,
        max_samples=n_eq,
    )
    res = capture.eq_search_layer(
        device, model.param_path, model.bin_path, source.specs, shards,
        candidates=cands, weight_scales=ws0, bottom_scale=bs0, **common,
    )
    chosen = [*ws0, bs0]
    for j in range(len(chosen)):
        k = pick_best(np.asarray(res.sim[j], dtype=np.float64))
        if k is not None:
            chosen[j] = cands[j, k]
    want_ws = np.array(chosen[:-1], dtype=np.float32)
    if not (
        np.array_equal(want_ws, np.asarray(res.weight_scales, np.float32))
        and np.float32(chosen[-1]) == np.float32(res.bottom_scale)
    ):
        raise ProtocolError(
            f"EQ on layer {layer.name}: the agent's choice disagrees with its own "
            "similarity sums",
            hint="the agent on the device is out of date; re-run to re-push it",
        )
    cos_kl = _layer_cosine(device, model, source, shards, layer, ws0, bs0, common)
    cos_eq = _layer_cosine(
        device, model, source, shards, layer, want_ws, np.float32(chosen[-1]), common
    )
    report = EqLayerReport(layer.name, cos_kl / n_eq, cos_eq / n_eq)
    return want_ws, np.float32(chosen[-1]), report


def _layer_cosine(
    device: Device,
    model: Model,
    source: SampleSource,
    shards: Sequence[Path],
    layer: Layer,
    ws: np.ndarray,
    bs: np.float32,
    common: dict[str, Any],
) -> float:
    """Sum over the EQ samples of the single-layer cosine with exactly these scales."""
    only = np.array([[s] for s in [*ws, bs]], dtype=np.float32)
    res = capture.eq_search_layer(
        device, model.param_path, model.bin_path, source.specs, shards,
        candidates=only, weight_scales=ws, bottom_scale=bs, **common,
    )
    return float(res.sim[-1][0])


def calibrate(
    model: Model,
    source: SampleSource,
    device: Device | Sequence[Device],
    *,
    method: str = "kl",
    threads: int = 1,
    runtime: str = "calibration",
    keep_histograms: bool = False,
    allow_zero_blobs: bool = False,
    progress: ProgressFactory | None = None,
) -> CalibrationRun:
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}", hint="use kl, aciq or eq")
    progress = progress or _no_progress
    devices = [device] if isinstance(device, Device) else list(device)
    if not devices:
        raise CalibrationError("no device to calibrate on")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = devices[0].hello()
    timings["connect"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="edgecal-shards-") as tmp:
        hs, shards, t = measure(
            model, source, devices,
            histograms=method != "aciq" or keep_histograms,
            threads=threads, runtime=runtime, shard_dir=Path(tmp), progress=progress,
            allow_zero_blobs=allow_zero_blobs,
        )
        timings.update(t)
        t0 = time.perf_counter()
        build = table_from_histograms(model, hs, "kl" if method == "eq" else method)
        table = build.table
        timings["thresholds"] = time.perf_counter() - t0
        eq_reports: list[EqLayerReport] = []
        if method == "eq":
            t0 = time.perf_counter()
            table, eq_reports = refine_eq(
                model, table, source, shards, devices[0], progress=progress
            )
            timings["eq"] = time.perf_counter() - t0
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
    )
