"""Where edgecal's int8 model differs from ncnn2int8 on purpose, and ``--ncnn-compat``.

Each difference is shown on a tiny hand-written model: the default output differs from the
compat output in exactly the documented place, and the compat output follows ncnn2int8's rule
(tools/quantize/ncnn2int8.cpp and src/mat.cpp at a4d2ea1, the reference tools' commit), which
these tests compute on their own with numpy/struct rather than through edgecal's helpers.
Both modes stay byte-identical to the real ncnn2int8 outputs in tests/data/reference.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecal.calib.table import parse_table
from edgecal.calib.weights import conv_weight_scales, static_weight_scales
from edgecal.cli.main import main
from edgecal.int8.convert import quantize_model
from edgecal.int8.quantize import quantize_rows
from edgecal.ncnnfmt.half import float32_to_float16_bits
from edgecal.ncnnfmt.modelbin import read_modelbin
from edgecal.ncnnfmt.param import parse_param

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
TAG_F32 = 0x00000000
TAG_F16 = 0x01306B47
TAG_I8 = 0x000D4B38


def _tagged_f32(values: np.ndarray) -> bytes:
    return struct.pack("<I", TAG_F32) + np.asarray(values, "<f4").reshape(-1).tobytes()


def _raw(values: np.ndarray) -> bytes:
    return np.asarray(values, "<f4").reshape(-1).tobytes()


def _convert(param: str, data: bytes, table: str | None, compat: bool) -> tuple[str, bytes]:
    pf = parse_param(param)
    w = read_modelbin(pf, data)
    t = parse_table(table) if table is not None else None
    text, out, _ = quantize_model(pf, w, t, ncnn_compat=compat)
    return text, out


def _half_away(v: np.ndarray) -> np.ndarray:
    """C's roundf in float64 (exact for float32 input)."""
    v = v.astype(np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


# --- both modes on the real ncnn2int8 outputs -------------------------------------------------


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("case", ["digits", "npy", "multi"])
@pytest.mark.parametrize("method", ["kl", "aciq"])
def test_reference_byte_identical_in_both_modes(case: str, method: str, compat: bool) -> None:
    param = (REF / case / "model.param").read_text()
    data = (REF / case / "model.bin").read_bytes()
    table = (REF / case / f"{method}.table").read_text()
    text, out = _convert(param, data, table, compat)
    assert text == (REF / case / f"int8_{method}.param").read_text()
    assert out == (REF / case / f"int8_{method}.bin").read_bytes()


@pytest.mark.parametrize("form", [["quantize", "--ncnn-compat"], ["ncnn2int8", "--ncnn-compat"]])
def test_cli_compat_flag_is_byte_identical_on_reference(
    form: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    d = REF / "digits"
    files = [str(d / "model.param"), str(d / "model.bin"), "o.param", "o.bin"]
    if form[0] == "quantize":
        argv = ["quantize", *files, "--table", str(d / "kl.table"), "--ncnn-compat"]
    else:
        argv = ["ncnn2int8", *files, str(d / "kl.table"), "--ncnn-compat"]
    assert main(argv) == 0
    assert (tmp_path / "o.param").read_bytes() == (d / "int8_kl.param").read_bytes()
    assert (tmp_path / "o.bin").read_bytes() == (d / "int8_kl.bin").read_bytes()


# --- (a) transB=1 Gemm: ncnn2int8 scales B by its first row only ------------------------------

N, K = 3, 4
B = np.array([[0.5, -0.25, 0.125, 0.3], [2.0, -1.5, 0.7, -0.1], [0.05, 0.9, -1.2, 0.6]], np.float32)


def _gemm_model(trans_b: int) -> tuple[str, bytes]:
    stored = B if trans_b == 1 else B.T
    param = (
        "7767517\n2 2\nInput in0 0 1 in0\n"
        f"Gemm gemm_0 1 1 in0 out0 3={trans_b} 4=0 5=1 6=0 8={N} 9={K}\n"
    )
    return param, _tagged_f32(stored)


def _gemm_b(out: bytes) -> tuple[np.ndarray, float]:
    """(int8 codes N x K, B scale) from a converted gemm model's .bin, decoded by hand."""
    tag = struct.unpack_from("<I", out, 0)[0]
    assert tag == TAG_I8
    codes = np.frombuffer(out, np.int8, N * K, 4).reshape(N, K)
    pad = (-(N * K)) % 4
    (scale,) = struct.unpack_from("<f", out, 4 + N * K + pad)
    assert len(out) == 4 + N * K + pad + 4
    return codes, scale


def _codes(w: np.ndarray, s: np.float32) -> np.ndarray:
    v = (w.astype(np.float32) * np.float32(s)).astype(np.float32)
    return np.clip(_half_away(v), -127, 127).astype(np.int8)


def test_gemm_transb1_scale_whole_matrix_vs_first_row() -> None:
    param, data = _gemm_model(1)
    text_d, out_d = _convert(param, data, None, False)
    text_c, out_c = _convert(param, data, None, True)
    assert text_d == text_c
    codes_d, s_d = _gemm_b(out_d)
    codes_c, s_c = _gemm_b(out_c)
    whole = np.float32(127) / np.float32(np.abs(B).max())
    first_row = np.float32(127) / np.float32(np.abs(B[0]).max())  # ncnn2int8: B_data.w == K
    assert s_d == whole and s_c == first_row
    assert np.array_equal(codes_d, _codes(B, whole))
    assert np.array_equal(codes_c, _codes(B, first_row))
    # compat saturates every row larger than the first one; default never saturates
    assert (
        np.abs(codes_c[1]).max() == 127
        and codes_c[1].tolist().count(127) + codes_c[1].tolist().count(-127) >= 2
    )
    err_d = np.abs(codes_d / s_d - B).max()
    err_c = np.abs(codes_c / s_c - B).max()
    assert err_d < 0.01 < err_c


def test_gemm_transb0_is_the_same_in_both_modes() -> None:
    """ncnn2int8 transposes a transB=0 B into a 1-D Mat, so it scans all of B there."""
    param, data = _gemm_model(0)
    assert _convert(param, data, None, False) == _convert(param, data, None, True)


# --- (b) fp16 of a record whose length is not a multiple of 4: truncated tail -----------------


def _f16_truncate(x: np.float32) -> int:
    """src/mat.cpp float32_to_float16 at a4d2ea1 (normal range only, as used here)."""
    u = struct.unpack("<I", struct.pack("<f", float(x)))[0]
    sign, exp, sig = u >> 31, (u >> 23) & 0xFF, u & 0x7FFFFF
    return (sign << 15) | ((exp - 127 + 15) << 10) | (sig >> 13)


def _not_fp16_exact(n: int) -> np.ndarray:
    """+-(1 + 1.75 ulp) * 2**e: rounding gives 1 + 2 ulp, truncation 1 + 1 ulp."""
    i = np.arange(n)
    mant = np.float32(1 + 1.75 * 2.0**-10)
    sign = np.where(i % 2, np.float32(-1), np.float32(1))
    return (mant * np.exp2(i % 5 - 2).astype(np.float32) * sign).astype(np.float32)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 8, 9, 13, 16])
