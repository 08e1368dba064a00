"""The API refuses bad arguments up front, with a usage error naming the argument, before any
work and without writing anything: tune's target and limits (NaN, negative), an empty folder
name for a run directory, a runtime that is not one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import edgecal
from edgecal.errors import UsageError
from edgecal.files.outputs import check_folder, folder_outputs

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
MODEL = (SAMPLE / "model.param", SAMPLE / "model.bin")
PREP: dict[str, Any] = dict(pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48))


@pytest.fixture
def calib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> edgecal.ImageInput:
    """The sample's calibration list; the current directory an empty folder (nothing may be
    written there)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return edgecal.ImageInput(SAMPLE / "calib.txt", **PREP)


def _nothing_written(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]
    assert list((tmp_path / "cwd").iterdir()) == []


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        ({"max_drop": math.nan}, "max_drop"),
        ({"max_drop": math.inf}, "max_drop"),
        ({"max_drop": -1.0}, "max_drop"),
        ({"max_drop": 0.5, "time_budget": math.nan}, "time_budget"),
        ({"max_drop": 0.5, "time_budget": -5}, "time_budget"),
        ({"max_drop": 0.5, "max_fp32_layers": -1}, "max_fp32_layers"),
        ({"max_drop": 0.5, "max_fp32_layers": 1.5}, "max_fp32_layers"),
    ],
)
def test_tune_refuses_a_bad_target_or_limit(
    calib: edgecal.ImageInput, tmp_path: Path, limits: dict[str, Any], name: str
) -> None:
    with pytest.raises(UsageError) as err:
        edgecal.tune(MODEL, calib, out_dir=tmp_path / "tuned", **limits)
    assert err.value.message.startswith(name)
    _nothing_written(tmp_path)


def test_tune_refuses_an_empty_out_dir(calib: edgecal.ImageInput, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="out-dir: an empty folder name"):
        edgecal.tune(MODEL, calib, max_drop=0.5, out_dir="")
    _nothing_written(tmp_path)


def test_calibrate_refuses_an_empty_run_dir(calib: edgecal.ImageInput, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="run-dir: an empty folder name"):
        edgecal.calibrate(MODEL, calib, out=tmp_path / "m.table", run_dir="")
    with pytest.raises(UsageError, match="histograms-out: an empty file name"):
        edgecal.calibrate(MODEL, calib, out=tmp_path / "m.table", histograms_out="")
    _nothing_written(tmp_path)


def test_validate_refuses_an_empty_run_dir_or_baseline(
    calib: edgecal.ImageInput, tmp_path: Path
) -> None:
    table = SAMPLE / "model.table"
    with pytest.raises(UsageError, match="run-dir: an empty folder name"):
        edgecal.validate(MODEL, table=table, inputs=calib, run_dir="")
    with pytest.raises(UsageError, match="save-baseline: an empty file name"):
        edgecal.validate(MODEL, table=table, inputs=calib, save_baseline="")
    _nothing_written(tmp_path)


def test_the_folder_rule_is_one_place(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--x: an empty folder name"):
        check_folder("--x", "")
    with pytest.raises(UsageError, match="--x: an empty folder name"):
        folder_outputs("--x", "", ["a.json"])
    with pytest.raises(UsageError, match="NUL"):
        check_folder("--x", "a\0b")


@pytest.mark.parametrize("runtime", ["deploy", "Deployed", "", None])
def test_a_runtime_that_is_not_one_is_a_usage_error(
    calib: edgecal.ImageInput, tmp_path: Path, runtime: Any
) -> None:
    calls = [
        lambda: edgecal.calibrate(MODEL, calib, out=tmp_path / "m.table", runtime=runtime),
        lambda: edgecal.validate(
            MODEL, table=SAMPLE / "model.table", inputs=calib, runtime=runtime
        ),
        lambda: edgecal.tune(
            MODEL, calib, max_drop=0.5, out_dir=tmp_path / "tuned", runtime=runtime
        ),
    ]
    for call in calls:
        with pytest.raises(UsageError) as err:
            call()
        assert err.value.message.startswith(f"runtime {runtime!r}")
        assert "calibration, deployed" in err.value.message
    _nothing_written(tmp_path)
