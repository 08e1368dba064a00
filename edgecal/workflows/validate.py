"""``edgecal validate``: fp32 vs int8 on a device -- accuracy, agreement, output and per-layer
cosine/SQNR, latency.

The metric functions are pure (numpy in, floats out); :func:`validate` runs both models through
the agent shard by shard (fp32 then int8 on the same shard), so memory holds one shard's blobs.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.calib.weights import CALIBRATED_TYPES
from edgecal.device import capture
from edgecal.device.base import Device
from edgecal.errors import CalibrationError, ModelFormatError
from edgecal.inputs.model import Model
from edgecal.inputs.samples import SampleSource
from edgecal.ncnnfmt.param import ParamFile
from edgecal.quality.jsondoc import Obj
from edgecal.runs.rundir import json_safe
from edgecal.workflows.calibrate import ProgressFactory, _no_progress

#: Samples per run job: bounds host memory (two models' blobs of one shard).
SHARD_SIZE = 32


# ----------------------------------------------------------------------------- pure metrics


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two same-size arrays (float64); 1.0 when both are all zero, 0.0
    when only one is."""
    a64 = np.asarray(a, dtype=np.float64).ravel()
    b64 = np.asarray(b, dtype=np.float64).ravel()
    if a64.shape != b64.shape:
        raise ValueError(f"cosine of arrays of {a64.size} and {b64.size} values")
    na, nb = float(np.sqrt(a64 @ a64)), float(np.sqrt(b64 @ b64))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip((a64 @ b64) / na / nb, -1.0, 1.0))


