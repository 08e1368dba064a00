"""The demo flow on the committed sample model, plus --keep-fp32 and the deployed runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgecal.cli.main import main
from edgecal.ncnnfmt.param import parse_param

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
REFERENCE = ROOT / "tests" / "data" / "reference"
PRE = [
    "--pixel",
    "RGB",
    "--mean",
    "127.5,127.5,127.5",
    "--norm",
    "0.00784314,0.00784314,0.00784314",
    "--shape",
    "48,48",
]


def test_sample_calibrate_quantize_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")]
    table, q = tmp_path / "s.table", [str(tmp_path / "q.param"), str(tmp_path / "q.bin")]
    assert (
        main(
            [
                "-q",
                "calibrate",
                *m,
                "--images",
                str(SAMPLE / "calib.txt"),
                *PRE,
                "--out",
                str(table),
            ]
        )
        == 0
    )
    assert main(["-q", "quantize", *m, *q, "--table", str(table)]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "validate",
                *m,
                *q,
                "--images",
                str(SAMPLE / "test"),
                *PRE,
                "--labels",
                str(SAMPLE / "labels.csv"),
                "--json",
            ]
        )
        == 0
    )
    [res] = json.loads(capsys.readouterr().out)["results"]
    assert res["n_samples"] == 300
    assert res["top1_fp32"] >= 0.95
    assert res["top1_int8"] >= res["top1_fp32"] - 0.02
    assert res["agreement"] >= 0.97 and res["cosine_mean"] > 0.99


def test_keep_fp32_keeps_only_that_layer_and_breaks_the_fusion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = REFERENCE / "digits"
    out = tmp_path / "k.param"
    assert (
        main(
            [
                "-q",
                "quantize",
                str(d / "model.param"),
                str(d / "model.bin"),
                str(out),
                str(tmp_path / "k.bin"),
                "--table",
                str(d / "kl.table"),
                "--keep-fp32",
                "convrelu_1",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["kept_float"] == ["convrelu_1"]
    pf = parse_param(out.read_text())
    int8 = {layer.name: layer.param_int(8, 0) for layer in pf.layers}
    assert int8["convrelu_1"] == 0
    assert int8["convdwrelu_0"] == 1  # no longer requantize-fused into the kept layer
    assert int8["convrelu_2"] == 2 and int8["linear_7"] == 2


def test_commented_weight_line_keeps_one_layer_not_all_later_convs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = REFERENCE / "digits"
    table = tmp_path / "t.table"
    table.write_text(
        (d / "kl.table").read_text().replace("convrelu_0_param_0", "#convrelu_0_param_0")
    )
    out = tmp_path / "c.param"
    assert (
        main(
            [
                "-q",
                "quantize",
                str(d / "model.param"),
                str(d / "model.bin"),
                str(out),
                str(tmp_path / "c.bin"),
                "--table",
                str(table),
            ]
        )
        == 0
    )
    assert "convrelu_0" in capsys.readouterr().err
    int8 = {layer.name: layer.param_int(8, 0) for layer in parse_param(out.read_text()).layers}
    assert int8["convrelu_0"] == 0 and int8["convrelu_1"] == 102 and int8["convrelu_2"] == 2


def test_deployed_runtime_and_hello(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "digits"
    shutil.copytree(REFERENCE / "digits", d)
    assert (
        main(
            [
                "-q",
                "calibrate",
                str(d / "model.param"),
                str(d / "model.bin"),
                "--images",
                str(d / "images.txt"),
                "--pixel",
                "GRAY",
                "--mean",
                "0",
                "--norm",
                "0.00392157",
                "--shape",
                "32,32",
                "--runtime",
                "deployed",
                "--out",
                str(d / "dep.table"),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["runtime"] == "deployed" and len(summary["layers"]) == 5
    assert main(["hello", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["protocol"] >= 1 and "ncnn" in json.dumps(info)
