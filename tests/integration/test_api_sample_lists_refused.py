"""Every command refuses, before any work, a sample list that names a folder or a FIFO, a FIFO
given as the list or lying in an images folder, and an image given as the list: an
:class:`InputFileError` naming it, never a bare ``IsADirectoryError``, never a hang."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import edgecal
from edgecal.errors import InputFileError
from tests.unit.test_samples_not_regular_files import raised

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
MODEL = (SAMPLE / "model.param", SAMPLE / "model.bin")
PREP: dict[str, Any] = dict(pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48))


def _commands(tmp_path: Path) -> dict[str, Callable[[edgecal.ImageInput], object]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return {
        "calibrate": lambda i: edgecal.calibrate(MODEL, i, out=out / "m.table"),
        "calibrate-unresumable": lambda i: edgecal.calibrate(MODEL, i, resumable=False),
        "calibrate-run-dir": lambda i: edgecal.calibrate(MODEL, i, run_dir=out / "run"),
        "tune": lambda i: edgecal.tune(MODEL, i, max_drop=0.5, out_dir=out / "tuned"),
        "validate": lambda i: edgecal.validate(MODEL, table=SAMPLE / "calib.txt", inputs=i),
    }


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    d = tmp_path / "calib"
    d.mkdir()
    for p in sorted((SAMPLE / "calib").iterdir())[:4]:
        shutil.copyfile(p, d / p.name)
    return d


COMMANDS = ["calibrate", "calibrate-unresumable", "calibrate-run-dir", "tune", "validate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_line_naming_a_folder(tmp_path: Path, calib: Path, command: str) -> None:
    first = sorted(calib.iterdir())[0].name
    lst = tmp_path / "withdir.txt"
    lst.write_text(f"calib/{first}\ncalib\n")
    with pytest.raises(InputFileError) as err:
        _commands(tmp_path)[command](edgecal.ImageInput(lst, **PREP))
    assert err.value.message.startswith(f"line 2 of list file {lst} names a folder")
    assert not (tmp_path / "out" / "run").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_as_the_list(tmp_path: Path, calib: Path, command: str) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    run = _commands(tmp_path)[command]
    err = raised(lambda: run(edgecal.ImageInput(fifo, **PREP)), fifo)
    assert isinstance(err, InputFileError), repr(err)
    assert f"list file {fifo} is a FIFO" in err.message


@pytest.mark.parametrize("command", ["calibrate", "tune"])
def test_a_fifo_in_the_images_folder(tmp_path: Path, calib: Path, command: str) -> None:
    fifo = calib / "x.png"
    os.mkfifo(fifo)
    run = _commands(tmp_path)[command]
    err = raised(lambda: run(edgecal.ImageInput(calib, **PREP)), fifo)
    assert isinstance(err, InputFileError), repr(err)
    assert f"{fifo} in the images folder" in err.message


@pytest.mark.parametrize("command", ["calibrate", "validate"])
def test_an_image_as_the_list(tmp_path: Path, calib: Path, command: str) -> None:
    img = sorted(calib.iterdir())[0]
    with pytest.raises(InputFileError) as err:
        _commands(tmp_path)[command](edgecal.ImageInput(img, **PREP))
    assert err.value.message.startswith(f"{img} is an image, not a list file")
