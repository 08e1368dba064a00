"""``edgecal validate`` on the local device: the reference digits model and the sample model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgecal.workflows.validate as validate_mod
from edgecal.cli.main import main
from edgecal.device.local import LocalDevice
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.quality.validation import QuantLayer

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
SAMPLE = ROOT / "samples" / "tinted_digits"
D_PRE = ["--pixel", "GRAY", "--mean", "0", "--norm", "0.00392157"]
S_PRE = [
    "--pixel",
    "RGB",
    "--mean",
    "127.5,127.5,127.5",
    "--norm",
    "0.00784314,0.00784314,0.00784314",
    "--shape",
    "48,48",
]
D_MODEL = [str(DIGITS / "model.param"), str(DIGITS / "model.bin")]
S_MODEL = [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")]


@pytest.fixture(scope="module")
def digits_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    y = np.load(DIGITS / "calib_labels.npz")["y"]
    names = sorted(p.name for p in (DIGITS / "images").iterdir())
    assert len(names) == len(y) == 40
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    path.write_text(
        "file,label\n" + "".join(f"{n},{int(v)}\n" for n, v in zip(names, y, strict=True))
    )
    return path


def _sane(doc: dict[str, Any]) -> None:
    """What a correct validation of a well-calibrated model must show."""
    for layer in doc["layers"]:
        assert layer["cosine_mean"] > 0.99, layer
        # SQNR sees the scale (cosine does not): a wrongly dequantized int8 blob fails here
        assert layer["sqnr_db"] > 15.0, layer
    assert doc["agreement"] >= 0.95 and doc["cosine_mean"] > 0.99
    assert doc["latency_fp32_ms"] > 0 and doc["latency_int8_ms"] > 0


def test_digits_table_json_and_baseline(
    tmp_path: Path, digits_labels: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "baseline.json"
    assert (
        main(
            [
                "-q",
                "validate",
                *D_MODEL,
                "--table",
                str(DIGITS / "kl.table"),
                "--images",
                str(DIGITS / "images"),
                *D_PRE,
                "--labels",
                str(digits_labels),
                "--json",
                "--save-baseline",
                str(base),
            ]
        )
        == 0
    )
    full = json.loads(capsys.readouterr().out)
    assert json.loads(base.read_text()) == full
    assert full["schema"] == 1 and full["consistency"] is None and len(full["results"]) == 1
    doc = full["results"][0]
    assert doc["n_samples"] == 40 and doc["output_blob"] == "out0"
    assert doc["runtime"] == "deployed" and doc["threads"] >= 1
    for key in (
        "top1_fp32",
        "top1_int8",
        "agreement",
        "cosine_mean",
        "cosine_min",
        "sqnr_mean_db",
        "sqnr_min_db",
        "latency_fp32_ms",
        "latency_int8_ms",
        "device",
        "fp32",
        "int8",
    ):
        assert key in doc
    assert doc["top1_fp32"] >= 0.9 and doc["top1_int8"] >= doc["top1_fp32"] - 0.05
    assert [(x["name"], x["requantized"]) for x in doc["layers"]] == [
        ("convrelu_0", True),
        ("convdwrelu_0", True),
        ("convrelu_1", True),
        ("convrelu_2", False),
        ("linear_7", False),
    ]
    _sane(doc)
    assert doc["int8"]["table"] == str(DIGITS / "kl.table")
    for model in ("fp32", "int8"):  # one way of measuring: the median with its spread
        lat = doc[f"latency_{model}"]
        assert lat["runs"] == 40 and lat["median_ms"] == doc[f"latency_{model}_ms"]
        assert 0 < lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]


def test_digits_wrong_dequantization_scale_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dividing the raw codes by a wrong top scale must fail the sanity check above."""
    fp32 = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    int8 = load_model(DIGITS / "int8_kl.param", DIGITS / "int8_kl.bin")
    spec = InputSpec(blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,))
    source = make_sample_source([spec], [read_list(DIGITS / "images")])
    real = validate_mod.quantized_layers

    def wrong(*a: Any, **k: Any) -> list[QuantLayer]:
        return [
            dataclasses.replace(q, top_scale=q.top_scale * 1.5) if q.top_scale else q
            for q in real(*a, **k)
        ]

    with LocalDevice() as device:
        ref = validate_mod.Reference(device, fp32, source, threads=1)
        good = validate_mod.validate(ref, int8).to_dict()
        _sane(good)
        monkeypatch.setattr(validate_mod, "quantized_layers", wrong)
        bad = validate_mod.validate(ref, int8).to_dict()
    with pytest.raises(AssertionError):
        _sane(bad)
    by_name = {x["name"]: x for x in bad["layers"]}
    assert by_name["convrelu_0"]["sqnr_db"] < 12.0  # (1 - 1/1.5)^2 of the energy: ~9.5 dB
    assert by_name["convrelu_2"]["sqnr_db"] == pytest.approx(
        next(x for x in good["layers"] if x["name"] == "convrelu_2")["sqnr_db"]
    )


