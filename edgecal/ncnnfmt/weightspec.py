"""What each ncnn layer type reads from the ``.bin``, in ``load_model`` order.

Derived from ncnn's ``src/layer/*.cpp`` ``load_model`` (read, not copied).  A record is either
*tagged* (``mb.load(..., 0)``: a 4-byte storage tag, then data) or *raw* (``mb.load(..., 1)``:
untagged float32).  A layer type that is neither described here nor known to be weightless is
refused with :class:`UnsupportedLayerError`, so an unknown type can never cause a silent misread.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecal.errors import UnsupportedLayerError
from edgecal.ncnnfmt.param import Layer


@dataclass(frozen=True)
class RecordSpec:
    name: str
    tagged: bool
    count: int


# Layer types whose load_model reads nothing.
WEIGHTLESS_TYPES: frozenset[str] = frozenset(
    [
        "AbsVal",
        "ArgMax",
        "BNLL",
        "BinaryOp",
        "Cast",
        "CELU",
        "Clip",
        "Concat",
        "CopyTo",
        "Crop",
        "CumulativeSum",
        "DeepCopy",
        "DetectionOutput",
        "Diag",
        "Dropout",
        "ELU",
        "Einsum",
        "Eltwise",
        "Erf",
        "Exp",
        "ExpandDims",
        "Flatten",
        "Flip",
        "Fold",
        "GELU",
        "GLU",
        "GridSample",
        "HardSigmoid",
        "HardSwish",
        "Input",
        "InstanceNormNoAffine",
        "Interp",
        "LRN",
        "Log",
        "MVN",
        "MatMul",
        "Mish",
        "Noop",
        "PSROIPooling",
        "Packing",
        "Permute",
        "PixelShuffle",
        "Pooling",
        "Pooling1D",
        "Pooling3D",
        "Power",
        "PriorBox",
        "Proposal",
        "ROIAlign",
        "ROIPooling",
        "ReLU",
        "Reduction",
        "Reorg",
        "Reshape",
        "RotaryEmbed",
        "SDPA",
        "SELU",
        "Shrink",
        "ShuffleChannel",
        "Sigmoid",
        "Slice",
        "Softmax",
        "Softplus",
        "Split",
        "Squeeze",
        "StatisticsPooling",
        "Swish",
        "TanH",
        "Threshold",
        "Tile",
        "UnaryOp",
        "Unfold",
        "YoloDetectionOutput",
        "Yolov3DetectionOutput",
    ]
)

_CONV_TYPES = frozenset(
    [
        "Convolution1D",
        "Convolution3D",
        "ConvolutionDepthWise1D",
        "ConvolutionDepthWise3D",
        "Deconvolution",
        "DeconvolutionDepthWise",
        "Deconvolution1D",
        "Deconvolution3D",
        "DeconvolutionDepthWise1D",
        "DeconvolutionDepthWise3D",
        "DeformableConv2D",
    ]
)
# The param that switches a type to dynamic weights (weights come from a second input blob, so
# load_model reads nothing).  Only these types have one: ModelWriter writes 19/28 for exactly
# them, and pyncnn 1.0.20261020 ignores 19=/28= on Convolution3D (it still reads its weights).
_DYNAMIC_KEY = {
    "Convolution1D": 19,
    "ConvolutionDepthWise1D": 19,
    "Deconvolution": 28,
    "DeconvolutionDepthWise": 28,
    "Deconvolution1D": 28,
    "DeconvolutionDepthWise1D": 28,
}


def _w(name: str, count: int) -> RecordSpec:
    return RecordSpec(name, True, count)


def _r(name: str, count: int) -> RecordSpec:
    return RecordSpec(name, False, count)


def _convolution(layer: Layer) -> list[RecordSpec]:
    if layer.param_int(19, 0):
        return []
    num_output = layer.param_int(0, 0)
    specs = [_w("weight", layer.param_int(6, 0))]
    if layer.param_int(5, 0):
        specs.append(_r("bias", num_output))
    term = layer.param_int(8, 0)
    if term:
        specs += [_r("weight_scales", num_output), _r("bottom_scale", 1)]
    if term > 100:
        specs.append(_r("top_scale", 1))
    return specs


def _convolution_dw(layer: Layer) -> list[RecordSpec]:
    if layer.param_int(19, 0):
        return []
    num_output = layer.param_int(0, 0)
    group = layer.param_int(7, 1)
    specs = [_w("weight", layer.param_int(6, 0))]
    if layer.param_int(5, 0):
        specs.append(_r("bias", num_output))
    term = layer.param_int(8, 0)
    if term in (1, 101):
        specs += [_r("weight_scales", group), _r("bottom_scale", 1)]
    elif term in (2, 102):
        specs += [_r("weight_scales", 1), _r("bottom_scale", 1)]
    if term > 100:
        specs.append(_r("top_scale", 1))
    return specs


def _innerproduct(layer: Layer) -> list[RecordSpec]:
    num_output = layer.param_int(0, 0)
    specs = [_w("weight", layer.param_int(2, 0))]
    if layer.param_int(1, 0):
        specs.append(_r("bias", num_output))
    if layer.param_int(8, 0):
        specs += [_r("weight_scales", num_output), _r("bottom_scale", 1)]
    return specs


def _other_conv(layer: Layer) -> list[RecordSpec]:
    dynamic_key = _DYNAMIC_KEY.get(layer.type)
    if dynamic_key is not None and layer.param_int(dynamic_key, 0):
        return []
    specs = [_w("weight", layer.param_int(6, 0))]
    if layer.param_int(5, 0):
        specs.append(_r("bias", layer.param_int(0, 0)))
    return specs


def _embed(layer: Layer) -> list[RecordSpec]:
    specs = [_w("weight", layer.param_int(3, 0))]
    if layer.param_int(2, 0):
        specs.append(_r("bias", layer.param_int(0, 0)))
    if layer.param_int(18, 0):
        specs.append(_r("weight_scales", 1))
    return specs


def _dirs(layer: Layer) -> int:
    return 2 if layer.param_int(2, 0) == 2 else 1


def _rnn(layer: Layer) -> list[RecordSpec]:
    n, d = layer.param_int(0, 0), _dirs(layer)
    specs = [
        _w("weight_xc", layer.param_int(1, 0)),
        _w("bias_c", n * d),
        _w("weight_hc", n * n * d),
    ]
    if layer.param_int(8, 0):
        specs += [_r("weight_xc_scales", n * d), _r("weight_hc_scales", n * d)]
    return specs


def _lstm(layer: Layer) -> list[RecordSpec]:
    n, d = layer.param_int(0, 0), _dirs(layer)
    hidden = layer.param_int(3, n)
    specs = [
        _w("weight_xc", layer.param_int(1, 0)),
        _w("bias_c", hidden * 4 * d),
        _w("weight_hc", n * hidden * 4 * d),
    ]
    if n != hidden:
        specs.append(_w("weight_hr", hidden * n * d))
    if layer.param_int(8, 0):
        specs += [_r("weight_xc_scales", hidden * 4 * d), _r("weight_hc_scales", hidden * 4 * d)]
    return specs


def _gru(layer: Layer) -> list[RecordSpec]:
    n, d = layer.param_int(0, 0), _dirs(layer)
    specs = [
        _w("weight_xc", layer.param_int(1, 0)),
        _w("bias_c", n * 4 * d),
        _w("weight_hc", n * n * 3 * d),
    ]
    if layer.param_int(8, 0):
        specs += [_r("weight_xc_scales", n * 3 * d), _r("weight_hc_scales", n * 3 * d)]
    return specs


def _mha(layer: Layer) -> list[RecordSpec]:
    embed_dim = layer.param_int(0, 0)
    wds = layer.param_int(2, 0)
    kdim = layer.param_int(3, embed_dim)
    vdim = layer.param_int(4, embed_dim)
    qdim = wds // embed_dim if embed_dim else 0
    specs = [
        _w("q_weight", embed_dim * qdim),
        _r("q_bias", embed_dim),
        _w("k_weight", embed_dim * kdim),
        _r("k_bias", embed_dim),
        _w("v_weight", embed_dim * vdim),
        _r("v_bias", embed_dim),
        _w("out_weight", qdim * embed_dim),
        _r("out_bias", qdim),
    ]
    if layer.param_int(18, 0):
        specs += [
            _r("q_weight_scales", embed_dim),
            _r("k_weight_scales", embed_dim),
            _r("v_weight_scales", embed_dim),
            _r("out_weight_scales", 1),
        ]
    return specs


def gemm_c_count(layer: Layer) -> int:
    m, n = layer.param_int(7, 0), layer.param_int(8, 0)
    return {0: 1, 1: m, 2: m, 3: m * n, 4: n}.get(layer.param_int(10, 0), 0)


def _gemm(layer: Layer) -> list[RecordSpec]:
    ca, cb, cc = layer.param_int(4, 0), layer.param_int(5, 0), layer.param_int(6, 0)
    m, n, k = layer.param_int(7, 0), layer.param_int(8, 0), layer.param_int(9, 0)
    specs = []
    if ca == 1:
        specs.append(_w("A", m * k))
    if cb == 1:
        specs.append(_w("B", n * k))
    if cc == 1 and layer.param_int(10, 0) != -1:
        specs.append(_w("C", gemm_c_count(layer)))
    if layer.param_int(18, 0):
        if ca == 1:
            specs.append(_r("A_scales", m))
        if cb == 1:
            specs.append(_r("B_scale", 1))
    return specs


def _affine(layer: Layer, size_id: int, affine_id: int, with_beta: bool = True) -> list[RecordSpec]:
    if not layer.param_int(affine_id, 1):
        return []
    size = layer.param_int(size_id, 0)
    return [_r("gamma", size), _r("beta", size)] if with_beta else [_r("gamma", size)]


def _memorydata(layer: Layer) -> list[RecordSpec]:
    w, h, d, c = (layer.param_int(i, 0) for i in (0, 1, 11, 2))
    if d:
        count = w * h * d * c
    elif c:
        count = w * h * c
    elif h:
        count = w * h
    elif w:
        count = w
    else:
        return []
    return [RecordSpec("data", layer.param_int(21, 1) == 0, count)]


def _scale(layer: Layer) -> list[RecordSpec]:
    size = layer.param_int(0, 0)
    if size == -233:
        return []
    specs = [_r("scale", size)]
    if layer.param_int(1, 0):
        specs.append(_r("bias", size))
    return specs


def _optional(name: str, count: int) -> list[RecordSpec]:
    return [_r(name, count)] if count > 0 else []


def record_specs(layer: Layer) -> list[RecordSpec]:
    """The records ``layer`` reads from the .bin, in order (empty for weightless layers)."""
    t = layer.type
    if t == "Convolution":
        return _convolution(layer)
    if t == "ConvolutionDepthWise":
        return _convolution_dw(layer)
    if t == "InnerProduct":
        return _innerproduct(layer)
    if t in _CONV_TYPES:
        return _other_conv(layer)
    simple = {
        "Embed": _embed,
        "RNN": _rnn,
        "LSTM": _lstm,
        "GRU": _gru,
        "MultiHeadAttention": _mha,
        "Gemm": _gemm,
        "MemoryData": _memorydata,
        "Scale": _scale,
    }
    if t in simple:
        return simple[t](layer)
    if t == "BatchNorm":
        ch = layer.param_int(0, 0)
        return [_r("slope", ch), _r("mean", ch), _r("var", ch), _r("bias", ch)]
    if t == "Bias":
        return [_r("bias", layer.param_int(0, 0))]
    if t == "PReLU":
        return [_r("slope", layer.param_int(0, 0))]
    if t == "LayerNorm":
        return _affine(layer, 0, 2)
    if t == "GroupNorm":
        return _affine(layer, 1, 3)
    if t == "InstanceNorm":
        return _affine(layer, 0, 2)
    if t == "RMSNorm":
        return _affine(layer, 0, 2, with_beta=False)
    if t == "Quantize":
        return [_r("scale", layer.param_int(0, 1))]
    if t == "Dequantize":
        return [_r("scale", layer.param_int(0, 1)), *_optional("bias", layer.param_int(1, 0))]
    if t == "Requantize":
        return [
            _r("scale_in", layer.param_int(0, 1)),
            _r("scale_out", layer.param_int(1, 1)),
            *_optional("bias", layer.param_int(2, 0)),
        ]
    if t == "Normalize":
        return [_r("scale", layer.param_int(3, 0))]
    if t == "Padding":
        return _optional("per_channel_pad", layer.param_int(6, 0))
    if t in WEIGHTLESS_TYPES:
        return []
    raise UnsupportedLayerError(
        f"layer {layer.name!r} has type {t!r}, whose .bin layout edgecal does not know",
        hint="only layer types with a known load_model order can be read safely",
    )
