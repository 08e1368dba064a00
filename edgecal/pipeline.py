"""Orchestration: calibrate (abs-max pass, histogram pass, thresholds, EQ) and evaluate.

Everything here drives a :class:`edgecal.device.base.Device` and the pure core; it does no
printing (progress goes through a callback) and writes no user-visible file (the CLI does,
atomically).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
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


def measure(
    model: Model,
    source: SampleSource,
    device: Device,
    *,
    histograms: bool,
    threads: int,
    runtime: str,
    shard_dir: Path,
    progress: ProgressFactory,
    allow_zero_blobs: bool = False,
) -> tuple[HistogramSet, list[Path], dict[str, float]]:
    """Pass 1 (abs-max) and, when asked, pass 2 (histograms) on ``device``."""
    blobs = calibration_blobs(model)
    n = source.n_samples
    shards, absmax, timings = _absmax_pass(
        model, source, device, blobs, threads=threads, runtime=runtime, shard_dir=shard_dir,
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
    if histograms:
        t0 = time.perf_counter()
        live = [b for b in blobs if b not in zero]
        if live:
            counts.update(
                capture.capture_histograms(
                    device, model.param_path, model.bin_path, source.specs, shards, live,
                    {b: float(absmax[b][0]) for b in live},
                    runtime=runtime, threads=threads, progress=progress("build histogram", n),
                )
            )
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
    return hs, shards, timings


def _absmax_pass(
    model: Model,
    source: SampleSource,
    device: Device,
    blobs: Sequence[str],
    *,
    threads: int,
    runtime: str,
    shard_dir: Path,
    progress: Callable[[int, int], None],
) -> tuple[list[Path], dict[str, tuple[np.float32, int]], dict[str, float]]:
    """Decode the samples into shards and run pass 1, overlapped: a worker thread decodes
    shard ``k+1`` while the device runs the abs-max job of shard ``k`` (small shards first,
    so the device starts early).  One job per shard; abs max is a max and
    ``elements_per_sample`` the last sample's, so the merged result is the one-job result.

    Timings: ``decode`` is the wait for the first shard, ``absmax`` the rest of the pass.
    """
    n = source.n_samples
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    shards: list[Path] = []
    parts: list[dict[str, tuple[np.float32, int]]] = []
    done = 0
    with capture.BackgroundShards(iter(source), source.specs, shard_dir,
                                  capture.growing_shard_size()) as produced:
        for shard, count in produced:
            if not shards:
                timings["decode"] = time.perf_counter() - t0
            shards.append(shard)

            def shard_progress(d: int, total: int, offset: int = done) -> None:
                progress(offset + d, n)

            parts.append(capture.capture_absmax(
                device, model.param_path, model.bin_path, source.specs, [shard], blobs,
                runtime=runtime, threads=threads, progress=shard_progress,
            ))
            done += count
    if not parts:  # no sample at all: one job over no shard, as before
        timings["decode"] = time.perf_counter() - t0
        parts.append(capture.capture_absmax(
            device, model.param_path, model.bin_path, source.specs, [], blobs,
            runtime=runtime, threads=threads, progress=progress,
        ))
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
    n_eq = min(source.n_samples, EQ_MAX_SAMPLES)
    out = CalibrationTable(records={k: v.copy() for k, v in table.records.items()})
    reports: list[EqLayerReport] = []
    layers = model.calibrated_layers
    tick = progress("search eq scales", len(layers))
    for i, layer in enumerate(layers):
        key = weight_key(layer.name)
        ws0 = out.records[key].astype(np.float32)
        bs0 = np.float32(out.records[layer.name][0])
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
        reports.append(EqLayerReport(layer.name, cos_kl / n_eq, cos_eq / n_eq))
        out.records[key] = want_ws
        out.records[layer.name] = np.array([chosen[-1]], dtype=np.float32)
        tick(i + 1, len(layers))
    return out, reports


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
    device: Device,
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
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = device.hello()
    timings["connect"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="edgecal-shards-") as tmp:
        hs, shards, t = measure(
            model, source, device,
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
                model, table, source, shards, device, progress=progress
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