def test_sample_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "s.table"
    assert (
        main(
            [
                "-q",
                "calibrate",
                *S_MODEL,
                "--images",
                str(SAMPLE / "calib.txt"),
                *S_PRE,
                "--out",
                str(table),
            ]
        )
        == 0
    )
    images = tmp_path / "test.txt"
    images.write_text("".join(f"{p}\n" for p in sorted((SAMPLE / "test").iterdir())[:120]))
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "validate",
                *S_MODEL,
                "--table",
                str(table),
                "--images",
                str(images),
                *S_PRE,
                "--labels",
                str(SAMPLE / "labels.csv"),
                "--json",
            ]
        )
        == 0
    )
    [doc] = json.loads(capsys.readouterr().out)["results"]
    assert doc["n_samples"] == 120
    assert doc["top1_fp32"] >= 0.95 and doc["top1_int8"] >= doc["top1_fp32"] - 0.03
    assert len(doc["layers"]) == 8
    _sane(doc)
    # the human report names every layer
    assert (
        main(["-q", "validate", *S_MODEL, "--table", str(table), "--images", str(images), *S_PRE])
        == 0
    )
    out = capsys.readouterr().out
    assert "agreement" in out and "median latency" in out and "convdwrelu_0" in out


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], match: str, out_file: Path) -> None:
    code = main(["-q", "validate", *args, "--save-baseline", str(out_file)])
    cap = capsys.readouterr()
    assert code != 0
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgecal: error:") and match in lines[0]
    assert cap.out == "" and not out_file.exists()


def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.json"
    imgs = ["--images", str(DIGITS / "images"), *D_PRE]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,label\n" + "".join(f"img_{i}.png,1\n" for i in range(40)))
    _fails(
        [*D_MODEL, "--table", str(DIGITS / "kl.table"), *imgs, "--labels", str(wrong)],
        capsys,
        "no label for 40 image(s)",
        out,
    )
    _fails([*D_MODEL, *S_MODEL, *imgs], capsys, "is not an int8 model of", out)
    _fails(
        [*S_MODEL, "--table", str(DIGITS / "kl.table"), "--images", str(SAMPLE / "test"), *S_PRE],
        capsys,
        "the model does not have: linear_7",
        out,
    )
    _fails(
        [
            *D_MODEL,
            str(DIGITS / "int8_kl.param"),
            str(DIGITS / "int8_kl.bin"),
            "--table",
            str(DIGITS / "kl.table"),
            *imgs,
        ],
        capsys,
        "either INT8.param INT8.bin or --table",
        out,
    )


