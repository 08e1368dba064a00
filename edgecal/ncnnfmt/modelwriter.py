"""Rewrite a layer's param dict the way ncnn's ``tools/modelwriter.h`` does.

ModelWriter (used by ncnn2int8 and ncnnoptimize) writes, per known layer type, a fixed list of
keys in a fixed order, each only if it differs from the runtime default (``11..16`` only if
they differ from their w/left counterparts), ints with ``%d``, floats with ``%e``, arrays in the
old ``-233xx=n,...`` form.  Upstream silently drops every key it does not list (the Reshape
``12=``/``13=`` bug); here such keys are **kept**, appended in their original form.  Types with
no table here keep all their keys unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgecal.ncnnfmt.param import (
    Layer,
    ParamValue,
    float_array_value,
    float_value,
    format_e,
    int_array_value,
    int_value,
    string_value,
    to_float32,
)

FLT_MAX = to_float32(3.4028234663852886e38)

Default = int | float | str | Callable[[Callable[[int], float]], float]


@dataclass(frozen=True)
class _Entry:
    op: str  # "v" value, "p" pair (vs. ref key), "a" array, "s" string, "hack", "drop"
    pid: int
    fmt: str = "d"
    default: Default = 0
    ref: int = -1


def _v(pid: int, fmt: str = "d", default: Default = 0) -> _Entry:
    return _Entry("v", pid, fmt, default)


def _p(pid: int, ref: int) -> _Entry:
    return _Entry("p", pid, "d", 0, ref)


def _a(pid: int, fmt: str) -> _Entry:
    return _Entry("a", pid, fmt)


def _s(pid: int) -> _Entry:
    return _Entry("s", pid)


def _hack(pid: int) -> _Entry:
    return _Entry("hack", pid)


def _drop(pid: int) -> _Entry:
    """A key ModelWriter never writes because what it describes is re-expressed by the writer.

    MemoryData ``21`` (load_type): ModelWriter writes the data untagged float32 (the .bin
    walk then reads it raw), so the key must go with it.
    """
    return _Entry("drop", pid)


def _ref(k: int) -> str:
    return f"@{k}"


_KERNEL2D = [
    _v(1),
    _p(11, 1),
    _v(2, "d", 1),
    _p(12, 2),
    _v(3, "d", 1),
    _p(13, 3),
    _v(4),
    _p(14, 4),
    _p(15, 4),
    _p(16, 14),
]
_KERNEL1D = [_v(1), _v(2, "d", 1), _v(3, "d", 1), _v(4), _p(15, 4)]
_KERNEL3D = [
    _v(1),
    _p(11, 1),
    _p(21, 1),
    _v(2, "d", 1),
    _p(12, 2),
    _p(22, 2),
    _v(3, "d", 1),
    _p(13, 3),
    _p(23, 3),
    _v(4),
    _p(14, 4),
    _p(24, 4),
    _p(15, 4),
    _p(16, 14),
    _p(17, 24),
]
_ACT = [_v(9), _a(10, "e")]
_PAD = _v(18, "e", 0.0)  # pad_value of the convolutions
_GROUPED = [_v(5), _v(6), _v(7, "d", 1)]  # bias_term, weight_data_size, group: depthwise
_DECONV_OUT = [_v(18), _p(19, 18), _v(20), _p(21, 20)]
_DECONV1D_OUT = [_v(18), _v(20)]
_DECONV3D_OUT = [_v(18), _p(19, 18), _p(20, 18), _v(25), _p(26, 25), _p(27, 25)]


def _mha_scale(get: Callable[[int], float]) -> float:
    """``1.f / sqrtf(embed_dim / num_heads)`` in float32 (integer division first)."""
    head_dim = np.float32(int(get(0)) // max(int(get(1)), 1))
    return float(np.float32(1.0) / np.sqrt(head_dim))


WRITERS: dict[str, list[_Entry]] = {
    "BatchNorm": [_v(0), _v(1, "e", 0.0)],
    "Bias": [_v(0)],
    "BinaryOp": [_v(0), _v(1), _v(2, "e", 0.0)],
    "Clip": [_v(0, "e", -FLT_MAX), _v(1, "e", FLT_MAX)],
    "Concat": [_v(0)],
    "Convolution": [_v(0), *_KERNEL2D, _PAD, _v(5), _v(6), _v(8), *_ACT, _v(19)],
    "ConvolutionDepthWise": [_v(0), *_KERNEL2D, _PAD, *_GROUPED, _v(8), *_ACT, _v(19)],
    "Convolution1D": [_v(0), *_KERNEL1D, _PAD, _v(5), _v(6), *_ACT, _v(19)],
    "ConvolutionDepthWise1D": [_v(0), *_KERNEL1D, _PAD, *_GROUPED, *_ACT, _v(19)],
    "Convolution3D": [_v(0), *_KERNEL3D, _PAD, _v(5), _v(6), *_ACT],
    "ConvolutionDepthWise3D": [_v(0), *_KERNEL3D, _PAD, *_GROUPED, *_ACT],
    "Deconvolution": [_v(0), *_KERNEL2D, *_DECONV_OUT, _v(5), _v(6), *_ACT, _v(28)],
    "Deconvolution1D": [_v(0), *_KERNEL1D, *_DECONV1D_OUT, _v(5), _v(6), *_ACT, _v(28)],
    "Deconvolution3D": [_v(0), *_KERNEL3D, *_DECONV3D_OUT, _v(5), _v(6), *_ACT],
    "DeconvolutionDepthWise1D": [_v(0), *_KERNEL1D, *_DECONV1D_OUT, *_GROUPED, *_ACT, _v(28)],
    "DeconvolutionDepthWise3D": [_v(0), *_KERNEL3D, *_DECONV3D_OUT, *_GROUPED, *_ACT],
    "DeconvolutionDepthWise": [_v(0), *_KERNEL2D, *_DECONV_OUT, *_GROUPED, *_ACT, _v(28)],
    "DeformableConv2D": [_v(0), *_KERNEL2D, _v(5), _v(6), *_ACT],
    "Dropout": [_v(0, "e", 1.0)],
    "Eltwise": [_v(0), _a(1, "e")],
    "Embed": [_v(0), _v(1), _v(2), _v(3), _v(18)],
    "GELU": [_v(0)],
    "Gemm": [_v(0, "e", 1.0), _v(1, "e", 1.0)]
    + [_v(i) for i in range(2, 15)]
    + [_v(18), _v(20), _v(21), _v(22)],
    "GroupNorm": [_v(0, "d", 1), _v(1), _v(2, "e", 0.001), _v(3, "d", 1)],
    "GRU": [_v(0), _v(1), _v(2), _v(8)],
    "HardSigmoid": [_v(0, "e", 0.2), _v(1, "e", 0.5)],
    "HardSwish": [_v(0, "e", 0.2), _v(1, "e", 0.5)],
    "InnerProduct": [_v(0), _v(1), _v(2), _v(8), *_ACT],
    "Input": [_v(0), _v(1), _v(2)],
    "InstanceNorm": [_v(0), _v(1, "e", 0.001), _v(2, "d", 1)],
    "Interp": [_v(0), _v(1, "e", 1.0), _v(2, "e", 1.0), _v(3), _v(4), _v(5), _v(6), _s(9)],
    "LayerNorm": [_v(0), _v(1, "e", 0.001), _v(2, "d", 1)],
    "LSTM": [_v(0), _v(1), _v(2), _v(3, "d", _ref(0)), _v(8)],
    "MatMul": [_v(0)],
    "MemoryData": [_v(0), _v(1), _v(2), _v(11), _drop(21)],
    "MultiHeadAttention": [
        _v(0),
        _v(1, "d", 1),
        _v(2),
        _v(3, "d", _ref(0)),
        _v(4, "d", _ref(0)),
        _v(5),
        _v(6, "e", _mha_scale),
        _v(18),
    ],
    "Padding": [_v(0), _v(1), _v(2), _v(3), _v(4), _v(5, "e", 0.0), _v(6), _v(7), _v(8)],
    "Permute": [_v(0)],
    "Pooling": [
        _v(0),
        _v(1),
        _p(11, 1),
        _v(2, "d", 1),
        _p(12, 2),
        _v(3),
        _p(13, 3),
        _p(14, 3),
        _p(15, 13),
        _v(4),
        _v(5),
        _v(6),
        _v(7),
        _v(8),
        _p(18, 8),
    ],
    "Pooling1D": [_v(0), _v(1), _v(2, "d", 1), _v(3), _p(14, 3), _v(4), _v(5), _v(6), _v(7), _v(8)],
    "PReLU": [_v(0)],
    "ReLU": [_v(0, "e", 0.0)],
    "Reshape": [_v(0, "d", -233), _v(1, "d", -233), _v(11, "d", -233), _v(2, "d", -233), _s(6)],
    "RMSNorm": [_v(0), _v(1, "e", 0.001), _v(2, "d", 1)],
    "RNN": [_v(0), _v(1), _v(2), _v(8)],
    "Scale": [_v(0), _v(1)],
    "SDPA": [_v(5), _v(6, "e", 0.0), _v(7), _v(18)],
    "Slice": [_a(0, "d"), _v(1)],
    "Softmax": [_v(0), _hack(1)],
    "UnaryOp": [_v(0)],
}


def _resolver(layer: Layer, entries: list[_Entry]) -> Callable[[int], float]:
    defaults: dict[int, Default] = {}
    for e in entries:
        if e.op == "v":
            defaults[e.pid] = e.default
        elif e.op == "p":
            defaults[e.pid] = _ref(e.ref)

    def get(pid: int) -> float:
        pv = layer.params.get(pid)
        if pv is not None and pv.kind in ("int", "float"):
            return pv.value  # type: ignore[return-value]
        d = defaults.get(pid, 0)
        if isinstance(d, str):
            return get(int(d[1:]))
        if callable(d):
            return d(get)
        return d

    return get


def _scalar(fmt: str, value: float) -> ParamValue:
    return int_value(int(value)) if fmt == "d" else float_value(value)


def _same(fmt: str, a: float, b: float) -> bool:
    if fmt == "d":
        return int(a) == int(b)
    return format_e(to_float32(a)) == format_e(to_float32(b)) and to_float32(a) == to_float32(b)


def modelwriter_params(layer: Layer) -> Layer:
    """A copy of ``layer`` whose params are in ModelWriter form (order, defaults dropped)."""
    entries = WRITERS.get(layer.type)
    out = Layer(layer.type, layer.name, list(layer.bottoms), list(layer.tops))
    hints = layer.params.get(30)
    if hints is not None:
        out.set_param(30, _shape_hints(hints, len(layer.tops)))
    if entries is None:
        for pid, param in layer.params.items():
            if pid != 30:
                out.params[pid] = param
                if pid in layer.param_keys:
                    out.param_keys[pid] = layer.param_keys[pid]
        return out
    get = _resolver(layer, entries)
    covered: set[int] = {30}
    for e in entries:
        covered.add(e.pid)
        pv = layer.params.get(e.pid)
        if e.op == "v":
            value = get(e.pid)
            d = e.default
            default = get(int(d[1:])) if isinstance(d, str) else d(get) if callable(d) else d
            if not _same(e.fmt, value, default):
                out.set_param(e.pid, _scalar(e.fmt, value))
        elif e.op == "p":
            if int(get(e.pid)) != int(get(e.ref)):
                out.set_param(e.pid, int_value(int(get(e.pid))))
        elif e.op == "a":
            if pv is not None and pv.is_array and pv.value:
                vals = pv.value
                new = float_array_value(vals) if e.fmt == "e" else int_array_value(vals)  # type: ignore[arg-type]
                out.set_param(e.pid, new)
        elif e.op == "s":
            if pv is not None and pv.kind == "string" and pv.value != "":
                out.set_param(e.pid, string_value(str(pv.value)))
        elif e.op == "hack":
            _apply_hack(layer, out, get)
    for pid, pv in layer.params.items():
        if pid not in covered:
            out.params[pid] = pv
            if pid in layer.param_keys:
                out.param_keys[pid] = layer.param_keys[pid]
    return out


def _apply_hack(layer: Layer, out: Layer, get: Callable[[int], float]) -> None:
    if layer.type == "Softmax" and int(get(0)) != 0:
        out.set_param(1, int_value(1))


def _shape_hints(pv: ParamValue, ntop: int) -> ParamValue:
    """Shape hints are kept as given (4 or 5 values per top), never re-derived."""
    del ntop
    return pv
