"""Bad numbers and bad files through the CLI (issue 10, part 5): one clear error, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecal.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
NPY_OPTS = ["--shape", "10,6,3"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for case in ("digits", "npy"):
        shutil.copytree(REFERENCE / case, tmp_path / case)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def calibrate_npy(extra: list[str] | None = None) -> list[str]:
    return ["calibrate", "npy/model.param", "npy/model.bin", "--npy", "npy/samples.txt",
            *NPY_OPTS, "--out", "out.table", *(extra or [])]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_input_sample_is_named(work: Path, capsys: pytest.CaptureFixture[str],
                                         value: float) -> None:
    path = work / "npy" / "samples" / "s03.npy"
    arr = np.load(path)
    arr[0, 0, 0] = value
    np.save(path, arr)
    code, err = run(calibrate_npy(), capsys)
    assert code == 1 and "s03.npy" in err and ("NaN" in err or "inf" in err), err
    assert not (work / "out.table").exists()


def test_overflowing_activation_names_blob_layer_and_sample(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = work / "npy" / "samples" / "s05.npy"
    np.save(path, np.full(np.load(path).shape, 3e38, np.float32))
    code, err = run(calibrate_npy(), capsys)
    assert code == 1, err
    assert "s05.npy" in err and "inf" in err and "convrelu_1" in err, err
    assert "s04.npy" not in err
    assert not (work / "out.table").exists()
