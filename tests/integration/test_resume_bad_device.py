"""A mistyped device leaves a run resumable: calibrate refuses it before a run directory is
made; resume refuses it without advising to remove the run, which then resumes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import edgecal
from edgecal.errors import UsageError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
MODEL = (SAMPLE / "model.param", SAMPLE / "model.bin")
PREP: dict[str, Any] = dict(pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48))


@pytest.fixture(autouse=True)
def _no_boards(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGECAL_BOARDS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ssh/config Host of that name


def _interrupt_after_one(description: str, total: int) -> Callable[[int, int], None]:
    def tick(done: int, total: int) -> None:
        if done >= 1:
            raise KeyboardInterrupt

    return tick


def test_resume_with_an_unknown_device_keeps_the_run_resumable(tmp_path: Path) -> None:
    calib = edgecal.ImageInput(SAMPLE / "calib.txt", **PREP)
    run, out = tmp_path / "crun", tmp_path / "o.table"
    with pytest.raises(KeyboardInterrupt):
        edgecal.calibrate(MODEL, calib, out=out, run_dir=run, progress=_interrupt_after_one)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(UsageError) as err:
        edgecal.resume(run, devices="nosuchboard")
    assert "nosuchboard" in err.value.message
    hint = err.value.hint or ""
    assert "remove" not in hint and "new --run-dir" not in hint
    assert f"--resume {run}" in hint and "valid device" in hint
    assert sorted(p.name for p in run.iterdir()) == before
    done = edgecal.resume(run)
    assert done.table.records and out.is_file()


def test_calibrate_with_an_unknown_device_makes_no_run_directory(tmp_path: Path) -> None:
    calib = edgecal.ImageInput(SAMPLE / "calib.txt", **PREP)
    run = tmp_path / "crun"
    with pytest.raises(UsageError) as err:
        edgecal.calibrate(
            MODEL, calib, out=tmp_path / "o.table", run_dir=run, devices="nosuchboard"
        )
    assert "nosuchboard" in err.value.message
    assert "remove" not in (err.value.hint or "")
    assert not run.exists()