def test_fp16_tail_rounds_by_default_truncates_in_compat(n: int) -> None:
    x = _not_fp16_exact(n)
    rounded = x.astype(np.float16).view(np.uint16)  # no ties here: RNE == half away
    truncated = np.array([_f16_truncate(v) for v in x], np.uint16)
    default = float32_to_float16_bits(x)
    compat = float32_to_float16_bits(x, ncnn_compat=True)
    head = n - n % 4  # F16C blocks of 16/8/4, then the scalar converter
    assert np.array_equal(default, rounded)
    assert np.array_equal(compat[:head], rounded[:head])
    assert np.array_equal(compat[head:], truncated[head:])
    assert (compat != default).sum() == n % 4


def test_fp16_tail_at_the_overflow_boundary() -> None:
    x = np.array([65520.0, -65535.0, 65519.0], np.float32)  # 3 values: all in the scalar tail
    assert float32_to_float16_bits(x).tolist() == [0x7C00, 0xFC00, 0x7BFF]
    assert float32_to_float16_bits(x, ncnn_compat=True).tolist() == [0x7BFF, 0xFBFF, 0x7BFF]


def test_fp16_tail_in_a_converted_model() -> None:
    """A layer left in float is written as fp16; 7 weights -> the last 3 differ."""
    w = _not_fp16_exact(7)
    param = "7767517\n2 2\nInput in0 0 1 in0\nInnerProduct fc 1 1 in0 out0 0=1 1=0 2=7\n"
    _, out_d = _convert(param, _tagged_f32(w), None, False)
    _, out_c = _convert(param, _tagged_f32(w), None, True)
    assert struct.unpack_from("<I", out_d)[0] == TAG_F16 == struct.unpack_from("<I", out_c)[0]
    bits_d = np.frombuffer(out_d, "<u2", 7, 4)
    bits_c = np.frombuffer(out_c, "<u2", 7, 4)
    assert np.array_equal(bits_d, w.astype(np.float16).view(np.uint16))
    assert bits_c[:4].tolist() == bits_d[:4].tolist()
    assert bits_c[4:].tolist() == [_f16_truncate(v) for v in w[4:]]
    assert bits_c[4:].tolist() != bits_d[4:].tolist()


