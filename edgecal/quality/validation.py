"""What ``edgecal validate`` measures and writes: the int8 model's quantized layers, the
per-board figures (:class:`ValidationResult`) and the validation document (:class:`ValidationDoc`,
``validation.json``), each with one ``to_dict``/``from_dict`` (pure)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgecal.calib.weights import CALIBRATED_TYPES
from edgecal.errors import ModelFormatError
from edgecal.ncnnfmt.param import ParamFile
from edgecal.quality.jsondoc import Obj
from edgecal.quality.rundoc import json_safe


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