def sqnr_from_energies(signal: float, noise: float) -> float:
    """``10*log10(signal / noise)`` in dB; +inf for no noise, -inf for noise on no signal."""
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def energies(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """``(sum ref^2, sum (ref - test)^2)`` in float64."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    t = np.asarray(test, dtype=np.float64).ravel()
    if r.shape != t.shape:
        raise ValueError(f"SQNR of arrays of {r.size} and {t.size} values")
    d = r - t
    return float(r @ r), float(d @ d)


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``ref``:
    ``10*log10(sum ref^2 / sum (ref - test)^2)`` dB."""
    return sqnr_from_energies(*energies(ref, test))


def dequantize(codes: np.ndarray, top_scale: float) -> np.ndarray:
    """Real values of raw int8 codes extracted from ncnn (spec 4.5): ``codes / top_scale``."""
    if not top_scale > 0.0 or not math.isfinite(top_scale):
        raise ValueError(f"top scale must be positive and finite, got {top_scale}")
    return (np.asarray(codes, dtype=np.float32) / np.float32(top_scale)).astype(np.float32)


def agreement(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """Fraction of samples whose top-1 classes agree."""
    pa, pb = np.asarray(a), np.asarray(b)
    if pa.shape != pb.shape or pa.size == 0:
        raise ValueError(f"agreement of {pa.size} and {pb.size} predictions")
    return float(np.mean(pa == pb))


def accuracy(pred: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    return agreement(pred, labels)


@dataclass
class PairStats:
    """Cosine and SQNR of ``test`` vs ``ref`` over images: per-image cosines and SQNRs, and
    the summed energies (the aggregate SQNR)."""

    cosines: list[float] = field(default_factory=list)
    sqnrs: list[float] = field(default_factory=list)
    signal: float = 0.0
    noise: float = 0.0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        s, n = energies(ref, test)
        self.signal += s
        self.noise += n
        self.cosines.append(cosine(ref, test))
        self.sqnrs.append(sqnr_from_energies(s, n))

    @property
    def cosine_mean(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else math.nan

    @property
    def cosine_min(self) -> float:
        return float(np.min(self.cosines)) if self.cosines else math.nan

    @property
    def sqnr_db(self) -> float:
        """SQNR of the summed energies over all images."""
        return sqnr_from_energies(self.signal, self.noise)

    @property
    def sqnr_mean_db(self) -> float:
        return float(np.mean(self.sqnrs)) if self.sqnrs else math.nan

    @property
    def sqnr_min_db(self) -> float:
        return float(np.min(self.sqnrs)) if self.sqnrs else math.nan


# ----------------------------------------------------------------------------- the models


@dataclass(frozen=True)
class QuantLayer:
    """A quantized layer of the int8 model: its top blob and, when requantize-fused
    (``8=1xx``: the top is int8 codes), the scale that dequantizes it."""

    name: str
    type: str
    top: str
    scale_term: int
    top_scale: float | None

    @property
    def requantized(self) -> bool:
        return self.scale_term > 100


def quantized_layers(pf: ParamFile, weights: dict[str, Any], source: str = "int8 model"
                     ) -> list[QuantLayer]:
    """Convolution/ConvolutionDepthWise/InnerProduct layers with ``8=`` (int8_scale_term)."""
    out: list[QuantLayer] = []
    for layer in pf.layers:
        if layer.type not in CALIBRATED_TYPES:
            continue
        term = layer.param_int(8, 0)
        if not term:
            continue
        scale: float | None = None
        if term > 100:
            rec = weights.get(layer.name, {}).get("top_scale")
            if rec is None or np.asarray(rec.values).size < 1:
                raise ModelFormatError(f"{source}: layer {layer.name} has 8={term} but no top "
                                       "scale in its .bin")
            scale = float(np.asarray(rec.values, dtype=np.float32).ravel()[0])
            if not (scale > 0.0 and math.isfinite(scale)):
                raise ModelFormatError(f"{source}: layer {layer.name} has top scale {scale}")
        out.append(QuantLayer(layer.name, layer.type, layer.tops[0], term, scale))
    return out


def check_same_network(fp32: ParamFile, int8: ParamFile, fp32_src: str, int8_src: str) -> None:
    """The int8 model must be the fp32 model's graph: same layers (type, name, blobs)."""
    a = [(x.type, x.name, tuple(x.bottoms), tuple(x.tops)) for x in fp32.layers]
    b = [(x.type, x.name, tuple(x.bottoms), tuple(x.tops)) for x in int8.layers]
    if a == b:
        return
    if len(a) != len(b):
        why = f"{len(b)} layers vs {len(a)}"
    else:
        i = next(k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        why = f"layer {i} is {b[i][0]} {b[i][1]} there, {a[i][0]} {a[i][1]} here"
    raise ModelFormatError(
        f"{int8_src} is not an int8 model of {fp32_src} ({why})",
        hint="pass the int8 model quantized from this fp32 model, or use --table",
    )


# ----------------------------------------------------------------------------- the run


@dataclass
class LayerFigures:
    name: str
    type: str
    top: str
    requantized: bool
    top_scale: float | None
    cosine_mean: float
    cosine_min: float
    sqnr_db: float

    @classmethod
    def from_dict(cls, doc: Any, where: str = "") -> LayerFigures:
        """One of ``results[i].layers`` of a validation document (:meth:`ValidationResult.
        to_dict`); :class:`Malformed` names the JSON path of a bad value."""
        o = Obj.of(doc, where)
        return cls(name=o.text("name"), type=o.text("type"), top=o.text("top"),
                   requantized=o.flag("requantized"), top_scale=o.opt_num("top_scale"),
                   cosine_mean=o.num("cosine_mean"), cosine_min=o.num("cosine_min"),
                   sqnr_db=o.num("sqnr_db"))


@dataclass
class ValidationResult:
    n_samples: int
    output_blob: str
    runtime: str
    threads: int
    top1_fp32: float | None
    top1_int8: float | None
    agreement: float
    cosine_mean: float
    cosine_min: float
    sqnr_mean_db: float
    sqnr_min_db: float
    latency_fp32_ms: float
    latency_int8_ms: float
    layers: list[LayerFigures]
    device: dict[str, Any] = field(default_factory=dict)
    #: The int8 model's output on every image, ``(n_samples, n_values)``: what cross-board
    #: consistency compares (not part of :meth:`to_dict`).
    int8_outputs: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("int8_outputs")
        return json_safe(d)


def validate(
    device: Device,
    fp32: Model,
    int8: Model,
    source: SampleSource,
    *,
    labels: Sequence[int] | None = None,
    runtime: str = "deployed",
    threads: int = 1,
    progress: ProgressFactory | None = None,
) -> ValidationResult:
    """Run both models on ``device`` over ``source``; see the module doc."""
    progress = progress or _no_progress
    check_same_network(fp32.param, int8.param, str(fp32.param_path), str(int8.param_path))
    output = fp32.output_blobs[0]
    qlayers = quantized_layers(int8.param, int8.weights, str(int8.bin_path))
    tops = [q.top for q in qlayers if q.top != output]
    blobs = [output, *tops]
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
        for shard in shards:
            runs = []
            for k, m in enumerate((fp32, int8)):
                outs, secs = capture.run_shard_timed(
                    device, m.param_path, m.bin_path, source.specs, shard, blobs,
                    runtime=runtime, threads=threads)
                runs.append(outs)
                lat[k].extend(secs)
            for a, b in zip(runs[0], runs[1], strict=True):
                if a[output].shape != b[output].shape:
                    raise ModelFormatError(
                        f"output {output} of sample {done} is {a[output].shape} in fp32 and "
                        f"{b[output].shape} in int8: the int8 model does not match the fp32 "
                        "model")
                if not np.isfinite(a[output]).all():
                    n_bad = int(a[output].size - np.count_nonzero(np.isfinite(a[output])))
                    raise CalibrationError(
                        f"{fp32.param_path}: the fp32 output {output} holds {n_bad} NaN/inf "
                        f"value(s) on sample {source.sample_names()[done]}: no figure can be "
                        "computed for it",
                        hint="check that sample (an overflow, a NaN input) or remove it from "
                        "the list")
                out_stats.add(a[output], b[output])
                int8_out.append(b[output].ravel())
                preds[0].append(int(np.argmax(a[output])))
                preds[1].append(int(np.argmax(b[output])))
                for q in qlayers:
                    ref, got = a[q.top], b[q.top]
                    if ref.shape != got.shape:
                        raise ModelFormatError(
                            f"blob {q.top} of layer {q.name} is {got.shape} in int8 and "
                            f"{ref.shape} in fp32: the int8 model does not match")
                    if q.requantized and q.top_scale is not None:
                        got = dequantize(got, q.top_scale)
                    layer_stats[q.name].add(ref, got)
                done += 1
                tick(done, n)
    top1_a = top1_b = None
    if labels is not None:
        top1_a, top1_b = accuracy(preds[0], labels), accuracy(preds[1], labels)
    layers = [
        LayerFigures(q.name, q.type, q.top, q.requantized, q.top_scale,
                     layer_stats[q.name].cosine_mean, layer_stats[q.name].cosine_min,
                     layer_stats[q.name].sqnr_db)
        for q in qlayers
    ]
    return ValidationResult(
        n_samples=done, output_blob=output, runtime=runtime, threads=threads,
        top1_fp32=top1_a, top1_int8=top1_b, agreement=agreement(preds[0], preds[1]),
        cosine_mean=out_stats.cosine_mean, cosine_min=out_stats.cosine_min,
        sqnr_mean_db=out_stats.sqnr_mean_db, sqnr_min_db=out_stats.sqnr_min_db,
        latency_fp32_ms=1000.0 * float(np.median(lat[0])),
        latency_int8_ms=1000.0 * float(np.median(lat[1])),
        layers=layers, device={"name": device.name},
        int8_outputs=np.stack(int8_out) if int8_out else None,
    )
