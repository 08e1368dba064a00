"""``edgecal check``: the pure gate (evaluate_gate and its renderings) and the command."""

from __future__ import annotations

import argparse
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecal.cli.gate import add_check_command
from edgecal.cli.render import render_gate
from edgecal.errors import InputFileError, UsageError
from edgecal.quality import gate
from edgecal.quality.gate import (
    GateReport,
    Thresholds,
    merge_docs,
    parse_validation_doc,
    to_json,
    to_junit_xml,
)
from edgecal.quality.validation import ValidationDoc

# ----------------------------------------------------------------------------- fixtures


def board(
    name: str = "local",
    *,
    acc: float | None = 0.95,
    acc_fp32: float | None = 0.96,
    agree: float = 0.99,
    cos: float = 0.9995,
    lat_fp32: float = 2.0,
    lat_int8: float = 1.0,
    layers: dict[str, float] | None = None,
    fp32_sha: str = "f" * 64,
    int8_sha: str = "1" * 64,
    n: int = 100,
) -> dict[str, Any]:
    layers = {"conv1": 0.999, "conv2": 0.998} if layers is None else layers
    return {
        "n_samples": n,
        "output_blob": "prob",
        "runtime": "deployed",
        "threads": 1,
        "top1_fp32": acc_fp32,
        "top1_int8": acc,
        "agreement": agree,
        "cosine_mean": cos,
        "cosine_min": cos - 0.01,
        "sqnr_mean_db": 30.0,
        "sqnr_min_db": 20.0,
        "latency_fp32_ms": lat_fp32,
        "latency_int8_ms": lat_int8,
        "layers": [
            {
                "name": k,
                "type": "Convolution",
                "top": k + "_out",
                "requantized": False,
                "top_scale": None,
                "cosine_mean": v,
                "cosine_min": v - 0.01,
                "sqnr_db": 25.0,
            }
            for k, v in layers.items()
        ],
        "device": {"name": name, "agent_version": "1", "protocol": 1},
        "fp32": {
            "param": "m.param",
            "bin": "m.bin",
            "param_sha256": fp32_sha,
            "bin_sha256": "b" * 64,
        },
        "int8": {
            "param": "i.param",
            "bin": "i.bin",
            "table": None,
            "param_sha256": int8_sha,
            "bin_sha256": "c" * 64,
        },
    }


