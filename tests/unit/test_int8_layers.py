"""quantize_model on the per-layer fixtures (tests/data/layers), checked against pyncnn.

* Embed / MultiHeadAttention / RNN / LSTM / GRU: a table with the static weight scales of spec
  2.10 (computed here with numpy from the decoded weights, rendered with ncnn2table's ``%f``), then
  the converted files are decoded again and every int8 code, scale, flag and fp16 record checked;
  the model must load in pyncnn with default options and stay close to the fp32 model.
* Gemm (constant A and/or B) and SDPA are quantized without a table.
* Every other weight layer comes out as a pure fp16 model that runs.
* Without a table, a model with Embed/MHA/RNN/LSTM/GRU is refused.
"""

from __future__ import annotations

import struct
from pathlib import Path

import ncnn
import numpy as np
import pytest

from edgecal.calib.table import CalibrationTable, parse_table, render_table
from edgecal.errors import ConversionError, TableError
from edgecal.int8.convert import quantize_model
from edgecal.ncnnfmt.modelbin import LayerWeights, read_modelbin
from edgecal.ncnnfmt.param import ParamFile, parse_param
from edgecal.ncnnfmt.weightspec import record_specs

LAYERS = Path(__file__).resolve().parents[1] / "data" / "layers"
TAG_F16 = 0x01306B47
TAG_I8 = 0x000D4B38

RNG = np.random.default_rng(11)
IDS = np.array([1, 3, 5, 9, 0, 3, 7, 2], np.int32)
SEQ = RNG.uniform(-1, 1, size=(6, 5)).astype(np.float32)

# model -> (inputs, flag param id)
STATIC: dict[str, tuple[dict[str, np.ndarray], int]] = {
    "embed": ({"in0": IDS}, 18),
    "embed_fp16": ({"in0": IDS}, 18),
    "hand_embed_bias": ({"in0": IDS}, 18),
    "mha": ({"in0": RNG.uniform(-1, 1, (5, 8)).astype(np.float32)}, 18),
    "mha_fp16": ({"in0": RNG.uniform(-1, 1, (5, 8)).astype(np.float32)}, 18),
    "mha_kv": (
        {
            "in0": RNG.uniform(-1, 1, (5, 8)).astype(np.float32),
            "in1": RNG.uniform(-1, 1, (7, 6)).astype(np.float32),
            "in2": RNG.uniform(-1, 1, (7, 5)).astype(np.float32),
        },
        18,
    ),
    "rnn": ({"in0": SEQ}, 8),
    "rnn_fp16": ({"in0": SEQ}, 8),
    "rnn_bi": ({"in0": SEQ}, 8),
    "lstm": ({"in0": SEQ}, 8),
    "lstm_fp16": ({"in0": SEQ}, 8),
    "lstm_proj_bi": ({"in0": SEQ}, 8),
    "lstm_proj_bi_fp16": ({"in0": SEQ}, 8),
    "gru": ({"in0": SEQ}, 8),
    "gru_bi": ({"in0": SEQ}, 8),
    "gru_bi_fp16": ({"in0": SEQ}, 8),
}

FLOAT_ONLY: dict[str, dict[str, np.ndarray]] = {
    "deconv": {"in0": RNG.uniform(-1, 1, (3, 5, 5)).astype(np.float32)},
    "deconv_fp16": {"in0": RNG.uniform(-1, 1, (3, 5, 5)).astype(np.float32)},
    "deconvdw": {"in0": RNG.uniform(-1, 1, (4, 5, 5)).astype(np.float32)},
    "conv1d": {"in0": RNG.uniform(-1, 1, (3, 9)).astype(np.float32)},
    "conv3d": {"in0": RNG.uniform(-1, 1, (2, 4, 5, 5)).astype(np.float32)},
    "bn": {"in0": RNG.uniform(-1, 1, (3, 4, 4)).astype(np.float32)},
    "ln": {"in0": RNG.uniform(-1, 1, (4, 6)).astype(np.float32)},
    "gn": {"in0": RNG.uniform(-1, 1, (4, 3, 3)).astype(np.float32)},
    "in": {"in0": RNG.uniform(-1, 1, (3, 4, 4)).astype(np.float32)},
    "prelu": {"in0": RNG.uniform(-1, 1, (3, 4, 4)).astype(np.float32)},
    "rmsnorm": {"in0": RNG.uniform(-1, 1, (4, 6)).astype(np.float32)},
    "hand_scale_bias": {"in0": RNG.uniform(-1, 1, (3, 4, 4)).astype(np.float32)},
    "hand_norms": {"in0": RNG.uniform(-1, 1, (4, 4, 6)).astype(np.float32)},
}

