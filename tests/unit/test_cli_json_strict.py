"""Every ``--json`` output is strict JSON: inf/nan written as the strings "inf", "-inf", "nan"
(as validate and the run documents write them), never ``Infinity``/``NaN``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecal.cli.main import main
from edgecal.cli.options import print_json

REF = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_print_json_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    print_json(
        {
            "a": math.inf,
            "b": [-math.inf, math.nan, 1.5],
            "c": np.float32("nan"),
            "d": np.float64(2.0),
            "e": np.array([1.0, np.inf], np.float32),
            "f": Path("x/y"),
        }
    )
    got = _strict(capsys.readouterr().out)
    assert got == {
        "a": "inf",
        "b": ["-inf", "nan", 1.5],
        "c": "nan",
        "d": 2.0,
        "e": [1.0, "inf"],
        "f": "x/y",
    }


def test_compare_json_with_an_infinite_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (REF / "kl.table").read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.split()[0] == "convrelu_0")
    lines[i] = "convrelu_0 inf "
    inf_table = tmp_path / "inf.table"
    inf_table.write_text("\n".join(lines) + "\n")
    assert main(["-q", "compare", "--json", str(inf_table), str(REF / "kl.table")]) == 0
    rows = {r["key"]: r for r in _strict(capsys.readouterr().out)}
    assert rows["convrelu_0"]["a"] == "inf"
    assert rows["convrelu_0"]["max_rel"] == "nan"