# --- (c) a weight scale out of int32 range (inf): ncnn2int8 writes -127 for every weight ------

CONV = "7767517\n2 2\nInput in0 0 1 in0\nConvolution conv 1 1 in0 out0 0=2 1=1 5=1 6=4\n"
CONV_W = np.array([0.5, -0.25, 0.0, 0.75, 0.1, -0.2, 0.3, -0.4], np.float32)[:4]
CONV_BIN = _tagged_f32(np.concatenate([CONV_W[:2], CONV_W[:2]])) + _raw([0.1, -0.1])


def _conv_codes(out: bytes) -> list[int]:
    assert struct.unpack_from("<I", out)[0] == TAG_I8
    return np.frombuffer(out, np.int8, 4, 4).tolist()


def test_out_of_range_product_default_saturates_compat_gives_minus_127() -> None:
    w = np.array([[0.5, -0.25, 0.0, 3.0]], np.float32)
    for scale in (np.inf, 1e30):
        s = np.array([scale], np.float32)
        assert quantize_rows(w, s).tolist() == [[127, -127, -127 if scale == np.inf else 0, 127]]
        assert quantize_rows(w, s, ncnn_compat=True).tolist() == [
            [-127, -127, -127 if scale == np.inf else 0, -127]
        ]


def test_huge_weight_scale_in_a_converted_model() -> None:
    table = "conv_param_0 1000000000000000019884624838656.000000 127.000000 \nconv 10.000000 \n"
    _, out_d = _convert(CONV, CONV_BIN, table, False)
    _, out_c = _convert(CONV, CONV_BIN, table, True)
    # channel 0 = [0.5, -0.25]: sign-saturated by default, -127 (INT_MIN clamped) in ncnn2int8
    assert _conv_codes(out_d) == [127, -127, 64, -32]
    assert _conv_codes(out_c) == [-127, -127, 64, -32]
    assert out_d[8:] == out_c[8:]


def test_inf_weight_scale_compat_matches_ncnn2int8() -> None:
    table = "conv_param_0 inf 127.000000 \nconv 10.000000 \n"
    _, out_c = _convert(CONV, CONV_BIN, table, True)
    assert _conv_codes(out_c) == [-127, -127, 64, -32]


