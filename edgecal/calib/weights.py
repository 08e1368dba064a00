"""Weight scales exactly as ncnn2table computes them (spec 2.10, 2.8).

* ``Convolution`` / ``ConvolutionDepthWise`` / ``InnerProduct`` (only with a calibration
  dataset): one scale per output channel (per group for depthwise).  ``kl``/``eq``:
  ``127/absmax`` (``31/absmax`` for a 3x3, dilation 1, stride 1 Convolution: ncnn's int8
  winograd F43 needs 6-bit weights); ``aciq``: ``127/clip(absmax, K, 8)`` (``31/clip(.., 6)``).
* Static scales (always): ``Embed`` (one), ``MultiHeadAttention`` (q, k, v per row, out one),
  ``RNN``/``LSTM``/``GRU`` (``weight_xc`` and ``weight_hc`` per row), ``absmax == 0 -> 1``.

Absmax is ``std::max(absmax, fabs(w))`` over the weights as loaded (fp16-stored weights are
already decoded to their fp16 values): NaN is ignored.  Where ncnn2table would write ``inf``
(an all-zero channel) this writes :data:`ZERO_GUARD_SCALE` and a warning; the int8 result is
the same because all-zero weights quantize to 0 at any finite scale (output = bias).  A channel
whose weights are not zero but denormal (``127 / absmax`` overflows float32, e.g. all ~1e-40)
gets the same guard, also for the static scales, and a warning that says what they are: ncnn
runs with denormals flushed to zero, so they are zero to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecal.calib.aciq import aciq_clip
from edgecal.calib.methods import METHODS, Method, parse_method
from edgecal.calib.scales import ZERO_GUARD_SCALE
from edgecal.errors import CalibrationError
from edgecal.ncnnfmt.param import Layer

#: The layers ncnn2table calibrates: per-channel weight scales and an input-blob scale.
CALIBRATED_TYPES = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
#: The layers with static weight scales, in the order ncnn2table writes their sections.
STATIC_TYPES = ("Embed", "MultiHeadAttention", "RNN", "LSTM", "GRU")

F32 = np.float32


@dataclass(frozen=True)
class WeightScales:
    """Scales of one layer: ``params[i]`` is the table record ``<layer>_param_<i>``."""

    layer: str
    type: str
    params: tuple[np.ndarray, ...]
    warnings: list[str] = field(default_factory=list)


def _values(layer: Layer, weights: Mapping[str, Any], name: str) -> np.ndarray:
    rec = weights.get(name)
    if rec is None:
        raise CalibrationError(
            f"layer {layer.name!r} ({layer.type}): no {name!r} weights",
            hint="a layer with dynamic weights (19=1) cannot be calibrated",
        )
    vals = getattr(rec, "values", rec)
    arr = np.asarray(vals)
    if arr.dtype.kind != "f":
        raise CalibrationError(
            f"layer {layer.name!r}: {name!r} weights are stored as {arr.dtype} (already int8?)",
            hint="calibrate the fp32/fp16 model, not an int8 one",
        )
    return arr.astype(np.float32).reshape(-1)


def _row_absmax(w: np.ndarray, rows: int, layer: Layer, what: str) -> np.ndarray:
    """``absmax`` of each of ``rows`` chunks of ``size // rows`` (C's integer division)."""
    if rows <= 0:
        raise CalibrationError(f"layer {layer.name!r}: {what} has {rows} rows")
    k = w.size // rows
    if k == 0:
        return np.zeros(rows, dtype=F32)
    a = np.abs(w[: rows * k].reshape(rows, k))
    m = np.fmax.reduce(a, axis=1)  # NaN ignored like std::max(absmax, fabs(nan))
    return np.where(np.isnan(m), F32(0), m).astype(F32)


def _bad_scale_warning(layer: Layer, label: str, absmax: float, inf_from: str) -> str:
    """The warning for a non-finite scale replaced by :data:`ZERO_GUARD_SCALE`."""
    guard = f"{float(ZERO_GUARD_SCALE):g}"
    if absmax > 0:
        return (
            f"layer {layer.name!r}: {label} weights are all below 1e-30 (denormal, largest "
            f"|w| = {absmax:.3g}; ncnn flushes them to zero); {inf_from} would write scale inf, "
            f"using {guard} (they quantize to 0)"
        )
    return (
        f"layer {layer.name!r}: {label} is all zero; {inf_from} would write scale inf, using "
        f"{guard} (its int8 weights are 0 either way, output = bias)"
    )


def _is_6bit(layer: Layer) -> bool:
    kw = layer.param_int(1, 0)
    kh = layer.param_int(11, kw)
    dw = layer.param_int(2, 1)
    dh = layer.param_int(12, dw)
    sw = layer.param_int(3, 1)
    sh = layer.param_int(13, sw)
    return kw == 3 and kh == 3 and dw == 1 and dh == 1 and sw == 1 and sh == 1