GEMM: dict[str, dict[str, np.ndarray]] = {
    "gemm": {"in0": RNG.uniform(-1, 1, (3, 6)).astype(np.float32)},
    "gemm_fp16": {"in0": RNG.uniform(-1, 1, (3, 6)).astype(np.float32)},
    "hand_gemm_a": {"in0": RNG.uniform(-1, 1, (5, 4)).astype(np.float32)},
    "hand_gemm_b": {"in0": RNG.uniform(-1, 1, (3, 5)).astype(np.float32)},
    "hand_gemm_ab": {},
}
SDPA_IN = {
    "in0": RNG.uniform(-1, 1, (2, 5, 4)).astype(np.float32),
    "in1": RNG.uniform(-1, 1, (2, 6, 4)).astype(np.float32),
    "in2": RNG.uniform(-1, 1, (2, 6, 4)).astype(np.float32),
}


def load(name: str) -> tuple[ParamFile, dict[str, LayerWeights]]:
    pf = parse_param((LAYERS / f"{name}.param").read_text())
    return pf, read_modelbin(pf, (LAYERS / f"{name}.bin").read_bytes(), name)


def run(
    param: str, data: bytes, inputs: dict[str, np.ndarray], tmp: Path, out: str = "out0"
) -> np.ndarray:
    """Forward with pyncnn's default options (int8 inference, fp16 storage on)."""
    (tmp / "m.param").write_text(param)
    (tmp / "m.bin").write_bytes(data)
    net = ncnn.Net()
    net.opt.num_threads = 1
    assert net.opt.use_int8_inference
    assert net.load_param(str(tmp / "m.param")) == 0
    assert net.load_model(str(tmp / "m.bin")) == 0
    ex = net.create_extractor()
    for blob, arr in inputs.items():
        ex.input(blob, ncnn.Mat(np.ascontiguousarray(arr)).clone())
    ret, mat = ex.extract(out)
    assert ret == 0
    res = np.array(mat).astype(np.float64).copy()
    del ex
    return res