def doc(*boards: dict[str, Any], consistency: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema": 1, "results": list(boards), "consistency": consistency}


def evaluate_gate(
    current: dict[str, Any], baseline: dict[str, Any] | None, th: Thresholds, **kw: str
) -> GateReport:
    """The gate of two documents as ``edgecal check`` reads them (leniently)."""
    return gate.evaluate_gate(
        ValidationDoc.from_dict(current, lenient=True),
        None if baseline is None else ValidationDoc.from_dict(baseline, lenient=True),
        th,
        **kw,
    )


def rows_by(report: GateReport) -> dict[tuple[str, str], Any]:
    return {(r.board, r.check): r for r in report.rows}


def failed(report: GateReport) -> set[tuple[str, str]]:
    return {(r.board, r.check) for r in report.failures}


BASE_ONLY = Thresholds()


# ----------------------------------------------------------------------------- evaluate_gate


def test_identical_run_passes_every_check() -> None:
    rep = evaluate_gate(doc(board()), doc(board()), BASE_ONLY)
    assert rep.passed and not rep.failures
    checks = [r.check for r in rep.rows]
    assert checks == [
        "fp32 model",
        "accuracy_int8",
        "agreement",
        "cosine_mean",
        "layer conv1 cosine",
        "layer conv2 cosine",
    ]
    assert rep.summary().startswith("PASS: all 6 checks on board local")


@pytest.mark.parametrize(
    ("acc", "ok"), [(0.944, False), (0.9449, False), (0.945, True), (0.946, True), (0.99, True)]
)
def test_accuracy_tolerance_vs_baseline(acc: float, ok: bool) -> None:
    rep = evaluate_gate(doc(board(acc=acc)), doc(board(acc=0.95)), BASE_ONLY)
    row = rows_by(rep)[("local", "accuracy_int8")]
    assert row.passed is ok and rep.passed is ok
    assert row.limit == pytest.approx(0.945) and row.baseline == 0.95
    if not ok:
        assert "baseline 0.9500 - 0.5 pts" in row.message


def test_agreement_tolerance_and_custom_tolerance() -> None:
    cur, base = doc(board(agree=0.984)), doc(board(agree=0.99))
    assert failed(evaluate_gate(cur, base, BASE_ONLY)) == {("local", "agreement")}
    assert evaluate_gate(cur, base, Thresholds(tol_agreement_points=1.0)).passed


def test_cosine_vs_baseline_and_floor() -> None:
    rep = evaluate_gate(doc(board(cos=0.998)), doc(board(cos=0.9995)), BASE_ONLY)
    assert failed(rep) == {("local", "cosine_mean")}
    # an explicit floor stricter than baseline - tolerance wins
    rep = evaluate_gate(
        doc(board(cos=0.9990)), doc(board(cos=0.9995)), Thresholds(min_cosine=0.9992)
    )
    row = rows_by(rep)[("local", "cosine_mean")]
    assert not row.passed and row.limit == 0.9992 and "--min-cosine" in row.message
    # floors alone, without a baseline
    rep = evaluate_gate(doc(board(cos=0.99)), None, Thresholds(min_cosine=0.995))
    assert failed(rep) == {("local", "cosine_mean")}
    assert [r.check for r in rep.rows] == ["cosine_mean"]


def test_explicit_floors_without_baseline() -> None:
    th = Thresholds(min_accuracy=0.9, min_agreement=0.98, max_accuracy_drop_points=1.0)
    assert evaluate_gate(doc(board(acc=0.95, acc_fp32=0.96)), None, th).passed
    rep = evaluate_gate(doc(board(acc=0.94, acc_fp32=0.96, agree=0.97)), None, th)
    assert failed(rep) == {("local", "accuracy_drop"), ("local", "agreement")}
    drop = rows_by(rep)[("local", "accuracy_drop")]
    assert drop.value == pytest.approx(2.0) and drop.op == "<="
    rep = evaluate_gate(doc(board(acc=0.85)), None, th)
    assert ("local", "accuracy_int8") in failed(rep)


def test_missing_accuracy_fails_only_when_asked_for() -> None:
    cur = doc(board(acc=None, acc_fp32=None))
    # the baseline has no accuracy either: no accuracy row at all
    rep = evaluate_gate(cur, doc(board(acc=None, acc_fp32=None)), BASE_ONLY)
    assert rep.passed and "accuracy_int8" not in [r.check for r in rep.rows]
    # the baseline has one: this run must have one too
    rep = evaluate_gate(cur, doc(board()), BASE_ONLY)
    row = rows_by(rep)[("local", "accuracy_int8")]
    assert not row.passed and "--labels" in row.message
    rep = evaluate_gate(cur, None, Thresholds(max_accuracy_drop_points=1.0))
    assert failed(rep) == {("local", "accuracy_drop")}


def test_nan_figure_fails() -> None:
    rep = evaluate_gate(doc(board(cos=math.nan)), doc(board()), BASE_ONLY)
    assert ("local", "cosine_mean") in failed(rep)
    cur = doc(board())
    cur["results"][0]["cosine_mean"] = "nan"  # as json_safe stores it
    assert ("local", "cosine_mean") in failed(evaluate_gate(cur, doc(board()), BASE_ONLY))


@pytest.mark.parametrize(
    ("fp", "i8", "min_speedup", "ok"),
    [
        (2.0, 1.0, 1.0, True),
        (1.0, 1.0, 1.0, False),
        (1.0, 1.5, 1.0, False),
        (2.0, 1.0, 1.5, True),
        (2.0, 1.5, 1.5, False),
    ],
)
def test_speedup_gate(fp: float, i8: float, min_speedup: float, ok: bool) -> None:
    th = Thresholds(require_speedup=True, min_speedup=min_speedup)
    rep = evaluate_gate(doc(board(lat_fp32=fp, lat_int8=i8)), None, th)
    row = rows_by(rep)[("local", "speedup")]
    assert row.passed is ok and row.value == pytest.approx(fp / i8)
    if not ok:
        assert ("faster than" if min_speedup == 1.0 else "1.5x as fast") in row.message
    # not asked for: no speedup row, whatever the latencies
    rep = evaluate_gate(doc(board(lat_fp32=fp, lat_int8=i8)), doc(board()), BASE_ONLY)
    assert "speedup" not in [r.check for r in rep.rows]


def test_boards_are_matched_by_name() -> None:
    base = doc(board("emu1", agree=0.99), board("emu2", agree=0.90))
    cur = doc(board("emu2", agree=0.90), board("emu1", agree=0.90))
    rep = evaluate_gate(cur, base, BASE_ONLY)
    assert failed(rep) == {("emu1", "agreement")}
    assert rows_by(rep)[("emu2", "agreement")].baseline == 0.90
    assert rep.failed_boards == ["emu1"]


def test_single_board_baseline_applies_to_all_boards() -> None:
    base = doc(board("local", agree=0.99))
    cur = doc(board("emu1", agree=0.99), board("emu2", agree=0.98))
    rep = evaluate_gate(cur, base, BASE_ONLY)
    assert failed(rep) == {("emu2", "agreement")}
    assert rows_by(rep)[("emu1", "agreement")].passed
    assert any("applies to emu1, emu2" in w for w in rep.warnings)


def test_board_missing_from_either_side_fails() -> None:
    base = doc(board("emu1"), board("emu2"))
    cur = doc(board("emu1"), board("emu3"))
    rep = evaluate_gate(cur, base, BASE_ONLY)
    rows = rows_by(rep)
    assert not rows[("emu3", "baseline")].passed
    assert "no baseline for board emu3" in rows[("emu3", "baseline")].message
    assert not rows[("emu2", "validated")].passed
    assert "--device emu2" in rows[("emu2", "validated")].message
    assert failed(rep) == {("emu3", "baseline"), ("emu2", "validated")}
    # emu3 still meets the explicit floors (and only those)
    rep = evaluate_gate(cur, base, Thresholds(min_agreement=0.995))
    assert ("emu3", "agreement") in failed(rep)


def test_diverging_board_fails() -> None:
    cons = {
        "tolerance_cosine": 0.999,
        "tolerance_disagree": 0.01,
        "pairs": [],
        "boards": [
            {"board": "emu1", "cosine_to_others_min": 0.9999, "diverges": False, "why": None},
            {
                "board": "emu2",
                "cosine_to_others_min": 0.95,
                "diverges": True,
                "why": "cosine 0.95 to emu1",
            },
        ],
        "diverging": ["emu2"],
    }
    cur = doc(board("emu1"), board("emu2"), consistency=cons)
    rep = evaluate_gate(cur, doc(board("emu1"), board("emu2")), BASE_ONLY)
    rows = rows_by(rep)
    assert rows[("emu1", "consistency")].passed
    bad = rows[("emu2", "consistency")]
    assert not bad.passed and "cosine 0.95 to emu1" in bad.message and bad.value == 0.95
    assert failed(rep) == {("emu2", "consistency")}
    # "diverging" alone (no per-board entries) is enough to fail
    cons2 = {"diverging": ["emu1"]}
    rep = evaluate_gate(
        doc(board("emu1"), board("emu2"), consistency=cons2), None, Thresholds(min_agreement=0.5)
    )
    assert failed(rep) == {("emu1", "consistency")}


def test_other_fp32_model_fails_other_int8_model_does_not() -> None:
    base = doc(board(agree=0.99))
    rep = evaluate_gate(doc(board(int8_sha="2" * 64)), base, BASE_ONLY)
    assert rep.passed
    # another fp32 model: its figures are not comparable; the fix is to re-save the baseline
    rep = evaluate_gate(doc(board(fp32_sha="e" * 64, agree=0.5)), base, BASE_ONLY)
    assert failed(rep) == {("local", "fp32 model")}
    row = rows_by(rep)[("local", "fp32 model")]
    assert "another fp32 model" in row.message and "--save-baseline" in row.message
    assert [r.check for r in rep.rows] == ["fp32 model"]  # no meaningless comparisons
    # explicit floors still apply
    rep = evaluate_gate(
        doc(board(fp32_sha="e" * 64, agree=0.5)), base, Thresholds(min_agreement=0.9)
    )
    assert failed(rep) == {("local", "fp32 model"), ("local", "agreement")}


def test_layer_rows_only_for_layers_in_the_baseline() -> None:
    base = doc(board(layers={"conv1": 0.999, "gone": 0.99}))
    cur = doc(board(layers={"conv1": 0.990, "new": 0.5}))
    rep = evaluate_gate(cur, base, BASE_ONLY)
    checks = [r.check for r in rep.rows if r.check.startswith("layer")]
    assert checks == ["layer conv1 cosine"]
    assert failed(rep) == {("local", "layer conv1 cosine")}  # 0.990 < 0.999 - 0.005
    assert evaluate_gate(cur, base, Thresholds(tol_layer_cosine=0.01)).passed
    assert evaluate_gate(cur, base, Thresholds(check_layers=False)).passed


def test_no_baseline_and_no_threshold_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="nothing to check against") as exc:
        evaluate_gate(doc(board()), None, Thresholds(tol_cosine=0.1))
    assert exc.value.hint and "--baseline" in exc.value.hint
    assert evaluate_gate(doc(board()), None, Thresholds(require_speedup=True)).passed


