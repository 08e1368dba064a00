"""A baseline or results file whose figures are of the wrong type, NaN/inf where a finite value
is required, or outside their domain is an error naming the file and the figure's JSON path,
never a check quietly dropped or a false regression."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from edgecal.cli.main import main
from edgecal.errors import InputFileError
from edgecal.quality.gate import parse_validation_doc
from tests.unit.test_gate import board, doc
from tests.unit.test_report import _mutate


def _damaged(path: list[str | int], value: Any) -> dict[str, Any]:
    return _mutate(doc(board()), tuple(path), value)


BAD = [
    (["results", 0, "agreement"], "high", "results[0].agreement"),
    (["results", 0, "agreement"], 2.0, "results[0].agreement"),
    (["results", 0, "agreement"], math.nan, "results[0].agreement"),
    (["results", 0, "agreement"], "nan", "results[0].agreement"),
    (["results", 0, "agreement"], None, "results[0].agreement"),
    (["results", 0, "top1_int8"], -0.1, "results[0].top1_int8"),
    (["results", 0, "top1_fp32"], True, "results[0].top1_fp32"),
    (["results", 0, "cosine_mean"], math.inf, "results[0].cosine_mean"),
    (["results", 0, "cosine_min"], 1.5, "results[0].cosine_min"),
    (["results", 0, "latency_int8_ms"], -1.0, "results[0].latency_int8_ms"),
    (["results", 0, "latency_fp32_ms"], "inf", "results[0].latency_fp32_ms"),
    (["results", 0, "sqnr_mean_db"], "loud", "results[0].sqnr_mean_db"),
    (["results", 0, "n_samples"], "100", "results[0].n_samples"),
    (["results", 0, "layers"], "x", "results[0].layers"),
    (["results", 0, "layers", 0], 3, "results[0].layers[0]"),
    (["results", 0, "layers", 1, "cosine_mean"], "0.9", "results[0].layers[1].cosine_mean"),
    (["results", 0, "layers", 0, "cosine_min"], math.nan, "results[0].layers[0].cosine_min"),
    (["results", 0, "layers", 0, "name"], 7, "results[0].layers[0].name"),
    (["results", 0, "metric"], {"name": "x", "primary": 1.2, "figures": {}}, "metric.primary"),
    (["results", 0, "metric"], {"name": "x", "primary": 0.9, "figures": []}, "metric.figures"),
    (["results", 0, "metric"], "ctc", "results[0].metric"),
]


@pytest.mark.parametrize(("path", "value", "where"), BAD)
def test_a_damaged_figure_is_an_error_naming_the_file_and_the_field(
    path: list[str | int], value: Any, where: str
) -> None:
    with pytest.raises(InputFileError, match=r"^b\.json: ") as exc:
        parse_validation_doc(_damaged(path, value), "b.json")
    assert where in exc.value.message
    assert exc.value.hint is not None and "--save-baseline" in exc.value.hint


@pytest.mark.parametrize(
    ("path", "good", "bad"),
    [
        (["results", 0, "sqnr_mean_db"], "inf", "x"),  # inf: no noise at all
        (["results", 0, "sqnr_min_db"], "-inf", None),
        (["results", 0, "layers", 0, "sqnr_db"], math.inf, "inf dB"),
        (["results", 0, "latency_int8_ms"], "nan", -0.001),  # nan: not measured
        (["results", 0, "top1_int8"], None, 1.01),  # null: no labels
        (["results", 0, "top1_fp32"], None, "0.9"),
        (["results", 0, "cosine_min"], -1.0, -1.01),
    ],
)
def test_what_validate_writes_is_read_and_only_that(
    path: list[str | int], good: Any, bad: Any
) -> None:
    parse_validation_doc(_damaged(path, good), "b.json")
    with pytest.raises(InputFileError, match=r"^b\.json: results\[0\]\."):
        parse_validation_doc(_damaged(path, bad), "b.json")


def test_a_missing_figure_is_left_to_the_gate_a_wrong_one_is_not() -> None:
    d = doc(board())
    del d["results"][0]["agreement"]
    got = parse_validation_doc(d, "b.json")
    assert got.results[0].figure("agreement") is None
    d["results"][0]["agreement"] = []
    with pytest.raises(InputFileError, match=r"results\[0\]\.agreement should be a fraction"):
        parse_validation_doc(d, "b.json")


def _check(tmp_path: Path, baseline: dict[str, Any], results: dict[str, Any]) -> int:
    b, r = tmp_path / "b.json", tmp_path / "r.json"
    b.write_text(json.dumps(baseline))
    r.write_text(json.dumps(results))
    return main(["check", "--baseline", str(b), "--results", str(r), "--min-cosine", "0.5"])


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (["results", 0, "agreement"], "high", "results[0].agreement"),  # was: check dropped
        (["results", 0, "layers"], "x", "results[0].layers"),  # was: 8 checks dropped
        (["results", 0, "agreement"], math.nan, "results[0].agreement"),  # was: a regression
        (["results", 0, "agreement"], 2.0, "results[0].agreement"),  # was: a regression
    ],
)
def test_check_exits_1_on_a_damaged_baseline(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: list[str | int],
    value: Any,
    where: str,
) -> None:
    assert _check(tmp_path, _damaged(path, value), doc(board())) == 1
    err = capsys.readouterr().err
    assert "b.json" in err and where in err and "--save-baseline" in err
    assert "Traceback" not in err


def test_check_exits_1_on_a_damaged_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(tmp_path, doc(board()), _damaged(["results", 0, "cosine_mean"], "nan")) == 1
    err = capsys.readouterr().err
    assert "r.json" in err and "results[0].cosine_mean" in err
