"""``edgecal validate``: fp32 vs int8 on a device -- accuracy, agreement, output and per-layer
cosine/SQNR, latency.

The figures and the records are pure, in ``edgecal.quality``; :func:`validate` runs both models
through the agent shard by shard (fp32 then int8 on the same shard, each timed alone).  Only the
outputs come back: the agent compares every quantized layer's top with the fp32 model's on the
device and answers four sums per image and layer (``run`` with ``compare``), so neither the link
nor the host's memory carries the activations.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.device import capture
from edgecal.device.base import Device
from edgecal.errors import AgentError, CalibrationError, ModelFormatError
from edgecal.inputs.model import Model
from edgecal.inputs.samples import SampleSource
from edgecal.quality.latency import latency_of
from edgecal.quality.metrics import PairStats, accuracy, agreement
from edgecal.quality.taskmetrics import Metric, Outputs
from edgecal.quality.validation import (
    LayerFigures,
    QuantLayer,
    ValidationResult,
    check_same_network,
    quantized_layers,
)
from edgecal.workflows.calibrate import ProgressFactory, _no_progress

#: Samples per run job: bounds host memory (two models' blobs of one shard).
SHARD_SIZE = 32


@dataclass(frozen=True)
class Reference:
    """The fp32 side of a comparison with int8: ``fp32`` run on ``device`` over ``source``
    (``labels``: its classes, for accuracy) with the runtime and its threads; ``metric``:
    the task metric to measure too (on all of the model's outputs), given ``metric_labels``."""

    device: Device
    fp32: Model
    source: SampleSource
    labels: Sequence[int] | None = None
    runtime: str = "deployed"
    threads: int = 1
    metric: Metric | None = None
    metric_labels: Sequence[Any] | None = None


def validate(
    reference: Reference, int8: Model, *, progress: ProgressFactory | None = None
) -> ValidationResult:
    """Run ``reference``'s fp32 model and ``int8`` on its device over its samples; see the
    module doc."""
    device, fp32, source = reference.device, reference.fp32, reference.source
    labels, runtime, threads = reference.labels, reference.runtime, reference.threads
    progress = progress or _no_progress
    check_same_network(fp32.param, int8.param, str(fp32.param_path), str(int8.param_path))
    output = fp32.output_blobs[0]
    qlayers = quantized_layers(int8.param, int8.weights, str(int8.bin_path))
    metric = reference.metric
    # every output with a metric, the first still first (the one timed)
    outputs = fp32.output_blobs if metric is not None else [output]
    # the layers' tops are compared on the device: only their sums come back
    compare = capture.Comparison(
        fp32.param_path,
        fp32.bin_path,
        [
            (q.top, q.top_scale if q.requantized and q.top_scale is not None else None)
            for q in qlayers
        ],
    )
    task: tuple[list[Outputs], list[Outputs]] = ([], [])
    out_stats = PairStats()
    layer_stats = {q.name: PairStats() for q in qlayers}
    preds: tuple[list[int], list[int]] = ([], [])
    int8_out: list[np.ndarray] = []
    lat: tuple[list[float], list[float]] = ([], [])
    n = source.n_samples
    tick = progress("validate", n)
    done = 0
    with tempfile.TemporaryDirectory(prefix="edgecal-validate-") as tmp:
        shards = capture.write_shards(iter(source), source.specs, Path(tmp), SHARD_SIZE)
        works = [
            capture.Workload.of(m, source.specs, outputs, runtime, threads) for m in (fp32, int8)
        ]
        for shard in shards:
            ref_outs, secs = capture.run_shard_timed(device, works[0].on(shard))
            lat[0].extend(secs)
            if not qlayers:  # an int8 model with every layer in fp32: nothing to compare
                outs, secs = capture.run_shard_timed(device, works[1].on(shard))
                sums = np.empty((len(outs), 0, 4))
            else:
                try:
                    outs, secs, sums = capture.run_shard_compared(
                        device, works[1].on(shard), compare
                    )
                except AgentError as e:
                    if e.kind == "BlobMismatch":
                        raise mismatch_error(e, qlayers, source.sample_names(), done) from None
                    raise
            lat[1].extend(secs)
            for s, (a, b) in enumerate(zip(ref_outs, outs, strict=True)):
                if a[output].shape != b[output].shape:
                    raise ModelFormatError(
                        f"output {output} of sample {done} is {a[output].shape} in fp32 and "
                        f"{b[output].shape} in int8: the int8 model does not match the fp32 "
                        "model"
                    )
                if not np.isfinite(a[output]).all():
                    n_bad = int(a[output].size - np.count_nonzero(np.isfinite(a[output])))
                    raise CalibrationError(
                        f"{fp32.param_path}: the fp32 output {output} holds {n_bad} NaN/inf "
                        f"value(s) on sample {source.sample_names()[done]}: no figure can be "
                        "computed for it",
                        hint="check that sample (an overflow, a NaN input) or remove it from "
                        "the list",
                    )
                out_stats.add(a[output], b[output])
                if metric is not None:
                    task[0].append({o: a[o] for o in outputs})
                    task[1].append({o: b[o] for o in outputs})
                int8_out.append(b[output].ravel())
                preds[0].append(int(np.argmax(a[output])))
                preds[1].append(int(np.argmax(b[output])))
                for j, q in enumerate(qlayers):
                    layer_stats[q.name].add_sums(*(float(x) for x in sums[s, j]))
                done += 1
                tick(done, n)
    top1_a = top1_b = None
    if labels is not None:
        top1_a, top1_b = accuracy(preds[0], labels), accuracy(preds[1], labels)
    layers = [
        LayerFigures(
            q.name,
            q.type,
            q.top,
            q.requantized,
            q.top_scale,
            layer_stats[q.name].cosine_mean,
            layer_stats[q.name].cosine_min,
            layer_stats[q.name].sqnr_db,
        )
        for q in qlayers
    ]
    lat_fp32, lat_int8 = latency_of(lat[0]), latency_of(lat[1])
    return ValidationResult(
        n_samples=done,
        output_blob=output,
        runtime=runtime,
        threads=threads,
        top1_fp32=top1_a,
        top1_int8=top1_b,
        agreement=agreement(preds[0], preds[1]),
        cosine_mean=out_stats.cosine_mean,
        cosine_min=out_stats.cosine_min,
        sqnr_mean_db=out_stats.sqnr_mean_db,
        sqnr_min_db=out_stats.sqnr_min_db,
        latency_fp32_ms=lat_fp32.median_ms if lat_fp32 else math.nan,
        latency_int8_ms=lat_int8.median_ms if lat_int8 else math.nan,
        latency_fp32=lat_fp32,
        latency_int8=lat_int8,
        layers=layers,
        device={"name": device.name},
        int8_outputs=_rows(int8_out) if int8_out else None,
        metric=metric(task[0], task[1], reference.metric_labels) if metric and done else None,
    )


def mismatch_error(
    e: AgentError, qlayers: Sequence[QuantLayer], names: Sequence[str], first: int
) -> ModelFormatError:
    """The agent's ``BlobMismatch`` as the error naming the layer and the sample."""
    blob = str(e.details.get("blob", ""))
    layer = next((q for q in qlayers if q.top == blob), None)
    sample = e.details.get("sample")
    at = first + sample if isinstance(sample, int) else -1

    def shape(key: str) -> tuple[object, ...]:
        value = e.details.get(key)
        return tuple(value) if isinstance(value, list) else ()

    return ModelFormatError(
        f"blob {blob}"
        + (f" of layer {layer.name}" if layer is not None else "")
        + f" is {shape('shape')} in int8 and {shape('ref_shape')} in fp32"
        + (f" on sample {names[at]}" if 0 <= at < len(names) else "")
        + ": the int8 model does not match the fp32 model",
        hint="make the int8 model from this fp32 model (edgecal quantize)",
    )


def _rows(outputs: list[np.ndarray]) -> np.ndarray:
    """Per-sample flat outputs as ``(n, values)`` rows; a dynamic model's outputs, whose size
    changes between samples, padded with zeros (the same padding on every board: cosines
    between boards are unchanged)."""
    width = max(o.size for o in outputs)
    if all(o.size == width for o in outputs):
        return np.stack(outputs)
    rows = np.zeros((len(outputs), width), dtype=np.float32)
    for i, o in enumerate(outputs):
        rows[i, : o.size] = o
    return rows