@pytest.mark.parametrize(
    "kw",
    [
        {"min_accuracy": 95.0},
        {"min_agreement": -0.1},
        {"min_cosine": 2.0},
        {"tol_cosine": -1.0},
        {"min_speedup": 0.0},
        {"tol_accuracy_points": math.nan},
    ],
)
def test_bad_thresholds_are_usage_errors(kw: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        Thresholds(**kw)  # type: ignore[arg-type]


def test_nothing_to_check_fails() -> None:
    empty = {"device": {"name": "local"}}
    rep = evaluate_gate(doc(board()), doc(empty), BASE_ONLY)
    assert failed(rep) == {("local", "checks")}


def test_drift_is_a_warning_not_a_failure() -> None:
    rep = evaluate_gate(doc(board(n=50)), doc(board(n=100)), BASE_ONLY)
    assert rep.passed and any("images 50 here, 100 in the baseline" in w for w in rep.warnings)


# ----------------------------------------------------------------------------- input docs


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        ([1, 2], "not an object"),
        ({"schema": 1}, 'no "results"'),
        ({"schema": 1, "results": []}, 'no "results"'),
        ({"results": [board()]}, 'no "schema"'),
        ({"schema": 2, "results": [board()]}, "schema 2"),
        (board(), "older edgecal"),
        ({"schema": 1, "results": [{"agreement": 1.0}]}, "device.name"),
        ({"schema": 1, "results": [board("a"), board("a")]}, "appears twice"),
    ],
)
def test_not_a_validation_doc(obj: Any, why: str) -> None:
    with pytest.raises(InputFileError, match=r"^base\.json: ") as exc:
        parse_validation_doc(obj, "base.json")
    assert why in exc.value.message
    assert exc.value.hint


