"""``edgecal check`` on the task metric: its drop on this run, its figure against the baseline's,
the metric asked for; none of its rows without it (the documents of today unchanged)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecal.api.check import check
from edgecal.quality.gate import Thresholds
from edgecal.quality.taskmetrics import MetricFigures
from edgecal.quality.validation import ValidationDoc
from tests.unit.test_gate import board, doc, evaluate_gate, failed, rows_by


def with_metric(b: dict[str, Any], primary: float, fp32: float | None = None, name: str = "ctc"):
    b = dict(b)
    b["metric"] = MetricFigures(name, primary, fp32, {"exact_agreement": 0.9}).to_dict()
    return b


def test_documents_without_a_metric_are_read_and_written_as_before() -> None:
    plain = doc(board())
    parsed = ValidationDoc.from_dict(plain)
    assert parsed.results[0].metric is None
    assert parsed.to_dict() == plain  # no "metric" key appears
    with_m = doc(with_metric(board(), 0.8, 0.9))
    back = ValidationDoc.from_dict(with_m)
    assert back.results[0].metric == MetricFigures("ctc", 0.8, 0.9, {"exact_agreement": 0.9})
    assert back.to_dict() == json.loads(json.dumps(with_m))
    lenient = ValidationDoc.from_dict(with_m, lenient=True)
    assert lenient.results[0].metric == back.results[0].metric
    broken = doc({**board(), "metric": {"name": "ctc"}})
    assert "metric" in ValidationDoc.from_dict(broken, lenient=True).results[0].missing


def test_no_metric_rows_unless_asked() -> None:
    report = evaluate_gate(doc(with_metric(board(), 0.5)), None, Thresholds(min_agreement=0.9))
    assert not any("metric" in r.check for r in report.rows)


def test_max_metric_drop() -> None:
    th = Thresholds(max_metric_drop_points=5.0)
    ok = evaluate_gate(doc(with_metric(board(), 0.88, 0.9)), None, th)
    assert ok.passed and rows_by(ok)[("local", "metric_drop")].value == pytest.approx(2.0)
    bad = evaluate_gate(doc(with_metric(board(), 0.8, 0.9)), None, th)
    row = rows_by(bad)[("local", "metric_drop")]
    assert not row.passed and "loses 10.00 points of ctc" in row.message
    agreement_style = evaluate_gate(doc(with_metric(board(), 0.97, None, "iou")), None, th)
    assert agreement_style.passed  # 100 * (1 - 0.97) = 3 points
    none = evaluate_gate(doc(board()), None, th)
    assert failed(none) == {("local", "metric_drop")}
    assert "validate with --metric" in rows_by(none)[("local", "metric_drop")].message


def test_metric_against_the_baseline() -> None:
    base = doc(with_metric(board(), 0.9, 0.95))
    th = Thresholds(tol_metric_points=1.0)
    same = evaluate_gate(doc(with_metric(board(), 0.895, 0.95)), base, th)
    assert ("local", "metric ctc") in rows_by(same) and same.passed
    worse = evaluate_gate(doc(with_metric(board(), 0.85, 0.95)), base, th)
    assert failed(worse) == {("local", "metric ctc")}
    lacking = evaluate_gate(doc(board()), base, th)
    assert failed(lacking) == {("local", "metric ctc")}
    other = evaluate_gate(doc(with_metric(board(), 0.99, None, "iou")), base, th)
    assert failed(other) == {("local", "metric ctc")}
    assert "metric iou here, ctc in the baseline" in rows_by(other)[("local", "metric ctc")].message


def test_the_metric_asked_for() -> None:
    th = Thresholds(metric="ctc", min_agreement=0.5)
    assert evaluate_gate(doc(with_metric(board(), 0.9)), None, th).passed
    wrong = evaluate_gate(doc(with_metric(board(), 0.9, name="iou")), None, th)
    assert failed(wrong) == {("local", "metric")}
    assert not evaluate_gate(doc(board()), None, th).passed


def test_api_check_takes_the_metric(tmp_path: Any) -> None:
    results = tmp_path / "r.json"
    results.write_text(json.dumps(doc(with_metric(board(), 0.8, 0.9))))
    assert not check([results], metric="ctc", max_metric_drop=5.0).passed
    assert check([results], metric="ctc", max_metric_drop=10.0).passed
    assert not check([results], metric="iou", max_metric_drop=10.0).passed


def test_the_report_shows_the_metric(tmp_path: Any) -> None:
    from edgecal.report.page import render_report
    from edgecal.runs.rundir import VALIDATION
    from tests.unit.test_report import make_run, validation_doc

    run = make_run(tmp_path / "run", files=())
    plain = validation_doc(("local",))
    run.write_json(VALIDATION, plain)
    assert "ctc drop pts" not in render_report(run)
    plain["results"][0]["metric"] = MetricFigures("ctc", 0.8, 0.9).to_dict()
    run.write_json(VALIDATION, plain)
    page = render_report(run)
    assert "ctc int8" in page and "ctc drop pts" in page
    assert "80.00 %" in page and "10.00" in page


def test_validate_prints_the_metric_one_board_and_side_by_side() -> None:
    from edgecal.cli.validate import render_validation

    one = doc(with_metric(board(), 0.8, 0.9))
    text = "\n".join(render_validation(one))
    assert "metric ctc: int8 0.8000 (fp32 0.9000), drop 10.00 points" in text
    assert "exact_agreement 0.9" in text
    assert "metric" not in "\n".join(render_validation(doc(board())))
    two = doc(with_metric(board("a"), 0.8, 0.9), board("b"))
    rows = [line for line in render_validation(two) if line.lstrip().startswith("metric ctc")]
    assert len(rows) == 1 and "0.8000" in rows[0] and rows[0].rstrip().endswith("-")
