"""The .param/.bin readers and writers on real single-layer models (tests/data/layers).

For every fixture: the .param text round-trips, the .bin walk consumes the file exactly with the
record sizes worked out by hand from the torch shapes, re-encoding the decoded records gives the
file back byte for byte, and a forward pass in numpy with the *decoded* weights matches what
pyncnn computes from the same files (so a record read at the wrong offset, in the wrong order or
with the wrong shape shows up as a numeric mismatch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ncnn
import numpy as np
import pytest

from edgecal.errors import ModelFormatError
from edgecal.ncnnfmt.modelbin import LayerWeights, read_modelbin, write_records
from edgecal.ncnnfmt.param import ParamFile, parse_param, render_param

LAYERS = Path(__file__).resolve().parents[1] / "data" / "layers"
MODELS = sorted(p.stem for p in LAYERS.glob("*.param"))

# Record sizes (element counts) per model, from the torch shapes, not from edgecal.
# b=bidirectional: RNN/GRU/LSTM records carry a leading direction axis.
_LSTM = {"weight_xc": 4 * 4 * 5, "bias_c": 4 * 4, "weight_hc": 4 * 4 * 4}
_LSTM_PROJ = {
    "weight_xc": 2 * 24 * 5,
    "bias_c": 2 * 4 * 6,
    "weight_hc": 2 * 24 * 3,
    "weight_hr": 2 * 3 * 6,
}
_MHA = {
    "q_weight": 64,
    "q_bias": 8,
    "k_weight": 64,
    "k_bias": 8,
    "v_weight": 64,
    "v_bias": 8,
    "out_weight": 64,
    "out_bias": 8,
}
_DECONV = {"weight": 3 * 4 * 3 * 2, "bias": 4}
_DECONVDW = {"weight": 4 * 9, "bias": 4}
_CONV1D = {"weight": 4 * 3 * 3, "bias": 4}
_CONV3D = {"weight": 3 * 2 * 2 * 3 * 3, "bias": 3}
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "bn": {"bn_0": {"slope": 3, "mean": 3, "var": 3, "bias": 3}},
    "conv1d": {"conv1d_0": _CONV1D},
    "conv1d_fp16": {"conv1d_0": _CONV1D},
    "conv3d": {"conv3d_0": _CONV3D},
    "conv3d_fp16": {"conv3d_0": _CONV3D},
    "deconv": {"deconv_0": _DECONV},
    "deconv_fp16": {"deconv_0": _DECONV},
    "deconvdw": {"deconvdw_0": _DECONVDW},
    "deconvdw_fp16": {"deconvdw_0": _DECONVDW},
    "embed": {"embed_0": {"weight": 60}},
    "embed_fp16": {"embed_0": {"weight": 60}},
    "gemm": {"gemm_0": {"B": 30}},
    "gemm_fp16": {"gemm_0": {"B": 30}},
    "gn": {"gn_0": {"gamma": 4, "beta": 4}},
    "gru": {"gru_0": {"weight_xc": 12 * 5, "bias_c": 16, "weight_hc": 12 * 4}},
    "gru_bi": {"gru_0": {"weight_xc": 2 * 12 * 5, "bias_c": 2 * 16, "weight_hc": 2 * 12 * 4}},
    "gru_bi_fp16": {"gru_0": {"weight_xc": 2 * 12 * 5, "bias_c": 2 * 16, "weight_hc": 2 * 12 * 4}},
    "hand_embed_bias": {"embed": {"weight": 60, "bias": 6}},
    "hand_gemm_a": {"gemm": {"A": 15, "C": 12}},
    "hand_gemm_ab": {"gemm": {"A": 15, "B": 20, "C": 1}},
    "hand_gemm_b": {"gemm": {"B": 20, "C": 4}},
    "hand_memorydata": {
        "md1": {"data": 5},
        "md2": {"data": 12},
        "md3": {"data": 24},
        "md4": {"data": 24},
        "md5": {"data": 6},
    },
    "hand_norms": {"rms": {"gamma": 6}},
    "hand_scale_bias": {"scale": {"scale": 3, "bias": 3}, "bias": {"bias": 3}},
    "in": {"in_0": {"gamma": 3, "beta": 3}},
    "ln": {"ln_0": {"gamma": 6, "beta": 6}},
    "lstm": {"lstm_0": _LSTM},
    "lstm_fp16": {"lstm_0": _LSTM},
    "lstm_proj_bi": {"lstm_0": _LSTM_PROJ},
    "lstm_proj_bi_fp16": {"lstm_0": _LSTM_PROJ},
    "mha": {"attention_0": _MHA},
    "mha_fp16": {"attention_0": _MHA},
    "mha_kv": {"attention_0": {**_MHA, "k_weight": 48, "v_weight": 40}},
    "prelu": {"prelu_0": {"slope": 3}},
    "rmsnorm": {"rmsn_0": {"gamma": 6}},
    "rnn": {"rnn_0": {"weight_xc": 20, "bias_c": 4, "weight_hc": 16}},
    "rnn_bi": {"rnn_0": {"weight_xc": 40, "bias_c": 8, "weight_hc": 32}},
    "rnn_fp16": {"rnn_0": {"weight_xc": 20, "bias_c": 4, "weight_hc": 16}},
    "sdpa": {},
}
TAGGED = {
    "weight",
    "weight_xc",
    "bias_c",
    "weight_hc",
    "weight_hr",
    "q_weight",
    "k_weight",
    "v_weight",
    "out_weight",
    "A",
    "B",
    "C",
}


def load(name: str) -> tuple[str, bytes, ParamFile, dict[str, LayerWeights]]:
    text = (LAYERS / f"{name}.param").read_text()
    data = (LAYERS / f"{name}.bin").read_bytes()
    pf = parse_param(text)
    return text, data, pf, read_modelbin(pf, data, name)


def run_ncnn(
    name: str, inputs: dict[str, np.ndarray], outputs: list[str], fp32: bool = True
) -> list[np.ndarray]:
    net = ncnn.Net()
    net.opt.num_threads = 1
    if fp32:
        net.opt.use_fp16_storage = False
        net.opt.use_fp16_packed = False
        net.opt.use_fp16_arithmetic = False
        net.opt.use_bf16_storage = False
    assert net.load_param(str(LAYERS / f"{name}.param")) == 0
    assert net.load_model(str(LAYERS / f"{name}.bin")) == 0
    ex = net.create_extractor()
    for blob, arr in inputs.items():
        ex.input(blob, ncnn.Mat(np.ascontiguousarray(arr)).clone())
    res = []
    for blob in outputs:
        ret, mat = ex.extract(blob)
        assert ret == 0, (name, blob)
        res.append(np.array(mat).copy())
    del ex
    return res


def test_fixture_list_is_complete() -> None:
    assert set(MODELS) == set(SIZES)
    assert len(MODELS) >= 38


@pytest.mark.parametrize("name", MODELS)
def test_param_roundtrip(name: str) -> None:
    text = (LAYERS / f"{name}.param").read_text()
    assert render_param(parse_param(text)) == text


@pytest.mark.parametrize("name", MODELS)
def test_bin_walk_sizes_and_rewrite(name: str) -> None:
    _, data, pf, w = load(name)
    got = {layer: {k: r.values.size for k, r in recs.items()} for layer, recs in w.items()}
    assert got == SIZES[name]
    for recs in w.values():
        for rec_name, rec in recs.items():
            is_tagged_slot = rec_name in TAGGED and name != "hand_memorydata"
            if is_tagged_slot:
                want = "f16" if name.endswith("_fp16") or name.startswith("hand_gemm_b") else None
                assert rec.tagged
                if want:
                    assert rec.storage == want
                elif not name.startswith("hand_"):
                    assert rec.storage == "f32"
            elif name != "hand_memorydata":
                assert rec.storage == "raw", (name, rec_name)
    md = w.get("md5")
    if md is not None:  # MemoryData 21=0 reads a tagged record, the others raw float32
        assert md["data"].storage == "f16"
        assert {w[k]["data"].storage for k in ("md1", "md2", "md3", "md4")} == {"raw"}
    records = [rec for layer in pf.layers for rec in w.get(layer.name, {}).values()]
    assert write_records(records) == data


@pytest.mark.parametrize("name", [m for m in MODELS if m != "sdpa"])
def test_bin_size_mismatch_is_refused(name: str) -> None:
    _, data, pf, _ = load(name)
    with pytest.raises(ModelFormatError):
        read_modelbin(pf, data[:-4])
    with pytest.raises(ModelFormatError):
        read_modelbin(pf, data + b"\0\0\0\0")


# ---------------------------------------------------------------- numpy reference forwards

RNG = np.random.default_rng(5)


def _x(*shape: int) -> np.ndarray:
    return RNG.uniform(-1, 1, size=shape).astype(np.float32)


def _sig(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def _vals(w: dict[str, LayerWeights], layer: str, rec: str) -> np.ndarray:
    return w[layer][rec].values.astype(np.float64)


def _rnn_dir(
    x: np.ndarray, step: Callable[[np.ndarray, np.ndarray], np.ndarray], size: int, reverse: bool
) -> np.ndarray:
    h = np.zeros(size)
    out = np.zeros((x.shape[0], size))
    order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    for t in order:
        h = step(x[t], h)
        out[t] = h
    return out


def ref_rnn(w: dict[str, LayerWeights], x: np.ndarray, dirs: int) -> np.ndarray:
    n = 4
    wx = _vals(w, "rnn_0", "weight_xc").reshape(dirs, n, -1)
    b = _vals(w, "rnn_0", "bias_c").reshape(dirs, n)
    wh = _vals(w, "rnn_0", "weight_hc").reshape(dirs, n, n)
    outs = [
        _rnn_dir(x, lambda xt, h, d=d: np.tanh(wx[d] @ xt + wh[d] @ h + b[d]), n, d == 1)
        for d in range(dirs)
    ]
    return np.concatenate(outs, axis=1)


def ref_lstm(
    w: dict[str, LayerWeights], x: np.ndarray, dirs: int, hidden: int, out: int
) -> np.ndarray:
    wx = _vals(w, "lstm_0", "weight_xc").reshape(dirs, 4, hidden, -1)  # gates I F O G
    b = _vals(w, "lstm_0", "bias_c").reshape(dirs, 4, hidden)
    wh = _vals(w, "lstm_0", "weight_hc").reshape(dirs, 4, hidden, out)
    wr = _vals(w, "lstm_0", "weight_hr").reshape(dirs, out, hidden) if hidden != out else None
    res = []
    for d in range(dirs):
        c = np.zeros(hidden)

        def step(xt: np.ndarray, h: np.ndarray, d: int = d) -> np.ndarray:
            nonlocal c
            g = np.einsum("ghk,k->gh", wx[d], xt) + np.einsum("gho,o->gh", wh[d], h) + b[d]
            c = _sig(g[1]) * c + _sig(g[0]) * np.tanh(g[3])
            hh = _sig(g[2]) * np.tanh(c)
            return wr[d] @ hh if wr is not None else hh

        res.append(_rnn_dir(x, step, out, d == 1))
    return np.concatenate(res, axis=1)


def ref_gru(w: dict[str, LayerWeights], x: np.ndarray, dirs: int) -> np.ndarray:
    n = 4
    wx = _vals(w, "gru_0", "weight_xc").reshape(dirs, 3, n, -1)  # R U N
    b = _vals(w, "gru_0", "bias_c").reshape(dirs, 4, n)  # R U WN BN
    wh = _vals(w, "gru_0", "weight_hc").reshape(dirs, 3, n, n)
    res = []
    for d in range(dirs):

        def step(xt: np.ndarray, h: np.ndarray, d: int = d) -> np.ndarray:
            r = _sig(wx[d, 0] @ xt + wh[d, 0] @ h + b[d, 0])
            u = _sig(wx[d, 1] @ xt + wh[d, 1] @ h + b[d, 1])
            nn_ = np.tanh(wx[d, 2] @ xt + b[d, 2] + r * (wh[d, 2] @ h + b[d, 3]))
            return (1 - u) * nn_ + u * h

        res.append(_rnn_dir(x, step, n, d == 1))
    return np.concatenate(res, axis=1)


def ref_mha(
    w: dict[str, LayerWeights], q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int = 2
) -> np.ndarray:
    def lin(name: str, x: np.ndarray) -> np.ndarray:
        wt = _vals(w, "attention_0", f"{name}_weight")
        bias = _vals(w, "attention_0", f"{name}_bias")
        return x @ wt.reshape(bias.size, -1).T + bias

    e = 8
    hd = e // heads
    qa, ka, va = lin("q", q) / np.sqrt(hd), lin("k", k), lin("v", v)
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        s = qa[:, sl] @ ka[:, sl].T
        p = np.exp(s - s.max(axis=1, keepdims=True))
        outs.append((p / p.sum(axis=1, keepdims=True)) @ va[:, sl])
    return lin("out", np.concatenate(outs, axis=1))


def ref_conv(
    x: np.ndarray, wt: np.ndarray, bias: np.ndarray, stride: tuple[int, ...]
) -> np.ndarray:
    """Plain N-d cross-correlation; x (inch, *spatial), wt (outch, inch, *kernel)."""
    k = wt.shape[2:]
    out_sp = [(x.shape[1 + i] - k[i]) // stride[i] + 1 for i in range(len(k))]
    out = np.zeros((wt.shape[0], *out_sp))
    for idx in np.ndindex(*out_sp):
        sl = tuple(slice(idx[i] * stride[i], idx[i] * stride[i] + k[i]) for i in range(len(k)))
        patch = x[(slice(None), *sl)]
        out[(slice(None), *idx)] = np.tensordot(wt, patch, axes=wt.ndim - 1)
    return out + bias.reshape(-1, *([1] * len(k)))


def ref_deconv(
    x: np.ndarray, wt: np.ndarray, bias: np.ndarray, stride: int, groups: int
) -> np.ndarray:
    """Transposed conv; wt (outch, inch/groups, kh, kw) as ncnn stores it."""
    inch, ih, iw = x.shape
    outch, _, kh, kw = wt.shape
    out = np.zeros((outch, (ih - 1) * stride + kh, (iw - 1) * stride + kw))
    og, ig = outch // groups, inch // groups
    for g in range(groups):
        for o in range(g * og, (g + 1) * og):
            for i in range(ig):
                for y in range(ih):
                    for xx in range(iw):
                        out[o, y * stride : y * stride + kh, xx * stride : xx * stride + kw] += (
                            x[g * ig + i, y, xx] * wt[o, i]
                        )
    return out + bias.reshape(-1, 1, 1)


def _norm(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    m = x.mean(axis=axes, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(axis=axes, keepdims=True) + eps)


def _rms(x: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps)


def _case(name: str) -> tuple[dict[str, np.ndarray], list[str], Callable[..., list[np.ndarray]]]:
    """(inputs, output blobs, reference(w, **inputs) -> outputs) for a fixture."""
    base = name.removesuffix("_fp16")
    ids = np.array([1, 3, 5, 9, 0, 3], np.int32)
    if base in ("embed", "hand_embed_bias"):
        layer = "embed_0" if base == "embed" else "embed"

        def f(w: dict[str, LayerWeights], in0: np.ndarray) -> list[np.ndarray]:
            table = _vals(w, layer, "weight").reshape(10, 6)
            bias = _vals(w, layer, "bias") if "bias" in w[layer] else 0
            return [table[in0] + bias]

        return {"in0": ids}, ["out0"], f
    if base in ("rnn", "rnn_bi"):
        return (
            {"in0": _x(6, 5)},
            ["out0"],
            lambda w, in0: [ref_rnn(w, in0, 2 if base == "rnn_bi" else 1)],
        )
    if base == "lstm":
        return {"in0": _x(6, 5)}, ["out0"], lambda w, in0: [ref_lstm(w, in0, 1, 4, 4)]
    if base == "lstm_proj_bi":
        return {"in0": _x(6, 5)}, ["out0"], lambda w, in0: [ref_lstm(w, in0, 2, 6, 3)]
    if base in ("gru", "gru_bi"):
        return (
            {"in0": _x(6, 5)},
            ["out0"],
            lambda w, in0: [ref_gru(w, in0, 2 if base == "gru_bi" else 1)],
        )
    if base == "mha":
        return {"in0": _x(5, 8)}, ["out0"], lambda w, in0: [ref_mha(w, in0, in0, in0)]
    if base == "mha_kv":
        return (
            {"in0": _x(5, 8), "in1": _x(7, 6), "in2": _x(7, 5)},
            ["out0"],
            lambda w, in0, in1, in2: [ref_mha(w, in0, in1, in2)],
        )
    if base == "gemm":
        return (
            {"in0": _x(3, 6)},
            ["out0"],
            lambda w, in0: [in0 @ _vals(w, "gemm_0", "B").reshape(5, 6).T],
        )
    if base == "hand_gemm_a":
        return (
            {"in0": _x(5, 4)},
            ["out0"],
            lambda w, in0: [
                _vals(w, "gemm", "A").reshape(5, 3).T @ in0 + _vals(w, "gemm", "C").reshape(3, 4)
            ],
        )
    if base == "hand_gemm_b":
        return (
            {"in0": _x(3, 5)},
            ["out0"],
            # ncnn's Gemm is alpha * (A*B + beta*C), not ONNX's alpha*A*B + beta*C
            lambda w, in0: [
                0.5
                * (
                    in0 @ _vals(w, "gemm", "B").reshape(5, 4)
                    + 2.0 * _vals(w, "gemm", "C").reshape(1, 4)
                )
            ],
        )
    if base == "hand_gemm_ab":
        return (
            {},
            ["out0"],
            lambda w: [
                _vals(w, "gemm", "A").reshape(3, 5) @ _vals(w, "gemm", "B").reshape(4, 5).T
                + _vals(w, "gemm", "C")[0]
            ],
        )
    if base == "sdpa":

        def f_sdpa(
            w: dict[str, LayerWeights], in0: np.ndarray, in1: np.ndarray, in2: np.ndarray
        ) -> list[np.ndarray]:
            s = np.einsum("hqd,hkd->hqk", in0, in1) / np.sqrt(4)
            p = np.exp(s - s.max(axis=2, keepdims=True))
            return [np.einsum("hqk,hkd->hqd", p / p.sum(axis=2, keepdims=True), in2)]

        return {"in0": _x(2, 5, 4), "in1": _x(2, 6, 4), "in2": _x(2, 6, 4)}, ["out0"], f_sdpa
    if base in ("deconv", "deconvdw"):
        shape, groups, stride, wshape, layer = (
            ((3, 5, 5), 1, 2, (4, 3, 3, 2), "deconv_0")
            if base == "deconv"
            else ((4, 5, 5), 4, 1, (4, 1, 3, 3), "deconvdw_0")
        )
        return (
            {"in0": _x(*shape)},
            ["out0"],
            lambda w, in0: [
                ref_deconv(
                    in0,
                    _vals(w, layer, "weight").reshape(wshape),
                    _vals(w, layer, "bias"),
                    stride,
                    groups,
                )
            ],
        )
    if base == "conv1d":
        return (
            {"in0": _x(3, 9)},
            ["out0"],
            lambda w, in0: [
                ref_conv(
                    in0,
                    _vals(w, "conv1d_0", "weight").reshape(4, 3, 3),
                    _vals(w, "conv1d_0", "bias"),
                    (1,),
                )
            ],
        )
    if base == "conv3d":
        return (
            {"in0": _x(2, 4, 5, 5)},
            ["out0"],
            lambda w, in0: [
                ref_conv(
                    in0,
                    _vals(w, "conv3d_0", "weight").reshape(3, 2, 2, 3, 3),
                    _vals(w, "conv3d_0", "bias"),
                    (1, 1, 1),
                )
            ],
        )
    if base == "bn":

        def f_bn(w: dict[str, LayerWeights], in0: np.ndarray) -> list[np.ndarray]:
            v = {k: _vals(w, "bn_0", k).reshape(3, 1, 1) for k in ("slope", "mean", "var", "bias")}
            x = np.maximum(in0, 0)
            return [v["slope"] * (x - v["mean"]) / np.sqrt(v["var"] + 1e-5) + v["bias"]]

        return {"in0": _x(3, 4, 4)}, ["out0"], f_bn
    if base == "ln":
        return (
            {"in0": _x(4, 6)},
            ["out0"],
            lambda w, in0: [
                _norm(in0, (1,), 1e-5) * _vals(w, "ln_0", "gamma") + _vals(w, "ln_0", "beta")
            ],
        )
    if base == "gn":

        def f_gn(w: dict[str, LayerWeights], in0: np.ndarray) -> list[np.ndarray]:
            y = _norm(in0.reshape(2, 2, 3, 3), (1, 2, 3), 1e-5).reshape(4, 3, 3)
            return [
                y * _vals(w, "gn_0", "gamma").reshape(4, 1, 1)
                + _vals(w, "gn_0", "beta").reshape(4, 1, 1)
            ]

        return {"in0": _x(4, 3, 3)}, ["out0"], f_gn
    if base == "in":
        return (
            {"in0": _x(3, 4, 4)},
            ["out0"],
            lambda w, in0: [
                _norm(in0, (1, 2), 1e-5) * _vals(w, "in_0", "gamma").reshape(3, 1, 1)
                + _vals(w, "in_0", "beta").reshape(3, 1, 1)
            ],
        )
    if base == "prelu":
        return (
            {"in0": _x(3, 4, 4)},
            ["out0"],
            lambda w, in0: [
                np.where(in0 > 0, in0, in0 * _vals(w, "prelu_0", "slope").reshape(3, 1, 1))
            ],
        )
    if base == "rmsnorm":
        return (
            {"in0": _x(4, 6)},
            ["out0"],
            lambda w, in0: [_rms(in0, 1e-5) * _vals(w, "rmsn_0", "gamma")],
        )
    if base == "hand_scale_bias":
        return (
            {"in0": _x(3, 4, 4)},
            ["out0"],
            lambda w, in0: [
                in0 * _vals(w, "scale", "scale").reshape(3, 1, 1)
                + _vals(w, "scale", "bias").reshape(3, 1, 1)
                + _vals(w, "bias", "bias").reshape(3, 1, 1)
            ],
        )
    if base == "hand_norms":

        def f_norms(w: dict[str, LayerWeights], in0: np.ndarray) -> list[np.ndarray]:
            y = _norm(in0, (1, 2), 1e-5)
            y = _norm(y.reshape(2, 2, 4, 6), (1, 2, 3), 1e-5).reshape(4, 4, 6)
            y = _rms(_norm(y, (2,), 1e-5), 1e-5)
            return [_rms(y, 1e-5) * _vals(w, "rms", "gamma")]

        return {"in0": _x(4, 4, 6)}, ["out0"], f_norms
    if base == "hand_memorydata":
        shapes = {"md1": (5,), "md2": (3, 4), "md3": (2, 3, 4), "md4": (2, 2, 3, 2), "md5": (2, 3)}
        return (
            {},
            list(shapes),
            lambda w: [_vals(w, k, "data").reshape(s) for k, s in shapes.items()],
        )
    raise AssertionError(f"no reference for {name}")


@pytest.mark.parametrize("name", MODELS)
def test_decoded_weights_reproduce_ncnn_forward(name: str) -> None:
    _, _, _, w = load(name)
    inputs, outputs, ref = _case(name)
    got = run_ncnn(name, inputs, outputs)
    want = ref(w, **inputs)
    for g, r in zip(got, want, strict=True):
        assert g.shape == r.shape, (name, g.shape, r.shape)
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-5, err_msg=name)


def test_convolution3d_has_no_dynamic_weight_switch() -> None:
    """19= means dynamic weights for Convolution/1D, but ncnn's Convolution3D ignores it."""
    text, data, _, w = load("conv3d")
    odd = text.replace(" 6=108", " 19=1 6=108")
    w2 = read_modelbin(parse_param(odd), data)
    assert np.array_equal(w2["conv3d_0"]["weight"].values, w["conv3d_0"]["weight"].values)
    dyn = (LAYERS / "conv1d.param").read_text().replace(" 6=36", " 19=1 6=36")
    assert read_modelbin(parse_param(dyn), b"") == {}


def test_lstm_gate_order_matters() -> None:
    """The reference forward is sensitive to the record layout it assumes (the check can fail)."""
    _, _, _, w = load("lstm_proj_bi")
    inputs, _, ref = _case("lstm_proj_bi")
    good = ref(w, **inputs)[0]
    swapped = {k: dict(v) for k, v in w.items()}
    rec = swapped["lstm_0"]["bias_c"]
    swapped["lstm_0"]["bias_c"] = type(rec)(rec.name, rec.storage, rec.values[::-1].copy())
    assert not np.allclose(ref(swapped, **inputs)[0], good, atol=1e-3)
