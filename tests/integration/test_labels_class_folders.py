"""``--labels`` with a class-folder dataset: two images of one file name in two folders get
their own labels (matched by path), and a bare name they share is refused, not guessed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
D_PRE = ["--pixel", "GRAY", "--mean", "0", "--norm", "0.00392157"]
D_MODEL = [str(DIGITS / "model.param"), str(DIGITS / "model.bin")]


@pytest.fixture()
def class_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """cls/a/x.png and cls/b/x.png (two digits of different classes) listed in cls/list.txt,
    the current directory being ``tmp_path``; their true labels."""
    y = np.load(DIGITS / "calib_labels.npz")["y"]
    names = sorted(p.name for p in (DIGITS / "images").iterdir())
    j = next(k for k in range(1, len(y)) if y[k] != y[0])
    for folder, name in (("a", names[0]), ("b", names[j])):
        (tmp_path / "cls" / folder).mkdir(parents=True)
        shutil.copy(DIGITS / "images" / name, tmp_path / "cls" / folder / "x.png")
    (tmp_path / "cls" / "list.txt").write_text("cls/a/x.png\ncls/b/x.png\n")
    monkeypatch.chdir(tmp_path)
    return int(y[0]), int(y[j])


def _validate(labels: str) -> int:
    return main(
        [
            "-q",
            "validate",
            *D_MODEL,
            "--table",
            str(DIGITS / "kl.table"),
            "--images",
            "cls/list.txt",
            *D_PRE,
            "--labels",
            labels,
            "--json",
        ]
    )


def test_labels_by_path_as_listed(
    class_folders: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    ya, yb = class_folders
    Path("cls/lab2.csv").write_text(f"file,label\ncls/a/x.png,{ya}\ncls/b/x.png,{yb}\n")
    assert _validate("cls/lab2.csv") == 0
    [doc] = json.loads(capsys.readouterr().out)["results"]
    assert doc["top1_fp32"] == 1.0


def test_a_bare_name_two_images_share_is_refused(
    class_folders: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    ya, _ = class_folders
    Path("cls/lab1.csv").write_text(f"file,label\nx.png,{ya}\n")
    assert _validate("cls/lab1.csv") == 1
    err = capsys.readouterr().err
    assert "cls/lab1.csv: 'x.png' names 2 different images: cls/a/x.png, cls/b/x.png" in err
    assert "Traceback" not in err