def conv_weight_scales(layer: Layer, weights: Mapping[str, Any], method: str) -> WeightScales:
    """``<layer>_param_0`` of a Convolution, ConvolutionDepthWise or InnerProduct."""
    rule = METHODS[parse_method(method)].blob_rule
    if layer.type not in CALIBRATED_TYPES:
        raise CalibrationError(f"layer {layer.name!r}: {layer.type} has no per-channel scales")
    w = _values(layer, weights, "weight")
    if layer.type == "ConvolutionDepthWise":
        rows, unit = layer.param_int(7, 1), "group"
    else:
        rows, unit = layer.param_int(0, 0), "channel"
    absmax = _row_absmax(w, rows, layer, "weight")
    k = w.size // rows
    bits6 = layer.type == "Convolution" and _is_6bit(layer)
    qmax = F32(31) if bits6 else F32(127)
    with np.errstate(divide="ignore", over="ignore"):
        if rule is Method.ACIQ:
            thr = np.array([aciq_clip(a, k, 6 if bits6 else 8) for a in absmax], dtype=F32)
        else:
            thr = absmax
        scales = (qmax / thr).astype(F32)
    warnings: list[str] = []
    for n in np.flatnonzero(~np.isfinite(scales)).tolist():
        warnings.append(
            _bad_scale_warning(layer, f"weight {unit} {n}", float(absmax[n]), "ncnn2table")
        )
        scales[n] = ZERO_GUARD_SCALE
    if rule is Method.ACIQ and k == 1:
        warnings.append(
            f"layer {layer.name!r}: one weight per {unit}; ACIQ's clip is infinite (N=1) and "
            f"the scale 0, as in ncnn2table: at run time the output is the bias only"
        )
    return WeightScales(layer.name, layer.type, (scales,), warnings)


def _guarded(absmax: np.ndarray) -> np.ndarray:
    """``absmax == 0.f ? 1.f : 127 / absmax`` per element (denormal absmax: see module doc)."""
    with np.errstate(divide="ignore", over="ignore"):
        s = F32(127) / absmax.astype(F32)
    return np.where(absmax == 0, F32(1), s).astype(F32)


def _static(
    layer: Layer, weights: Mapping[str, Any], name: str, rows: int, warnings: list[str]
) -> np.ndarray:
    """Guarded per-row scales of one static weight; a denormal row warns and gets the guard."""
    absmax = _row_absmax(_values(layer, weights, name), rows, layer, name)
    scales = _guarded(absmax)
    for n in np.flatnonzero(~np.isfinite(scales)).tolist():
        label = f"{name} row {n}" if rows > 1 else name
        warnings.append(_bad_scale_warning(layer, label, float(absmax[n]), "ncnn2table"))
        scales[n] = ZERO_GUARD_SCALE
    return scales


def static_weight_scales(layer: Layer, weights: Mapping[str, Any]) -> WeightScales:
    """Embed, MultiHeadAttention, RNN, LSTM, GRU scales (computed even without a dataset)."""
    t = layer.type
    warnings: list[str] = []
    if t == "Embed":
        params: tuple[np.ndarray, ...] = (_static(layer, weights, "weight", 1, warnings),)
    elif t == "MultiHeadAttention":
        embed_dim = layer.param_int(0, 0)
        q, k, v = (
            _static(layer, weights, n, embed_dim, warnings)
            for n in ("q_weight", "k_weight", "v_weight")
        )
        out = _static(layer, weights, "out_weight", 1, warnings)
        params = (q, k, v, out)
    elif t in ("RNN", "LSTM", "GRU"):
        n = layer.param_int(0, 0)
        dirs = 2 if layer.param_int(2, 0) == 2 else 1
        if t == "RNN":
            rows = n * dirs
        elif t == "LSTM":
            rows = layer.param_int(3, n) * 4 * dirs
        else:
            rows = n * 3 * dirs
        params = tuple(
            _static(layer, weights, name, rows, warnings) for name in ("weight_xc", "weight_hc")
        )
    else:
        raise CalibrationError(f"layer {layer.name!r}: {t} has no static weight scales")
    return WeightScales(layer.name, t, params, warnings)


def weight_scales(
    layer: Layer, weights: Mapping[str, Any], method: str | Method = Method.KL
) -> WeightScales | None:
    """Dispatch on the layer type; ``None`` for layers ncnn2table does not scale."""
    if layer.type in CALIBRATED_TYPES:
        return conv_weight_scales(layer, weights, method)
    if layer.type in STATIC_TYPES:
        return static_weight_scales(layer, weights)
    return None
