from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecal.calib.table import parse_table
from edgecal.errors import TableError
from edgecal.int8.convert import quantize_model
from edgecal.int8.quantize import quantize_rows
from edgecal.ncnnfmt.modelbin import read_modelbin
from edgecal.ncnnfmt.param import parse_param

REF = Path(__file__).resolve().parents[1] / "data" / "reference"


def _load(case: str):
    pf = parse_param((REF / case / "model.param").read_text())
    return pf, read_modelbin(pf, (REF / case / "model.bin").read_bytes())


@pytest.mark.parametrize("case", ["digits", "npy", "multi"])
@pytest.mark.parametrize("method", ["kl", "aciq"])
def test_byte_identical(case: str, method: str) -> None:
    pf, w = _load(case)
    table = parse_table((REF / case / f"{method}.table").read_text())
    text, data, report = quantize_model(pf, w, table)
    assert text == (REF / case / f"int8_{method}.param").read_text()
    assert data == (REF / case / f"int8_{method}.bin").read_bytes()
    assert not report.warnings


def test_quantize_rounding() -> None:
    w = np.array([[0.5, -0.5, 0.49999997, 1.5, 200.0, -200.0, 0.0]], np.float32)
    q = quantize_rows(w, np.array([1.0], np.float32))
    assert q.tolist() == [[1, -1, 1, 2, 127, -127, 0]]
    nan = quantize_rows(np.zeros((1, 3), np.float32), np.array([np.inf], np.float32))
    assert nan.tolist() == [[-127, -127, -127]]


def _run(param: str, data: bytes, x: np.ndarray, inp: str, out: str, tmp: Path) -> np.ndarray:
    ncnn = pytest.importorskip("ncnn")
    (tmp / "m.param").write_text(param)
    (tmp / "m.bin").write_bytes(data)
    net = ncnn.Net()
    net.opt.num_threads = 1
    assert net.load_param(str(tmp / "m.param")) == 0
    assert net.load_model(str(tmp / "m.bin")) == 0
    ex = net.create_extractor()
    arr = np.ascontiguousarray(x, dtype=np.float32)
    ex.input(inp, ncnn.Mat(arr).clone())
    ret, mat = ex.extract(out)
    assert ret == 0
    return np.array(mat).reshape(-1).copy()


@pytest.mark.parametrize("method", ["kl", "aciq"])
def test_pyncnn_runs_converted(method: str, tmp_path: Path) -> None:
    pf, w = _load("digits")
    table = parse_table((REF / "digits" / f"{method}.table").read_text())
    text, data, _ = quantize_model(pf, w, table)
    x = np.load(REF / "digits" / "test.npz")["x"][:8].astype(np.float32) / 255.0
    fp32_text = (REF / "digits" / "model.param").read_text()
    fp32_bin = (REF / "digits" / "model.bin").read_bytes()
    for img in x:
        a = _run(fp32_text, fp32_bin, img[None], "in0", "out0", tmp_path)
        b = _run(text, data, img[None], "in0", "out0", tmp_path)
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert cos > 0.99


def test_keep_fp32_and_missing_param_line(tmp_path: Path) -> None:
    pf, w = _load("digits")
    table_text = (REF / "digits" / "kl.table").read_text()
    text, data, report = quantize_model(pf, w, parse_table(table_text), keep_fp32=["convrelu_1"])
    assert "convrelu_1" in report.kept_float
    out = parse_param(text)
    assert 8 not in out.layer("convrelu_1").params
    # convdwrelu_0 feeds the float layer, so it must not be requantize-fused
    assert out.layer("convdwrelu_0").param_int(8, 0) == 1
    assert out.layer("convrelu_0").param_int(8, 0) == 102
    recs = read_modelbin(out, data)
    assert recs["convrelu_1"]["weight"].storage == "f16"
    x = np.load(REF / "digits" / "test.npz")["x"][0].astype(np.float32)[None] / 255.0
    assert np.isfinite(_run(text, data, x, "in0", "out0", tmp_path)).all()

    lines = [ln for ln in table_text.splitlines(True) if not ln.startswith("convrelu_1_param_0")]
    _, _, report2 = quantize_model(pf, w, parse_table("".join(lines)))
    assert report2.kept_float == ["convrelu_1"]
    assert any("convrelu_1" in m for m in report2.warnings)
    assert "convrelu_2" in report2.quantized  # later convs are still quantized


def test_table_errors() -> None:
    pf, w = _load("digits")
    table_text = (REF / "digits" / "kl.table").read_text()
    with pytest.raises(TableError, match="ghost"):
        quantize_model(pf, w, parse_table(table_text + "ghost 1.0 \n"))
    npy_table = parse_table((REF / "npy" / "kl.table").read_text())
    bad = parse_table(table_text)
    bad.records["convrelu_0_param_0"] = npy_table.records["convrelu_0_param_0"]
    with pytest.raises(TableError, match=r"convrelu_0.*8 weight scales.*needs 16"):
        quantize_model(pf, w, bad)


def test_unknown_keys_are_kept() -> None:
    pf = parse_param(
        "7767517\n2 2\nInput in0 0 1 in0 0=4 1=2 2=3\nReshape r 1 1 in0 out 0=-1 1=-233 12=0 13=0\n"
    )
    text, data, _ = quantize_model(pf, {}, None)
    assert text.splitlines()[3].split()[5:] == ["out", "0=-1", "12=0", "13=0"]
    assert data == b""
