"""Non-finite numbers in inputs, activations and scales get a clear answer (issue 10, part 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecal.errors import ImageError
from edgecal.inputs import load_npy
from edgecal.inputspec import InputSpec
from edgecal_agent import stats

NPY = InputSpec("in0", "npy", shape=(4, 3, 2))


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_a_nonfinite_npy_sample_is_an_error_naming_it(tmp_path: Path, value: float,
                                                     word: str) -> None:
    arr = np.ones((2, 3, 4), np.float32)
    arr[1, 2, 3] = value
    path = tmp_path / "bad sample.npy"
    np.save(path, arr)
    with pytest.raises(ImageError) as info:
        load_npy(path, NPY)
    msg = str(info.value)
    assert str(path) in msg and f"1 {word}" in msg and "(1, 2, 3)" in msg
    assert "remove it from the list" in msg


def test_a_finite_npy_sample_loads_unchanged(tmp_path: Path) -> None:
    arr = np.linspace(-3e38, 3e38, 24, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "ok.npy", arr)
    assert np.array_equal(load_npy(tmp_path / "ok.npy", NPY), arr)


@pytest.mark.parametrize("stage", [4, 1 << 16])
def test_absmax_accumulator_flags_nonfinite_values(stage: int) -> None:
    for bad in (np.nan, np.inf, -np.inf):
        acc = stats.AbsMaxAccumulator(stats._Scratch(), stage=stage)
        acc.add(np.array([1.0, -2.0], np.float32))
        acc.add(np.array([0.5, bad, 3.0], np.float32))
        acc.value  # noqa: B018 - drains the stage
        assert acc.nonfinite
    acc = stats.AbsMaxAccumulator(stats._Scratch(), stage=stage)
    acc.add(np.array([3e38, -3.4028235e38], np.float32))
    assert acc.value == np.float32(3.4028235e38) and not acc.nonfinite
    assert stats.count_nonfinite(np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)) == (1, 2)