def test_merge_docs() -> None:
    a = doc(board("emu1"), consistency=None)
    b = doc(
        board("emu2"),
        board("emu3"),
        consistency={"tolerance_cosine": 0.999, "pairs": [], "boards": [], "diverging": ["emu3"]},
    )
    m = merge_docs(
        [
            ("a.json", parse_validation_doc(a, "a.json")),
            ("b.json", parse_validation_doc(b, "b.json")),
        ]
    )
    assert [r.board for r in m.results] == ["emu1", "emu2", "emu3"]
    assert m.consistency is not None and m.consistency.diverging == ["emu3"]
    assert m.consistency.tolerance_cosine == 0.999
    parse_validation_doc(m.to_dict(), "merged")
    with pytest.raises(InputFileError, match=r"emu1 is in both a\.json and c\.json"):
        merge_docs(
            [
                ("a.json", parse_validation_doc(a, "a.json")),
                ("c.json", parse_validation_doc(doc(board("emu1")), "c.json")),
            ]
        )


# ----------------------------------------------------------------------------- renderings


def _mixed_report() -> GateReport:
    base = doc(board("emu1"), board("pi@10.0.0.5"))
    cur = doc(board("emu1", agree=0.5), board("pi@10.0.0.5", cos=0.9))
    return evaluate_gate(
        cur,
        base,
        Thresholds(require_speedup=True),
        current_source="r.json",
        baseline_source="b.json",
    )


