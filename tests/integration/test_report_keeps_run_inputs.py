"""``write_report`` never writes the page over a file the run recorded as its input (run.json's
``inputs``: the models, the table, the image list) nor over one of the run's own files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import edgecal
from edgecal.errors import UsageError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
PREP = {"pixel": "RGB", "mean": (127.5,) * 3, "norm": (0.00784314,) * 3, "shape": (48, 48)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder: the model, a list of four images, a table, a run directory."""
    d = tmp_path_factory.mktemp("proj")
    for name in ("model.param", "model.bin"):
        shutil.copy(SAMPLE / name, d / name)
    lst = d / "test.txt"
    lst.write_text("".join(f"{SAMPLE / 'test' / f'test_00{i}.png'}\n" for i in range(4)))
    model = (d / "model.param", d / "model.bin")
    edgecal.calibrate(model, edgecal.ImageInput(lst, **PREP), out=d / "m.table")
    edgecal.validate(
        model, table=d / "m.table", inputs=edgecal.ImageInput(lst, **PREP), run_dir=d / "run"
    )
    return d


@pytest.mark.parametrize(
    ("name", "recorded"),
    [
        ("model.param", "fp32_param"),
        ("model.bin", "fp32_bin"),
        ("m.table", "table"),
        ("test.txt", "images"),
    ],
)
def test_the_page_over_a_recorded_input_is_refused(project: Path, name: str, recorded: str) -> None:
    target = project / name
    before = target.read_bytes()
    with pytest.raises(UsageError, match="refusing to overwrite an input") as info:
        edgecal.write_report(project / "run", target)
    assert recorded in info.value.message and "out" in info.value.message
    assert target.read_bytes() == before


@pytest.mark.parametrize("name", ["int8.param", "calibration.table"])
def test_the_page_over_a_run_file_is_refused(project: Path, name: str) -> None:
    """The names a tune run's files have (not in this validate run: still refused)."""
    with pytest.raises(UsageError, match="refusing to overwrite"):
        edgecal.write_report(project / "run", project / "run" / name)


def test_an_empty_page_name_is_refused(project: Path) -> None:
    with pytest.raises(UsageError, match="an empty file name"):
        edgecal.write_report(project / "run", "")
    assert not (project / "run" / "report.html").exists()