# --- denormal weights -------------------------------------------------------------------------


def _denormal_conv() -> tuple[str, dict]:
    pf = parse_param(CONV)
    w = np.array([1e-40, -1e-40, 0.5, -0.25], np.float32)
    data = _tagged_f32(w) + _raw([0.0, 0.0])
    return pf.layers[1], read_modelbin(pf, data)["conv"]


@pytest.mark.parametrize("method", ["kl", "aciq"])
def test_denormal_conv_channel_is_reported_as_denormal(method: str) -> None:
    layer, weights = _denormal_conv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ws = conv_weight_scales(layer, weights, method)
    assert ws.params[0][0] == 1.0
    assert len(ws.warnings) == 1
    assert "below 1e-30 (denormal" in ws.warnings[0] and "all zero" not in ws.warnings[0]


def test_denormal_static_weights_are_reported_and_finite() -> None:
    pf = parse_param("7767517\n2 2\nInput in0 0 1 in0\nEmbed emb 1 1 in0 out0 0=2 1=3 3=6\n")
    data = _tagged_f32(np.full(6, 2e-40, np.float32))
    layer = pf.layers[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ws = static_weight_scales(layer, read_modelbin(pf, data)["emb"])
    assert np.isfinite(ws.params[0]).all()
    assert any("below 1e-30 (denormal" in w for w in ws.warnings)


def test_denormal_gemm_rows() -> None:
    b = np.array([[1e-40, -1e-40, 0.0, 1e-41]], np.float32)
    param = "7767517\n2 2\nInput in0 0 1 in0\nGemm g 1 1 in0 out0 3=1 4=0 5=1 6=0 8=1 9=4\n"
    pf = parse_param(param)
    w = read_modelbin(pf, _tagged_f32(b))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, out_d, rep_d = quantize_model(pf, w, None)
        _, out_c, _ = quantize_model(pf, w, None, ncnn_compat=True)
    assert np.frombuffer(out_d, np.int8, 4, 4).tolist() == [0, 0, 0, 0]
    assert struct.unpack_from("<f", out_d, 8)[0] == 1.0
    assert struct.unpack_from("<f", out_c, 8)[0] == np.inf  # 127 / 1e-40 in float, as upstream
    assert np.frombuffer(out_c, np.int8, 4, 4).tolist() == [-127, -127, -127, -127]
    assert any("below 1e-30 (denormal" in m for m in rep_d.warnings)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecal", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_cli_denormal_weights_no_runtimewarning(tmp_path: Path) -> None:
    w = np.array([1e-40, -1e-40, 0.5, -0.25], np.float32)
    (tmp_path / "m.param").write_text(CONV)
    (tmp_path / "m.bin").write_bytes(_tagged_f32(w) + _raw([0.0, 0.0]))
    rng = np.random.default_rng(5)
    for i in range(2):
        np.save(tmp_path / f"s{i}.npy", rng.uniform(-1, 1, (2, 3, 3)).astype(np.float32))
    (tmp_path / "list.txt").write_text("s0.npy\ns1.npy\n")
    cal = _cli(
        [
            "-q",
            "ncnn2table",
            "m.param",
            "m.bin",
            "list.txt",
            "t.table",
            "shape=[3,3,2]",
            "type=1",
            "thread=1",
        ],
        tmp_path,
    )
    assert cal.returncode == 0, cal.stderr
    assert "RuntimeWarning" not in cal.stderr
    assert "below 1e-30 (denormal" in cal.stderr and "all zero" not in cal.stderr
    q = _cli(["quantize", "m.param", "m.bin", "o.param", "o.bin", "--table", "t.table"], tmp_path)
    assert q.returncode == 0, q.stderr
    assert "RuntimeWarning" not in q.stderr

    gemm = "7767517\n2 2\nInput in0 0 1 in0\nGemm g 1 1 in0 out0 3=1 4=0 5=1 6=0 8=1 9=4\n"
    (tmp_path / "g.param").write_text(gemm)
    (tmp_path / "g.bin").write_bytes(_tagged_f32(np.array([1e-40, 0, 0, -1e-40], np.float32)))
    g = _cli(["quantize", "g.param", "g.bin", "go.param", "go.bin", "--table", "t.table"], tmp_path)
    assert "RuntimeWarning" not in g.stderr


# --- a missing <layer>_param_0 line: ncnn2int8 leaves every later layer of the type in float --

TWO_FC = (
    "7767517\n3 3\nInput in0 0 1 in0\n"
    "InnerProduct fc0 1 1 in0 x 0=2 1=0 2=8\n"
    "InnerProduct fc1 1 1 x out0 0=2 1=0 2=4\n"
)
TWO_FC_BIN = _tagged_f32(np.arange(8, dtype=np.float32) / 8 - 0.4) + _tagged_f32(
    np.array([0.3, -0.2, 0.1, 0.6], np.float32)
)
# fc0 has its blob line but no fc0_param_0; fc1 has both
TWO_FC_TABLE = "fc1_param_0 100.000000 90.000000 \nfc0 20.000000 \nfc1 30.000000 \n"


def test_missing_weight_line_stops_the_type_only_in_compat() -> None:
    text_d, _ = _convert(TWO_FC, TWO_FC_BIN, TWO_FC_TABLE, False)
    text_c, out_c = _convert(TWO_FC, TWO_FC_BIN, TWO_FC_TABLE, True)
    fc1_d = parse_param(text_d).layer("fc1").params
    fc1_c = parse_param(text_c).layer("fc1").params
    assert 8 in fc1_d and 8 not in fc1_c  # default: fc1 int8; ncnn2int8: fc1 left in float
    no_fc1 = "fc0 20.000000 \n"
    assert (text_c, out_c) == _convert(TWO_FC, TWO_FC_BIN, no_fc1, False)


# --- properties: the two modes differ only where documented -----------------------------------

_F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@given(w=st.lists(_F32, min_size=1, max_size=24), s=_F32)
def test_quantize_modes_differ_only_out_of_int32_range(w: list[float], s: float) -> None:
    wa = np.array([w], np.float32)
    sa = np.array([s], np.float32)
    d = quantize_rows(wa, sa)[0]
    c = quantize_rows(wa, sa, ncnn_compat=True)[0]
    with np.errstate(all="ignore"):
        v = (wa[0] * sa[0]).astype(np.float32)
        adj = (v + np.copysign(np.float32(0.5), v)).astype(np.float32)
    out = ~np.isnan(adj) & (np.abs(adj.astype(np.float64)) >= 2.0**31)
    assert np.array_equal(d[~out], c[~out])
    assert (c[out] == -127).all()
    assert np.array_equal(d[out], np.where(v[out] > 0, 127, -127))


@given(x=st.lists(_F32, min_size=0, max_size=40))
def test_fp16_modes_differ_only_in_the_scalar_tail(x: list[float]) -> None:
    xa = np.array(x, np.float32)
    head = xa.size - xa.size % 4
    d = float32_to_float16_bits(xa)
    c = float32_to_float16_bits(xa, ncnn_compat=True)
    assert np.array_equal(d[:head], c[:head])
    tail = xa[head:]
    for got, v in zip(c[head:].tolist(), tail.tolist(), strict=True):
        u = struct.unpack("<I", struct.pack("<f", v))[0]
        sign, exp, sig = u >> 31, (u >> 23) & 0xFF, u & 0x7FFFFF
        newexp = exp - 112
        if exp == 0xFF:
            want = 0x7C00 | (0x200 if sig else 0)
        elif exp == 0 or newexp <= 0:
            want = 0
        elif newexp >= 31:
            want = 0x7C00
        else:
            want = (newexp << 10) | (sig >> 13)
        assert got == (sign << 15) | want