def test_junit_xml_is_well_formed_with_counts_and_failures() -> None:
    rep = _mixed_report()
    text = to_junit_xml(rep, elapsed_s=1.5)
    root = ET.fromstring(text.encode())
    assert root.tag == "testsuites"
    assert root.get("tests") == str(len(rep.rows)) and root.get("failures") == "2"
    assert root.get("time") == "1.500"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["emu1", "pi@10.0.0.5"]
    total = 0
    for suite in suites:
        cases = suite.findall("testcase")
        total += len(cases)
        assert suite.get("tests") == str(len(cases))
        assert suite.get("failures") == str(len(suite.findall("testcase/failure")))
        assert suite.get("time") is not None
        for c in cases:
            assert c.get("classname", "").startswith("edgecal.check.")
            assert c.get("time") is not None
    assert total == len(rep.rows)
    emu1 = {c.get("name"): c for c in suites[0].findall("testcase")}
    fail = emu1["agreement"].find("failure")
    assert fail is not None and "0.5000 < 0.9850" in (fail.get("message") or "")
    assert emu1["cosine_mean"].find("failure") is None
    assert suites[0].findall("testcase")[0].get("classname") == "edgecal.check.emu1"
    pi = suites[1].findall("testcase")
    assert pi[0].get("classname") == "edgecal.check.pi@10_0_0_5"
    assert [c.get("name") for c in pi if c.find("failure") is not None] == ["cosine_mean"]


def test_junit_xml_escapes_markup_and_control_characters() -> None:
    cur = doc(board('a<b>&"c\x01'))
    rep = evaluate_gate(cur, None, Thresholds(min_agreement=0.999))
    root = ET.fromstring(to_junit_xml(rep))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == 'a<b>&"c?'
    assert root.get("failures") == "1"


def test_text_table() -> None:
    rep = _mixed_report()
    text = render_gate(rep)
    lines = text.splitlines()
    assert lines[0] == "edgecal check: r.json vs baseline b.json"
    assert lines[-1] == "FAIL: 2 of 14 checks failed on boards emu1, pi@10.0.0.5"
    head = lines[1]
    assert head.split() == ["board", "check", "value", "limit", "result", "note"]
    body = lines[2 : 2 + len(rep.rows)]
    col = head.index("result")
    assert all(line[col : col + 4] in ("PASS", "FAIL") for line in body)
    agree = next(line for line in body if line.startswith("emu1") and "agreement" in line)
    assert "0.5000" in agree and ">= 0.9850" in agree and "FAIL" in agree
    speed = next(line for line in body if "speedup" in line)
    assert "2.00x" in speed and "PASS" in speed


def test_json_report_is_strict_json() -> None:
    rep = evaluate_gate(doc(board(cos=math.nan)), doc(board()), BASE_ONLY)
    out = to_json(rep)
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["passed"] is False and back["n_failed"] == 1
    assert back["failed_boards"] == ["local"]
    row = next(r for r in back["rows"] if r["check"] == "cosine_mean")
    assert row["value"] == "nan" and row["passed"] is False


# ----------------------------------------------------------------------------- monotone


fraction = st.floats(0.0, 1.0)


@given(
    acc=fraction,
    agree=fraction,
    cos=fraction,
    l1=fraction,
    lat=st.floats(0.1, 10.0),
    gains=st.lists(st.floats(0.0, 0.5), min_size=4, max_size=4),
    faster=st.floats(1.0, 4.0),
    base=st.tuples(fraction, fraction, fraction, fraction),
    floors=st.tuples(
        st.none() | fraction,
        st.none() | fraction,
        st.none() | fraction,
        st.none() | st.floats(0.0, 10.0),
    ),
    speed=st.booleans(),
)
def test_gate_is_monotone(
    acc: float,
    agree: float,
    cos: float,
    l1: float,
    lat: float,
    gains: list[float],
    faster: float,
    base: tuple[float, ...],
    floors: tuple[float | None, ...],
    speed: bool,
) -> None:
    """A current run at least as good in every figure never fails a check the worse one
    passes."""
    th = Thresholds(
        min_accuracy=floors[0],
        min_agreement=floors[1],
        min_cosine=floors[2],
        max_accuracy_drop_points=floors[3],
        require_speedup=speed,
    )
    baseline = doc(board(acc=base[0], agree=base[1], cos=base[2], layers={"c": base[3]}))
    worse = board(
        acc=acc, acc_fp32=0.9, agree=agree, cos=cos, layers={"c": l1}, lat_fp32=2.0, lat_int8=lat
    )
    better = board(
        acc=min(1.0, acc + gains[0]),
        acc_fp32=0.9,
        agree=min(1.0, agree + gains[1]),
        cos=min(1.0, cos + gains[2]),
        layers={"c": min(1.0, l1 + gains[3])},
        lat_fp32=2.0,
        lat_int8=lat / faster,
    )
    a = evaluate_gate(doc(worse), baseline, th)
    b = evaluate_gate(doc(better), baseline, th)
    assert [r.check for r in a.rows] == [r.check for r in b.rows]
    assert failed(b) <= failed(a)


