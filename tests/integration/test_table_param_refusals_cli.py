"""``edgecal quantize`` / ``calibrate`` on the tables and .param files that used to pass
silently: empty tables, a missing input blob scale line, a layer name given twice, a BOM."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
D_MODEL = [str(DIGITS / "model.param"), str(DIGITS / "model.bin")]


def _quantize(tmp_path: Path, table: Path) -> int:
    out = [str(tmp_path / "m.param"), str(tmp_path / "m.bin")]
    return main(["quantize", *D_MODEL, *out, "--table", str(table)])


def test_an_empty_table_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "empty.table"
    table.write_text("# nothing yet\n")
    assert _quantize(tmp_path, table) == 1
    assert f"table {table} has no scale lines" in capsys.readouterr().err
    assert not (tmp_path / "m.param").exists() and not (tmp_path / "m.bin").exists()


def test_a_missing_input_blob_scale_line_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (DIGITS / "kl.table").read_text().splitlines(keepends=True)
    layer = next(ln.split()[0] for ln in lines if "_param_" not in ln.split()[0])
    table = tmp_path / "miss_act.table"
    table.write_text("\ufeff" + "".join(ln for ln in lines if ln.split()[0] != layer))
    assert _quantize(tmp_path, table) == 0  # the BOM is skipped, too
    err = capsys.readouterr().err
    assert f"warning: layer {layer!r}: no {layer!r} line" in err and str(table) in err
    # validate --table makes the same int8 model in memory: the same warning
    pre = ["--pixel", "GRAY", "--mean", "0", "--norm", "0.00392157", "--shape", "32,32"]
    images = ["--images", str(DIGITS / "images")]
    assert main(["validate", *D_MODEL, "--table", str(table), *images, *pre]) == 0
    err = capsys.readouterr().err
    assert f"warning: layer {layer!r}: no {layer!r} line" in err and str(table) in err


@pytest.mark.parametrize("edit", ["bom", "dup"])
def test_a_bad_param_is_refused_by_calibrate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    text = (DIGITS / "model.param").read_text()
    names = [ln.split()[1] for ln in text.splitlines()[2:]]
    if edit == "bom":
        text, want = "\ufeff" + text, ":1: the file starts with a UTF-8 byte-order mark"
    else:
        first, second = names[1], names[2]
        text = text.replace(f" {second} ", f" {first} ", 1)
        want = f"layer name {first!r} is used twice, on line 4 and line 5"
    param = tmp_path / "bad.param"
    param.write_text(text, encoding="utf-8")
    out = tmp_path / "bad.table"
    args = ["calibrate", str(param), D_MODEL[1], "--images", str(DIGITS / "images")]
    assert main([*args, "--pixel", "GRAY", "--out", str(out)]) == 1
    assert want in capsys.readouterr().err
    assert not out.exists()
