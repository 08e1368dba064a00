"""``edgecal.load_model`` takes its paths as every other function does (str or os.PathLike);
anything else is a usage error naming the parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgecal
from edgecal.errors import UsageError

DIGITS = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"


def test_str_paths_load() -> None:
    model = edgecal.load_model(str(DIGITS / "model.param"), str(DIGITS / "model.bin"))
    assert model.param_path == DIGITS / "model.param"
    assert model.bin_path == DIGITS / "model.bin"
    assert model.calibrated_layers


def test_pathlike_and_bytes_paths_load() -> None:
    model = edgecal.load_model(DIGITS / "model.param", bytes(DIGITS / "model.bin"))
    assert isinstance(model.param_path, Path) and model.bin_path == DIGITS / "model.bin"


@pytest.mark.parametrize(
    ("param", "binf", "name"),
    [
        (None, DIGITS / "model.bin", "param_path"),
        (3, DIGITS / "model.bin", "param_path"),
        (DIGITS / "model.param", 2.5, "bin_path"),
        (DIGITS / "model.param", ["model.bin"], "bin_path"),
        ("", DIGITS / "model.bin", "param_path"),
        (DIGITS / "model.param", "a\0b", "bin_path"),
    ],
)
def test_anything_else_is_a_usage_error_naming_the_parameter(
    param: object, binf: object, name: str
) -> None:
    with pytest.raises(UsageError) as err:
        edgecal.load_model(param, binf)  # type: ignore[arg-type]
    assert err.value.message.startswith(name)