# ----------------------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgecal")
    sub = parser.add_subparsers(dest="command", required=True)
    add_check_command(sub, lambda p: None)
    return parser


def _write(path: Path, obj: Any) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(["check", *argv])
    return int(args.func(args))


def test_cli_pass_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = _write(tmp_path / "base.json", doc(board("emu1"), board("emu2")))
    r1 = _write(tmp_path / "r1.json", doc(board("emu1")))
    r2 = _write(tmp_path / "r2.json", doc(board("emu2")))
    jo, ju = tmp_path / "gate.json", tmp_path / "junit.xml"
    code = _run(
        [
            "--baseline",
            b,
            "--results",
            r1,
            r2,
            "--require-speedup",
            "--json-out",
            str(jo),
            "--junit",
            str(ju),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert "PASS: all" in out and "emu2" in out
    assert json.loads(jo.read_text())["passed"] is True
    root = ET.fromstring(ju.read_text())
    assert root.get("failures") == "0" and len(root.findall("testsuite")) == 2


def test_cli_fail_exit_1_reports_still_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = _write(tmp_path / "base.json", doc(board("emu1"), board("emu2")))
    r = _write(tmp_path / "r.json", doc(board("emu1", agree=0.9), board("emu2", cos=0.5)))
    jo, ju = tmp_path / "gate.json", tmp_path / "junit.xml"
    code = _run(["--baseline", b, "--results", r, "--json-out", str(jo), "--junit", str(ju)])
    out, err = capsys.readouterr()
    assert code == 3
    assert err == "edgecal: check failed: 2 of 12 checks on boards emu1, emu2\n"
    assert "FAIL" in out
    rep = json.loads(jo.read_text())
    assert rep["passed"] is False and rep["n_failed"] == 2
    assert ET.fromstring(ju.read_text()).get("failures") == "2"


def test_cli_floors_json_and_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "validation.json", doc(board(agree=0.97)))
    assert _run(["--results", str(run), "--min-agreement", "0.95", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    assert _run(["--results", str(run), "--min-agreement", "0.98"]) == 3
    assert _run(["--results", str(run), "--min-speedup", "3"]) == 3  # implies the gate


def test_cli_errors(tmp_path: Path) -> None:
    r = _write(tmp_path / "r.json", doc(board()))
    with pytest.raises(UsageError, match="nothing to check against"):
        _run(["--results", r])
    with pytest.raises(UsageError, match="--results"):
        _run(["--min-agreement", "0.9"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match=r"bad\.json") as exc:
        _run(["--baseline", str(bad), "--results", r])
    assert "--save-baseline" in str(exc.value)
    legacy = _write(tmp_path / "legacy.json", board())
    with pytest.raises(InputFileError, match=r"legacy\.json"):
        _run(["--baseline", legacy, "--results", r])
    with pytest.raises(InputFileError, match=r"missing\.json"):
        _run(["--baseline", str(tmp_path / "missing.json"), "--results", r])
    with pytest.raises(UsageError, match="cannot write"):
        _run(
            ["--results", r, "--min-agreement", "0.5", "--junit", str(tmp_path / "nodir" / "j.xml")]
        )


def test_cli_keeps_options_the_validation_arguments_define() -> None:
    def add_validation_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("param", nargs="?")
        p.add_argument("--device", action="append")
        p.add_argument("--json", action="store_true", help="theirs")

    parser = argparse.ArgumentParser(prog="edgecal")
    sub = parser.add_subparsers(dest="command", required=True)
    add_check_command(sub, add_validation_args)
    args = parser.parse_args(["check", "--results", "r.json", "--json"])
    assert args.json is True and args.param is None and args.results == ["r.json"]
    args = parser.parse_args(["check", "m.param", "--results", "r.json", "--min-cosine", "0.9"])
    with pytest.raises(UsageError, match="not both"):
        args.func(args)
    args = parser.parse_args(
        ["check", "--device", "emu1", "--results", "r.json", "--min-cosine", "0.9"]
    )
    with pytest.raises(UsageError, match="not both"):
        args.func(args)
