"""Argument forms: ``check --results`` takes results files, never a model (a model given after
it is a usage error),
``ncnn2int8 --ncnn-compat`` anywhere, ``--table``/``--out`` once, ``--boards`` checked even
without ``--device``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgecal.cli.main import build_parser, main
from tests.unit.test_gate import board, doc

REF = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"


def test_results_takes_files_never_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = tmp_path / "r.json"
    r.write_text(json.dumps(doc(board())))
    for argv in (
        ["check", "--results", str(r), "m.param", "m.bin", "i.param", "i.bin"],
        ["check", "m.param", "m.bin", "i.param", "i.bin", "--results", str(r)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--results checks saved results files: do not give a model" in err, err
        assert "m.param" in err and "not JSON" not in err
    # several files, in one --results or repeated: both read (one board twice)
    for argv in (
        ["check", "--results", str(r), str(r), "--min-cosine", "0.5"],
        ["check", "--results", str(r), "--results", str(r), "--min-cosine", "0.5"],
    ):
        assert main(argv) == 1
        assert "in both" in capsys.readouterr().err


def _model(tmp_path: Path) -> tuple[str, str, str]:
    for name in ("model.param", "model.bin", "kl.table"):
        shutil.copy(REF / name, tmp_path / name)
    return tuple(str(tmp_path / n) for n in ("model.param", "model.bin", "kl.table"))  # type: ignore[return-value]


def test_ncnn2int8_ncnn_compat_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    param, binf, table = _model(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["ncnn2int8", "--ncnn-compat", param, binf, f"{a}.param", f"{a}.bin", table]) == 0
    assert main(["ncnn2int8", param, binf, f"{b}.param", f"{b}.bin", table, "--ncnn-compat"]) == 0
    assert Path(f"{a}.bin").read_bytes() == Path(f"{b}.bin").read_bytes()
    assert Path(f"{a}.param").read_text() == Path(f"{b}.param").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ncnn2int8", "--help"])
    assert "--ncnn-compat" in capsys.readouterr().out


Q = ["quantize", "a.param", "a.bin", "b.param", "b.bin"]
T = ["tune", "a.param", "a.bin", "--max-drop", "1", "--out-dir", "d"]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        ([*Q, "--table", "x", "--table", "y"], "--table"),
        (["validate", "a.param", "a.bin", "--table", "x", "--table=y"], "--table"),
        ([*T, "--table", "x", "--table", "y"], "--table"),
        (["calibrate", "a.param", "a.bin", "--out", "x", "-o", "y"], "--out/-o"),
        (["table", "--histograms", "h.npz", "-o", "x", "--out", "y"], "--out/-o"),
    ],
)
def test_an_output_or_table_given_twice_is_a_usage_error(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert f"argument {option}: given twice" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["validate", "ncnn2int8 after", "ncnn2int8 before"])
def test_a_missing_boards_file_is_an_error_without_a_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    param, binf, table = _model(tmp_path)
    nope = str(tmp_path / "nope.toml")
    out = str(tmp_path / "o")
    argv = {
        "validate": ["validate", param, binf, "--table", table, "--images", "nowhere"],
        "ncnn2int8 after": ["ncnn2int8", param, binf, f"{out}.param", f"{out}.bin", table],
        "ncnn2int8 before": ["ncnn2int8", "--boards", nope, param, binf, f"{out}.param"],
    }[form]
    if form != "ncnn2int8 before":
        argv += ["--boards", nope]
    else:
        argv += [f"{out}.bin", table]
    assert main(argv) == 1
    assert f"boards file {nope} does not exist" in capsys.readouterr().err
    assert not Path(f"{out}.param").exists()