@pytest.mark.parametrize("fc_int8", [False, True], ids=["fc-fp32", "fc-int8"])
def test_outputs_of_different_shapes_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fc_int8: bool
) -> None:
    """An "int8 model" of the same graph whose classifier has 5 outputs instead of 10.  Kept
    in fp32, its output differs; quantized, the device's comparison of the layers finds it
    first, and the error names the layer, both shapes and the image."""
    import copy

    from edgecal.calib.table import parse_table
    from edgecal.int8.convert import quantize_model
    from edgecal.ncnnfmt.modelbin import WeightRecord
    from edgecal.ncnnfmt.param import int_value

    fp32 = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    pf = copy.deepcopy(fp32.param)
    fc = next(layer for layer in pf.layers if layer.name == "linear_7")
    fc.set_param(0, int_value(5))
    fc.set_param(2, int_value(2560))
    weights = dict(fp32.weights)
    w, b = weights["linear_7"]["weight"], weights["linear_7"]["bias"]
    weights["linear_7"] = {
        "weight": WeightRecord("weight", w.storage, w.values[:2560]),
        "bias": WeightRecord("bias", b.storage, b.values[:5]),
    }
    full = parse_table((DIGITS / "kl.table").read_text())
    table = full.without(["linear_7"])
    if fc_int8:
        table.set("linear_7_param_0", [100.0] * 5)  # 5 output channels
        table.set("linear_7", full.records["linear_7"])
        expected = "of layer linear_7 is (5,) in int8 and (10,) in fp32 on sample "
        expected += str(read_list(DIGITS / "images")[0])
    else:
        expected = "in fp32 and (5,) in int8"
    text, data, _ = quantize_model(pf, weights, table, keep_fp32=[] if fc_int8 else ["linear_7"])
    (tmp_path / "i.param").write_text(text)
    (tmp_path / "i.bin").write_bytes(data)
    _fails(
        [
            *D_MODEL,
            str(tmp_path / "i.param"),
            str(tmp_path / "i.bin"),
            "--images",
            str(DIGITS / "images"),
            *D_PRE,
        ],
        capsys,
        expected,
        tmp_path / "b.json",
    )


def test_an_int8_model_without_int8_layers_has_no_layer_figures() -> None:
    """Every layer kept in fp32 (a tune that gave them all up): nothing to compare on the
    device, the outputs' figures still there."""
    fp32 = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    spec = InputSpec(blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,))
    source = make_sample_source([spec], [read_list(DIGITS / "images")])
    with LocalDevice() as device:
        ref = validate_mod.Reference(device, fp32, source, threads=1)
        got = validate_mod.validate(ref, fp32)
    assert got.layers == [] and got.agreement == 1.0
    assert got.cosine_min == pytest.approx(1.0, abs=1e-12)


def test_labels_beyond_the_class_count_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = sorted(p.name for p in (DIGITS / "images").iterdir())
    labels = tmp_path / "l.csv"
    labels.write_text(
        "file,label\n" + "".join(f"{n},{12 if i == 3 else 1}\n" for i, n in enumerate(names))
    )
    _fails(
        [
            *D_MODEL,
            "--table",
            str(DIGITS / "kl.table"),
            "--images",
            str(DIGITS / "images"),
            *D_PRE,
            "--labels",
            str(labels),
        ],
        capsys,
        "has only 10 classes",
        tmp_path / "b.json",
    )


def test_ctrl_c_stops_validate_at_the_next_image(tmp_path: Path) -> None:
    """Ctrl-C halfway: the board's validation (a pool thread) stops at its next image instead
    of running to the end while the command waits (it did: 8.4 s after the signal, all 1500
    images validated); nothing is written."""
    import signal
    import subprocess
    import sys

    images = read_list(DIGITS / "images")
    lst = tmp_path / "many.txt"
    lst.write_text("".join(f"{p}\n" for p in images * 60))  # 2400 images
    n = len(images) * 60
    argv = [sys.executable, "-m", "edgecal", "validate", *D_MODEL, "--table"]
    argv += [str(DIGITS / "kl.table"), "--images", str(lst), *D_PRE, "--threads", "1"]
    argv += ["--save-baseline", str(tmp_path / "b.json")]
    proc = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the first progress line: images are being validated
        lines.append(line)
        if "edgecal: validate " in line:
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.readlines()
    assert proc.wait() == 130, lines
    assert lines[-1].strip() == "edgecal: interrupted", lines
    assert not any(f"validate {n}/{n}" in x for x in lines), lines
    assert not (tmp_path / "b.json").exists()
