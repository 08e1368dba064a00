"""Weight scales and whole tables against the real ncnn2table outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal.calib.build import build_table, format_scale_line
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.table import CalibrationTable, parse_table, render_table
from edgecal.calib.weights import conv_weight_scales, static_weight_scales, weight_scales
from edgecal.errors import CalibrationError
from edgecal.ncnnfmt.modelbin import WeightRecord, read_modelbin
from edgecal.ncnnfmt.param import Layer, int_value, parse_param

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
CROSS = json.loads((REF / "crosscheck.json").read_text())
CASES = ("digits", "npy", "multi")


def model(case: str):
    pf = parse_param((REF / case / "model.param").read_text(), "model.param")
    w = read_modelbin(pf, (REF / case / "model.bin").read_bytes(), "model.bin")
    return [(lay, w.get(lay.name, {})) for lay in pf.layers]


def stats(case: str) -> dict[str, BlobHistogram]:
    out = {}
    for name, b in CROSS[case].items():
        c = np.zeros(2048, dtype=np.uint64)
        c[b["histogram_bins"]] = b["histogram_counts"]
        absmax = np.uint32(int(b["absmax_float32_hex"], 16)).view(np.float32)
        out[name] = BlobHistogram(c, absmax, b["elements_per_sample"])
    return out


@pytest.mark.parametrize("method", ["kl", "aciq"])
@pytest.mark.parametrize("case", CASES)
def test_tables_byte_identical(case: str, method: str) -> None:
    tb = build_table(model(case), stats(case), method)
    assert render_table(tb.table) == (REF / case / f"{method}.table").read_text()
    assert tb.warnings == []


@pytest.mark.parametrize("method", ["kl", "aciq"])
@pytest.mark.parametrize("case", CASES)
def test_weight_lines_exact(case: str, method: str) -> None:
    ref = parse_table((REF / case / f"{method}.table").read_text())
    for lay, w in model(case):
        ws = weight_scales(lay, w, method)
        if ws is None:
            continue
        got = render_table(CalibrationTable({f"{lay.name}_param_0": ws.params[0]}))
        want = render_table(CalibrationTable({f"{lay.name}_param_0": ref.weight_scales(lay.name)}))
        assert got == want


@pytest.mark.parametrize("method", ["kl", "aciq"])
@pytest.mark.parametrize("case", CASES)
def test_stderr_lines(case: str, method: str) -> None:
    log = (REF / case / "logs" / f"ncnn2table_{method}.stderr").read_text().splitlines()
    want = [line for line in log if " : max = " in line]
    got = [format_scale_line(i) for i in build_table(model(case), stats(case), method).per_layer]
    assert got == want


def test_weight_only_table_is_empty_without_static_layers() -> None:
    tb = build_table(model("digits"), None, "kl")
    assert render_table(tb.table) == "" and tb.per_layer == []


def test_missing_stats_named() -> None:
    s = stats("digits")
    del s["linear_7"]
    with pytest.raises(CalibrationError, match="linear_7"):
        build_table(model("digits"), s, "kl")


def layer(type_: str, name: str, **params: int) -> Layer:
    return Layer(
        type_, name, ["in"], ["out"], {int(k[1:]): int_value(v) for k, v in params.items()}
    )


def rec(name: str, values: np.ndarray) -> WeightRecord:
    return WeightRecord(name, "f32", np.asarray(values, dtype=np.float32).reshape(-1))


@pytest.mark.parametrize("method", ["kl", "aciq"])
def test_zero_channel_is_finite_with_warning(method: str) -> None:
    w = np.ones((3, 2, 3, 3), dtype=np.float32)
    w[1] = 0
    lay = layer("Convolution", "c1", p0=3, p1=3, p6=w.size)
    ws = conv_weight_scales(lay, {"weight": rec("weight", w)}, method)
    assert np.isfinite(ws.params[0]).all()
    assert ws.params[0][1] == 1.0
    assert len(ws.warnings) == 1 and "c1" in ws.warnings[0] and "channel 1" in ws.warnings[0]


def test_six_bit_rule_uses_h_params() -> None:
    w = np.full(2 * 9, 0.5, dtype=np.float32)
    sq = layer("Convolution", "a", p0=2, p1=3, p6=18)
    assert conv_weight_scales(sq, {"weight": rec("weight", w)}, "kl").params[0][0] == 62
    for extra in ({"p11": 1}, {"p12": 2}, {"p13": 2}, {"p3": 2}, {"p2": 2}):
        lay = layer("Convolution", "b", p0=2, p1=3, p6=18, **extra)
        assert conv_weight_scales(lay, {"weight": rec("weight", w)}, "kl").params[0][0] == 254
    dw = layer("ConvolutionDepthWise", "d", p0=2, p1=3, p6=18, p7=2)
    assert conv_weight_scales(dw, {"weight": rec("weight", w)}, "kl").params[0][0] == 254


def test_aciq_single_weight_per_group_gives_zero_with_warning() -> None:
    dw = layer("ConvolutionDepthWise", "d", p0=4, p1=1, p6=4, p7=4)
    ws = conv_weight_scales(dw, {"weight": rec("weight", np.arange(1, 5))}, "aciq")
    assert (ws.params[0] == 0).all() and ws.warnings


def test_static_layers() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=40).astype(np.float32)
    ws = static_weight_scales(
        layer("Embed", "e", p0=4, p1=10, p3=40), {"weight": rec("weight", emb)}
    )
    assert ws.params[0][0] == np.float32(127) / np.abs(emb).max()
    q = rng.normal(size=(4, 6)).astype(np.float32)
    q[2] = 0
    mha = layer("MultiHeadAttention", "m", p0=4, p1=2, p2=24, p3=3, p4=5)
    ws = static_weight_scales(
        mha,
        {
            "q_weight": rec("q_weight", q),
            "k_weight": rec("k_weight", rng.normal(size=(4, 3))),
            "v_weight": rec("v_weight", rng.normal(size=(4, 5))),
            "out_weight": rec("out_weight", np.zeros(24)),
        },
    )
    assert [p.size for p in ws.params] == [4, 4, 4, 1]
    assert ws.params[0][2] == 1.0 and ws.params[3][0] == 1.0
    assert ws.params[0][0] == np.float32(127) / np.abs(q[0]).max()
    lstm = layer("LSTM", "l", p0=3, p1=2 * 5 * 4 * 2, p2=2, p3=5)
    xc = rng.normal(size=(2 * 5 * 4, 2)).astype(np.float32)
    hc = rng.normal(size=(2 * 5 * 4, 3)).astype(np.float32)
    ws = static_weight_scales(
        lstm, {"weight_xc": rec("weight_xc", xc), "weight_hc": rec("weight_hc", hc)}
    )
    assert ws.params[0].size == 40 and ws.params[1].size == 40
    assert ws.params[1][7] == np.float32(127) / np.abs(hc[7]).max()
    gru = layer("GRU", "g", p0=2, p1=2 * 3 * 4)
    ws = static_weight_scales(
        gru,
        {"weight_xc": rec("weight_xc", np.ones(24)), "weight_hc": rec("weight_hc", np.ones(12))},
    )
    assert ws.params[0].size == 6 and ws.params[1].size == 6


def test_static_order_in_table() -> None:
    items = [
        (
            layer("GRU", "g", p0=1, p1=3),
            {"weight_xc": rec("weight_xc", np.ones(3)), "weight_hc": rec("weight_hc", np.ones(3))},
        ),
        (layer("Embed", "e", p0=1, p1=2, p3=2), {"weight": rec("weight", np.ones(2))}),
        (
            layer("RNN", "r", p0=1, p1=2),
            {"weight_xc": rec("weight_xc", np.ones(2)), "weight_hc": rec("weight_hc", np.ones(1))},
        ),
    ]
    keys = list(build_table(items, None, "kl").table)
    assert keys == ["e_param_0", "r_param_0", "r_param_1", "g_param_0", "g_param_1"]


def test_missing_weights_named() -> None:
    with pytest.raises(CalibrationError, match="c9"):
        conv_weight_scales(layer("Convolution", "c9", p0=1, p1=1, p6=1), {}, "kl")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["kl", "aciq"])
def test_reference_tables_round_trip(case: str, method: str) -> None:
    text = (REF / case / f"{method}.table").read_text()
    assert render_table(parse_table(text)) == text


keys = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
vals = st.lists(st.floats(-1e7, 1e7, width=32, allow_nan=False), min_size=1, max_size=6)


@settings(deadline=None, max_examples=60)
@given(st.dictionaries(keys, vals, min_size=0, max_size=6))
def test_table_round_trip(d: dict[str, list[float]]) -> None:
    t = CalibrationTable()
    for k, v in d.items():
        t.set(k, v)
    text = render_table(t)
    back = parse_table(text)
    assert render_table(back) == text
    assert list(back) == list(t)
    for k in t:
        # %f keeps 6 decimals: the value read back is within half a unit of the 6th decimal
        assert np.allclose(back.get(k), t.get(k), rtol=0, atol=5e-7 + 1e-7 * np.abs(t.get(k)))
