"""``check`` never writes its report over a file it reads: the ``validation.json`` inside a run
directory given as ``results`` or ``baseline``; an empty ``json_out``/``junit`` is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import edgecal
from edgecal.errors import UsageError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
PREP = {"pixel": "RGB", "mean": (127.5,) * 3, "norm": (0.00784314,) * 3, "shape": (48, 48)}
GATE = edgecal.Thresholds(min_cosine=0.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of ``validate`` on four test images."""
    d = tmp_path_factory.mktemp("proj")
    (d / "test").mkdir()
    for i in range(4):
        shutil.copy(SAMPLE / "test" / f"test_00{i}.png", d / "test")
    calib = d / "calib.txt"
    calib.write_text("".join(f"{SAMPLE / 'calib' / f'calib_00{i}.png'}\n" for i in range(4)))
    model = (SAMPLE / "model.param", SAMPLE / "model.bin")
    edgecal.calibrate(model, edgecal.ImageInput(calib, **PREP), out=d / "m.table")
    run = d / "run"
    edgecal.validate(
        model, table=d / "m.table", inputs=edgecal.ImageInput(d / "test", **PREP), run_dir=run
    )
    return run


@pytest.mark.parametrize("where", ["results", "baseline"])
@pytest.mark.parametrize("out", ["json_out", "junit"])
def test_report_over_the_run_directory_validation_is_refused(
    run: Path, where: str, out: str
) -> None:
    target = run / "validation.json"
    before = target.read_bytes()
    given = {"results": [run]} if where == "results" else {"baseline": run, "results": [run]}
    with pytest.raises(UsageError) as info:
        edgecal.check(thresholds=GATE, **given, **{out: target})  # type: ignore[arg-type]
    assert out in info.value.message
    assert "validation.json" in info.value.message and "refusing to overwrite" in info.value.message
    assert target.read_bytes() == before
    assert edgecal.check([run], thresholds=GATE).passed  # still a validation file


@pytest.mark.parametrize("out", ["json_out", "junit"])
def test_an_empty_report_name_is_refused(run: Path, out: str) -> None:
    with pytest.raises(UsageError, match="an empty file name") as info:
        edgecal.check([run], thresholds=GATE, **{out: ""})  # type: ignore[arg-type]
    assert out in info.value.message
