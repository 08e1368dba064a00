"""A run directory (``validate``'s ``run_dir``, ``tune``'s ``out_dir``, ``calibrate``'s
``run_dir``) is never a folder the run reads its data from -- an images folder given, or the
folder of the images a list names -- nor inside a folder given; one beside the inputs in the
project folder is the common case, and is kept."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import edgecal
from edgecal.errors import UsageError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
PREP = {"pixel": "RGB", "mean": (127.5,) * 3, "norm": (0.00784314,) * 3, "shape": (48, 48)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model, calib/ with four images listed by calib.txt (relative), test/ with four."""
    d = tmp_path_factory.mktemp("proj")
    for name in ("model.param", "model.bin"):
        shutil.copy(SAMPLE / name, d / name)
    for kind in ("calib", "test"):
        (d / kind).mkdir()
        for i in range(4):
            shutil.copy(SAMPLE / kind / f"{kind}_00{i}.png", d / kind)
    (d / "calib.txt").write_text("".join(f"calib/calib_00{i}.png\n" for i in range(4)))
    model = (d / "model.param", d / "model.bin")
    edgecal.calibrate(model, edgecal.ImageInput(d / "calib.txt", **PREP), out=d / "m.table")
    return d


def _model(d: Path) -> tuple[Path, Path]:
    return d / "model.param", d / "model.bin"


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("where", ["test", "test/run"])
def test_validate_run_dir_in_the_images_folder_is_refused(project: Path, where: str) -> None:
    before = _files(project / "test")
    with pytest.raises(UsageError, match="a folder the run reads its inputs from") as info:
        edgecal.validate(
            _model(project),
            table=project / "m.table",
            inputs=edgecal.ImageInput(project / "test", **PREP),
            run_dir=project / where,
        )
    assert str(project / where) in info.value.message and "--run-dir" in info.value.message
    assert _files(project / "test") == before
    # beside the images, in the project folder: written
    edgecal.validate(
        _model(project),
        table=project / "m.table",
        inputs=edgecal.ImageInput(project / "test", **PREP),
        run_dir=project / "run",
    )
    assert (project / "run" / "validation.json").is_file()


def test_tune_out_dir_among_the_listed_images_is_refused(project: Path) -> None:
    before = _files(project / "calib")
    with pytest.raises(UsageError, match="the folder of the sample") as info:
        edgecal.tune(
            _model(project),
            edgecal.ImageInput(project / "calib.txt", **PREP),
            max_drop=5,
            out_dir=project / "calib",
        )
    assert str(project / "calib") in info.value.message and "--out-dir" in info.value.message
    assert _files(project / "calib") == before


def test_calibrate_run_dir_inside_the_images_folder_is_refused(project: Path) -> None:
    with pytest.raises(UsageError, match="is inside the sample list"):
        edgecal.calibrate(
            _model(project),
            edgecal.ImageInput(project / "calib", **PREP),
            run_dir=project / "calib" / "run",
        )
    assert not (project / "calib" / "run").exists()
    # the project folder holding the model (and the list file) is not refused
    edgecal.calibrate(
        _model(project),
        edgecal.ImageInput(project / "calib.txt", **PREP),
        run_dir=project / "calrun",
    )
    assert (project / "calrun" / "run.json").is_file()
