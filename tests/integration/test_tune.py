"""``edgecal tune`` and ``validate --sensitivity`` on the local device with the sample model.

The broken table is the KL table with ``convrelu_0``'s input scale multiplied by 40: the
first layer clips almost everything (measured: int8 agreement with fp32 falls to 0.11).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecal.calib.table import parse_table, render_table, weight_key
from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
MODEL = [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")]
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
N_IMAGES = 60


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tables")
    images = d / "calib.txt"
    lines = (SAMPLE / "calib.txt").read_text().splitlines()[:N_IMAGES]
    images.write_text("".join(f"{SAMPLE / p if not Path(p).is_absolute() else p}\n" for p in lines))
    good = d / "good.table"
    assert main(["-q", "calibrate", *MODEL, "--images", str(images), *PRE, "--out", str(good)]) == 0
    table = parse_table(good.read_text())
    table.set("convrelu_0", float(table.records["convrelu_0"][0]) * 40)
    broken = d / "broken.table"
    broken.write_text(render_table(table))
    return {"images": images, "good": good, "broken": broken}


def tune(tables: dict[str, Path], out: Path, *extra: str) -> int:
    return main(
        [
            "-q",
            "tune",
            *MODEL,
            "--images",
            str(tables["images"]),
            *PRE,
            "--threads",
            "1",
            "--out-dir",
            str(out),
            "--no-report",
            *extra,
        ]
    )


def quantized_bytes(tmp: Path, table: Path, *keep: str) -> tuple[bytes, bytes]:
    p, b = tmp / "q.param", tmp / "q.bin"
    args = ["-q", "quantize", *MODEL, str(p), str(b), "--table", str(table)]
    assert main([*args, *(["--keep-fp32", *keep] if keep else [])]) == 0
    return p.read_bytes(), b.read_bytes()


def test_tune_recalibrates_the_clipped_layer(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = tune(
        tables, out, "--table", str(tables["broken"]), "--max-drop", "1", "--try-methods", "kl,aciq"
    )
    text = capsys.readouterr().out
    assert code == 0, text
    doc = json.loads((out / "tune.json").read_text())
    assert doc["target_met"] and doc["initial"]["drop_points"] > 50
    assert doc["final"]["drop_points"] <= 1.0
    assert doc["layer_methods"]["convrelu_0"] in ("kl", "aciq")
    assert doc["fp32_layers"] == []
    # int8 first (issue 12): the broken table is not the best whole-model table; tune starts
    # from the best of the methods' tables (which do not clip convrelu_0) instead of mending
    # the given one layer by layer
    assert doc["start_method"] in ("kl", "aciq") and doc["int8_layers"] == 8
    assert "target met" in text and f"started from the {doc['start_method']} table" in text
    sens = json.loads((out / "sensitivity.json").read_text())
    assert sens["layers"][0]["layer"] == "convrelu_0" and sens["layers"][0]["rank"] == 1
    assert sens["layers"][0]["gain_points"] > 50
    # the written int8 model is exactly what `quantize` makes of the written table
    final = out / "calibration.table"
    got = ((out / "int8.param").read_bytes(), (out / "int8.bin").read_bytes())
    assert got == quantized_bytes(tmp_path, final)
    kl = parse_table(tables["good"].read_text())
    chosen = parse_table(final.read_text())
    assert float(chosen.records["convrelu_0"][0]) < float(kl.records["convrelu_0"][0]) * 2
    thr = json.loads((out / "thresholds.json").read_text())["layers"]["convrelu_0"]
    assert thr["kl"] > 0 and thr["aciq"] > 0 and thr["absmax"] >= thr["kl"]
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "tune" and run["inputs"]["table"]["sha256"]
    [board] = json.loads((out / "validation.json").read_text())["results"]
    assert board["agreement"] >= 0.97 and len(board["layers"]) == 8


def test_tune_keeps_the_layer_in_fp32_when_told_not_to_recalibrate(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert (
        tune(
            tables,
            out,
            "--table",
            str(tables["broken"]),
            "--max-drop",
            "1",
            "--try-methods",
            "none",
        )
        == 0
    )
    text = capsys.readouterr().out
    doc = json.loads((out / "tune.json").read_text())
    assert [x["layer"] for x in doc["fp32_layers"]] == ["convrelu_0"]
    assert isinstance(doc["fp32_layers"][0]["latency_cost_ms"], float)
    assert "convrelu_0: kept in fp32, latency cost" in text
    final = parse_table((out / "calibration.table").read_text())
    assert "convrelu_0" not in final and weight_key("convrelu_0") not in final
    # the fallback is the core's keep-fp32 mechanism: same bytes as quantize --keep-fp32
    want = quantized_bytes(tmp_path, tables["broken"], "convrelu_0")
    assert ((out / "int8.param").read_bytes(), (out / "int8.bin").read_bytes()) == want


def test_tune_says_why_the_target_is_out_of_reach(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert (
        tune(
            tables,
            out,
            "--table",
            str(tables["broken"]),
            "--max-drop",
            "0",
            "--try-methods",
            "none",
            "--max-fp32-layers",
            "0",
        )
        == 1
    )
    text = capsys.readouterr().out
    assert "target NOT met: the budget of 0 layer(s) in fp32 is spent" in text
    assert not json.loads((out / "tune.json").read_text())["target_met"]
    assert (out / "int8.param").exists()  # the best model found is still written


def test_tune_bad_input(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    digits = ROOT / "tests" / "data" / "reference" / "digits" / "kl.table"
    for extra, code, match in (
        (["--max-drop", "-1"], 2, "--max-drop -1"),
        (["--max-drop", "1", "--try-methods", "kl,best"], 2, "unknown method 'best'"),
        (["--max-drop", "1", "--table", str(digits)], 1, "does not have"),
    ):
        assert tune(tables, out, *extra) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edgecal: error:") and match in err[0], err
        assert not out.exists()


def test_validate_sensitivity_ranks_the_broken_layer_first(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "v"
    assert (
        main(
            [
                "-q",
                "validate",
                *MODEL,
                "--table",
                str(tables["broken"]),
                "--images",
                str(tables["images"]),
                *PRE,
                "--threads",
                "1",
                "--sensitivity",
                "--run-dir",
                str(run),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    sens = doc["sensitivity"]
    first = sens["layers"][0]
    assert first["layer"] == "convrelu_0" and first["gain_points"] > 50
    assert first["keep_fp32"]["agreement"] > 0.95
    # quantizing only convrelu_0 (broken) loses as much as the whole model
    assert first["only_int8"]["drop_points"] > 50
    assert all(e["only_int8"]["drop_points"] < 5 for e in sens["layers"][1:])
    assert json.loads((run / "sensitivity.json").read_text())["layers"][0]["layer"] == "convrelu_0"
    assert (run / "validation.json").exists() and (run / "run.json").exists()


def test_check_gate_passes_the_good_table_and_fails_the_broken_one(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import xml.etree.ElementTree as ET

    common = [*MODEL, "--images", str(tables["images"]), *PRE, "--threads", "1"]
    base = tmp_path / "baseline.json"
    assert (
        main(
            [
                "-q",
                "validate",
                *common,
                "--table",
                str(tables["good"]),
                "--save-baseline",
                str(base),
            ]
        )
        == 0
    )
    capsys.readouterr()
    junit, js = tmp_path / "check.xml", tmp_path / "check.json"
    assert (
        main(
            [
                "-q",
                "check",
                "--baseline",
                str(base),
                *common,
                "--table",
                str(tables["good"]),
                "--junit",
                str(junit),
                "--json-out",
                str(js),
            ]
        )
        == 0
    )
    assert "PASS" in capsys.readouterr().out
    suites = ET.parse(junit).getroot()
    assert int(suites.get("failures", "0")) == 0 and int(suites.get("tests", "0")) >= 4
    assert json.loads(js.read_text())["passed"] is True
    assert (
        main(
            [
                "-q",
                "check",
                "--baseline",
                str(base),
                *common,
                "--table",
                str(tables["broken"]),
                "--junit",
                str(junit),
                "--json-out",
                str(js),
            ]
        )
        == 3
    )
    cap = capsys.readouterr()
    assert "FAIL" in cap.out and "agreement" in cap.out and "check failed" in cap.err
    suites = ET.parse(junit).getroot()
    assert int(suites.get("failures", "0")) >= 2
    assert suites.find(".//failure") is not None
    assert json.loads(js.read_text())["passed"] is False
