"""ncnn2table's own list files (lines relative to the current directory, CRLF, trailing spaces,
blank lines, a label after the path) work unchanged with every command that takes a list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
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
NCNN_PRE = [
    "mean=[127.5,127.5,127.5]",
    "norm=[0.00784314,0.00784314,0.00784314]",
    "shape=[48,48,3]",
    "pixel=RGB",
    "thread=1",
    "method=kl",
]
N = 6


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a list as ncnn2table users write it (paths relative to the folder
    they run in, not to the list's), and the current directory there."""
    calib = tmp_path / "data" / "calib"
    calib.mkdir(parents=True)
    names = sorted(p.name for p in (SAMPLE / "calib").iterdir())[:N]
    for name in names:
        shutil.copy(SAMPLE / "calib" / name, calib / name)
    lines = [f"data/calib/{n}" for n in names]
    lines[1] += "   "  # trailing spaces
    lines[2] += " 7"  # a label after the path (ncnn2table: ignored)
    lines[3] = str(calib / names[3])  # an absolute path
    (tmp_path / "data" / "lists").mkdir()
    (tmp_path / "data" / "lists" / "calib.txt").write_bytes(
        ("\r\n".join(lines[:4]) + "\r\n\r\n" + "\r\n".join(lines[4:]) + "\r\n").encode()
    )
    # our own form, the same images: absolute paths
    (tmp_path / "abs.txt").write_text("".join(f"{calib / n}\n" for n in names))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_calibrate_reads_an_ncnn2table_list_from_another_folder(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")]
    lst = "data/lists/calib.txt"
    code = main(["-q", "calibrate", *model, "--images", lst, *PRE, "--out", "own.table", "--json"])
    err = capsys.readouterr()
    assert code == 0, err.err
    assert json.loads(err.out)["n_samples"] == N
    # the same table as the ncnn2table drop-in from the same list, and as a list of the same
    # images by absolute path
    assert main(["-q", "ncnn2table", *model, lst, "ncnn.table", *NCNN_PRE]) == 0
    assert main(["-q", "calibrate", *model, "--images", "abs.txt", *PRE, "--out", "abs.table"]) == 0
    capsys.readouterr()
    own = (work / "own.table").read_text()
    assert own == (work / "ncnn.table").read_text() == (work / "abs.table").read_text()
    # validate takes the same list
    assert (
        main(["-q", "validate", *model, "--table", "own.table", "--images", lst, *PRE, "--json"])
        == 0
    )
    [res] = json.loads(capsys.readouterr().out)["results"]
    assert res["n_samples"] == N