def run_file(name: str, inputs: dict[str, np.ndarray], tmp: Path) -> np.ndarray:
    return run(
        (LAYERS / f"{name}.param").read_text(), (LAYERS / f"{name}.bin").read_bytes(), inputs, tmp
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------- independent reference pieces


def absmax_scale(rows: np.ndarray) -> np.ndarray:
    """Spec 2.10: 127/absmax per row, 1.0 for an all-zero row, in float32."""
    a = np.abs(rows.astype(np.float32)).max(axis=1)
    with np.errstate(divide="ignore"):
        return np.where(a == 0, np.float32(1), np.float32(127) / a).astype(np.float32)


def q8(rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Round half away from zero of float32(w*s), clamped to [-127, 127]."""
    v = (rows.astype(np.float32) * scales.astype(np.float32).reshape(-1, 1)).astype(np.float32)
    return np.clip(np.sign(v) * np.floor(np.abs(v).astype(np.float64) + 0.5), -127, 127).astype(
        np.int8
    )


def static_rows(
    layer_type: str, params: dict[int, int], recs: LayerWeights
) -> dict[int, list[tuple[str, np.ndarray]]]:
    """table index -> [(record, weight rows)] for the static-scale layers, per spec 2.10."""
    if layer_type == "Embed":
        return {0: [("weight", recs["weight"].values.reshape(1, -1))]}
    if layer_type == "MultiHeadAttention":
        e = params[0]
        return {
            0: [("q_weight", recs["q_weight"].values.reshape(e, -1))],
            1: [("k_weight", recs["k_weight"].values.reshape(e, -1))],
            2: [("v_weight", recs["v_weight"].values.reshape(e, -1))],
            3: [("out_weight", recs["out_weight"].values.reshape(1, -1))],
        }
    n = params[0]
    dirs = 2 if params.get(2, 0) == 2 else 1
    rows = {"RNN": n, "GRU": 3 * n, "LSTM": 4 * params.get(3, n)}[layer_type] * dirs
    return {
        0: [("weight_xc", recs["weight_xc"].values.reshape(rows, -1))],
        1: [("weight_hc", recs["weight_hc"].values.reshape(rows, n))],
    }


def make_table(pf: ParamFile, w: dict[str, LayerWeights]) -> tuple[CalibrationTable, dict]:
    """The table ncnn2table would write (values round-tripped through ``%f``)."""
    table = CalibrationTable()
    parts = {}
    for layer in pf.layers:
        if layer.type not in ("Embed", "MultiHeadAttention", "RNN", "LSTM", "GRU"):
            continue
        params = {k: v.value for k, v in layer.params.items() if v.kind == "int"}
        parts[layer.name] = static_rows(layer.type, params, w[layer.name])
        for idx, items in parts[layer.name].items():
            table.set(f"{layer.name}_param_{idx}", absmax_scale(items[0][1]))
    return parse_table(render_table(table)), parts


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", sorted(STATIC))
def test_static_weight_quantization(name: str, tmp_path: Path) -> None:
    inputs, flag = STATIC[name]
    pf, w = load(name)
    table, parts = make_table(pf, w)
    text, data, report = quantize_model(pf, w, table)
    assert not report.warnings
    layer = next(lyr for lyr in pf.layers if lyr.name in parts)
    assert report.quantized == [layer.name]

    out_pf = parse_param(text)
    out_layer = next(lyr for lyr in out_pf.layers if lyr.name == layer.name)
    assert out_layer.param_int(flag, 0) == 2
    # every other param survives, unless it equals ncnn's default (ModelWriter drops those)
    defaults = {2: 0, 3: layer.param_int(0, 0), 4: layer.param_int(0, 0)}
    for pid, pv in layer.params.items():
        if pid == flag:
            continue
        if pid in out_layer.params:
            assert out_layer.params[pid].value == pv.value
        else:
            assert pv.value == defaults[pid], (pid, pv)
    out_w = read_modelbin(out_pf, data, "converted")[layer.name]
    for idx, items in parts[layer.name].items():
        scales = table.weight_scales(layer.name, idx)
        assert scales is not None
        for rec_name, rows in items:
            assert out_w[rec_name].storage == "i8", rec_name
            want = q8(rows, scales if scales.size == rows.shape[0] else scales[:1])
            assert np.array_equal(out_w[rec_name].values.reshape(rows.shape), want), rec_name
    # scales appended raw, in ncnn's order, equal to the table
    scale_recs = [k for k in out_w if k.endswith("_scales")]
    got = np.concatenate([out_w[k].values for k in scale_recs])
    want_s = np.concatenate([table.weight_scales(layer.name, i) for i in sorted(parts[layer.name])])
    assert np.array_equal(got, want_s)
    # every other tagged record is fp16, untagged ones unchanged
    for rec_name, rec in out_w.items():
        if rec.storage not in ("i8", "raw"):
            assert rec.storage == "f16", rec_name
            np.testing.assert_allclose(
                rec.values, w[layer.name][rec_name].values, rtol=1e-3, atol=1e-4
            )
        elif rec.storage == "raw" and rec_name in w[layer.name]:
            assert np.array_equal(rec.values, w[layer.name][rec_name].values), rec_name
    if layer.type == "LSTM" and "weight_hr" in out_w:
        assert out_w["weight_hr"].storage == "f16"

    ref = run_file(name, inputs, tmp_path)
    got_out = run(text, data, inputs, tmp_path)
    assert got_out.shape == ref.shape
    # int8 weights with per-row 127/absmax scales: each weight is off by at most 0.4 % of its
    # row's absmax, which on these unit-range inputs moves outputs by < 1 % of their range
    # (measured: cosine >= 0.99997, max error <= 0.0085 * range).  A scale applied to the wrong
    # row, or a wrong scale value, shows up as 2-30 % (checked by perturbing the written scales).
    assert cosine(got_out, ref) > 0.9999, cosine(got_out, ref)
    assert np.abs(got_out - ref).max() < 0.012 * max(1.0, np.abs(ref).max())
    assert not np.array_equal(got_out, ref)  # the int8 path really ran


@pytest.mark.parametrize("name", ["embed", "mha", "rnn", "lstm_proj_bi", "gru_bi"])
def test_static_layers_need_a_table(name: str) -> None:
    pf, w = load(name)
    with pytest.raises(ConversionError, match="calibration table is required"):
        quantize_model(pf, w, None)


def test_static_layer_missing_from_table_stays_float(tmp_path: Path) -> None:
    pf, w = load("lstm")
    table = parse_table("lstm_0_param_0 1.0 \n")  # _param_1 missing
    with pytest.raises(TableError):
        quantize_model(pf, w, table)  # wrong count: 16 rows needed
    table = CalibrationTable()
    table.set("lstm_0_param_0", np.ones(16, np.float32))
    text, data, report = quantize_model(pf, w, table)
    assert report.quantized == [] and report.kept_float == ["lstm_0"]
    assert report.warnings
    out_pf = parse_param(text)
    assert out_pf.layers[1].param_int(8, 0) == 0
    assert {r.storage for r in read_modelbin(out_pf, data)["lstm_0"].values()} == {"f16"}
    ref = run_file("lstm", {"in0": SEQ}, tmp_path)
    assert cosine(run(text, data, {"in0": SEQ}, tmp_path), ref) > 0.9999


def test_keep_fp32_static_layer_without_table(tmp_path: Path) -> None:
    pf, w = load("gru_bi")
    text, data, report = quantize_model(pf, w, None, keep_fp32=["gru_0"])
    assert report.kept_float == ["gru_0"]
    assert "8=" not in text.splitlines()[-1]
    ref = run_file("gru_bi", {"in0": SEQ}, tmp_path)
    assert cosine(run(text, data, {"in0": SEQ}, tmp_path), ref) > 0.9999


def _tags(data: bytes, pf: ParamFile) -> list[int]:
    """Tags of the tagged records of a converted .bin, by walking it."""
    tags = []
    pos = 0
    for layer in pf.layers:
        for spec in record_specs(layer):
            if spec.tagged:
                (tag,) = struct.unpack_from("<I", data, pos)
                tags.append(tag)
                size = {TAG_F16: 2, TAG_I8: 1}.get(tag, 4) * spec.count
                pos += 4 + ((size + 3) & ~3)
            else:
                pos += 4 * spec.count
    assert pos == len(data)
    return tags


@pytest.mark.parametrize("name", sorted(FLOAT_ONLY))
def test_float_layers_become_fp16(name: str, tmp_path: Path) -> None:
    pf, w = load(name)
    for table in (None, CalibrationTable()):
        text, data, report = quantize_model(pf, w, table)
        assert report.quantized == []
        out_pf = parse_param(text)
        tags = _tags(data, out_pf)
        assert all(t == TAG_F16 for t in tags)
        if any(rec.tagged for recs in w.values() for rec in recs.values()):
            assert tags
        out_w = read_modelbin(out_pf, data)
        for lname, recs in w.items():
            for rname, rec in recs.items():
                if rec.tagged:
                    np.testing.assert_allclose(
                        out_w[lname][rname].values, rec.values, rtol=1e-3, atol=1e-4
                    )
                else:
                    assert np.array_equal(out_w[lname][rname].values, rec.values)
        ref = run_file(name, FLOAT_ONLY[name], tmp_path)
        got = run(text, data, FLOAT_ONLY[name], tmp_path)
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2)


def test_deconvolution_is_written_fp16_with_modelwriter_params(tmp_path: Path) -> None:
    pf, w = load("deconv")
    text, data, _ = quantize_model(pf, w, None)
    line = text.splitlines()[-1].split()
    # ModelWriter: 0 1 11 2 12 3 13 4 14 15 16 18 19 20 21 5 6 9 10 28, non-defaults only
    assert line[6:] == ["0=4", "1=2", "11=3", "3=2", "5=1", "6=72"]
    (tag,) = struct.unpack_from("<I", data, 0)
    assert tag == TAG_F16
    assert len(data) == 4 + 72 * 2 + 4 * 4


@pytest.mark.parametrize("name", sorted(GEMM))
def test_gemm_constant_operands_quantized(name: str, tmp_path: Path) -> None:
    pf, w = load(name)
    layer = next(lyr for lyr in pf.layers if lyr.type == "Gemm")
    recs = w[layer.name]
    m, n, k = (layer.param_int(i, 0) for i in (7, 8, 9))
    text, data, report = quantize_model(pf, w, None)
    assert report.quantized == [layer.name]
    out_layer = parse_param(text).layers[-1]
    assert out_layer.param_int(18, 0) == 2
    out = read_modelbin(parse_param(text), data)[layer.name]
    if layer.param_int(4, 0):
        a = recs["A"].values
        a = a.reshape(k, m).T if layer.param_int(2, 0) else a.reshape(m, k)
        assert out_layer.param_int(2, 0) == 0
        s = absmax_scale(a)
        assert np.array_equal(out["A_scales"].values, s)
        assert np.array_equal(out["A"].values.reshape(m, k), q8(a, s))
    if layer.param_int(5, 0):
        b = recs["B"].values
        b = b.reshape(n, k) if layer.param_int(3, 0) else b.reshape(k, n).T
        assert out_layer.param_int(3, 0) == 1
        s = absmax_scale(b.reshape(1, -1))
        assert np.array_equal(out["B_scale"].values, s)
        assert np.array_equal(out["B"].values.reshape(n, k), q8(b, np.repeat(s, n)))
    if "C" in out:
        assert out["C"].storage == "f16"
    inputs = GEMM[name]
    ref = run_file(name, inputs, tmp_path)
    got = run(text, data, inputs, tmp_path)
    assert got.shape == ref.shape
    assert cosine(got, ref) > 0.999, cosine(got, ref)


def test_sdpa_gets_int8_flag_and_runs(tmp_path: Path) -> None:
    pf, w = load("sdpa")
    text, data, report = quantize_model(pf, w, None)
    assert report.quantized == ["sdpa_0"]
    assert data == b""
    # ModelWriter's SDPA writer: 5 6 7 18, non-defaults only (pnnx's "5=0" is dropped)
    assert text.splitlines()[-1].split()[-1] == "18=2"
    assert "5=0" not in text
    ref = run_file("sdpa", SDPA_IN, tmp_path)
    got = run(text, data, SDPA_IN, tmp_path)
    assert cosine(got, ref) > 0.999, cosine(got, ref)


def test_conversion_is_deterministic_and_idempotent_on_params() -> None:
    pf, w = load("lstm_proj_bi")
    table, _ = make_table(pf, w)
    a = quantize_model(pf, w, table)
    b = quantize_model(pf, w, table)
    assert a[0] == b[0] and a[1] == b[1]
    # the input model objects are not modified
    assert pf.layers[1].param_int(8, 0) == 0
    assert w["lstm_0"]["weight_xc"].storage == "f32"


@pytest.mark.parametrize(
    "name", ["lstm_proj_bi", "mha_kv", "embed", "gru_bi", "gemm", "hand_gemm_a", "sdpa"]
)
def test_converting_a_converted_model_changes_nothing(name: str) -> None:
    pf, w = load(name)
    table, _ = make_table(pf, w)
    text, data, _ = quantize_model(pf, w, table if len(table) else None)
    pf2 = parse_param(text)
    w2 = read_modelbin(pf2, data)
    for t in (table if len(table) else None, None):
        text2, data2, report = quantize_model(pf2, w2, t)
        assert (text2, data2) == (text, data)
        if name != "sdpa":
            assert report.quantized == [] and "already int8" in report.warnings[0]


def test_memorydata_records(tmp_path: Path) -> None:
    pf, w = load("hand_memorydata")
    text, data, _ = quantize_model(pf, w, None)
    lines = text.splitlines()
    # ModelWriter: 0 1 2 11; the tagged (21=0) data is written back raw float32 without 21
    assert lines[5].split()[4:] == ["md4", "0=2", "1=3", "2=2", "11=2"]
    assert lines[6].split()[4:] == ["md5", "0=3", "1=2"]
    out = read_modelbin(parse_param(text), data)
    assert len(data) == 4 * (5 + 12 + 24 + 24 + 6)
    for name, recs in w.items():
        assert out[name]["data"].storage == "raw"
        assert np.array_equal(out[name]["data"].values, recs["data"].values)
    for blob in ("md1", "md4", "md5"):
        ref = run(
            (LAYERS / "hand_memorydata.param").read_text(),
            (LAYERS / "hand_memorydata.bin").read_bytes(),
            {},
            tmp_path,
            out=blob,
        )
        got = run(text, data, {}, tmp_path, out=blob)
        assert np.array_equal(got, ref)


@pytest.mark.parametrize(
    ("name", "tail"),
    [
        # pnnx writes every key; ModelWriter only the non-default ones, in its own order
        ("conv3d", ["0=3", "1=3", "21=2", "5=1", "6=108"]),
        ("deconvdw", ["0=4", "1=3", "5=1", "6=36", "7=4"]),
        ("conv1d", ["0=4", "1=3", "5=1", "6=36"]),
        ("bn", ["0=3", "1=1.000000e-05"]),
        ("gn", ["0=2", "1=4", "2=1.000000e-05"]),
        ("rmsnorm", ["0=6", "1=1.000000e-05"]),
    ],
)
def test_modelwriter_param_lines(name: str, tail: list[str]) -> None:
    pf, w = load(name)
    text, _, _ = quantize_model(pf, w, None)
    assert text.splitlines()[-1].split()[6:] == tail
