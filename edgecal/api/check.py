"""Check: gate validation figures against floors and/or a baseline (:func:`check`).

The figures are saved ones (``results``: files of ``validate(save_baseline=...)`` or run
directories, several merged by board) or those of a validation run now (``validation``, called
only once the gate's own inputs are known good).  The report is written as JSON
(``json_out``) and JUnit XML (``junit``) either way, both or neither.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edgecal.api.samples import PathArg
from edgecal.api.validate import Validation, saved_validation_inputs
from edgecal.errors import InputFileError, UsageError
from edgecal.files.outputs import Input, Output, check_outputs, write_outputs
from edgecal.files.userfile import read_text
from edgecal.inputs.arguments import (
    callable_arg,
    instance_arg,
    optional_number_arg,
    optional_path_arg,
    paths_arg,
    shown,
)
from edgecal.inputs.metricspec import MetricSpec, metric_name
from edgecal.quality.gate import (
    SAVE_HINT,
    GateReport,
    Thresholds,
    evaluate_gate,
    merge_docs,
    parse_validation_doc,
    require_reference,
    to_json,
    to_junit_xml,
)
from edgecal.quality.rundoc import dumps
from edgecal.quality.validation import ValidationDoc
from edgecal.runs.rundir import VALIDATION

__all__ = ["GateReport", "Thresholds", "check", "load_validation_file", "nothing_to_gate"]


def load_validation_file(path: Path, what: str) -> ValidationDoc:
    """A validation doc from a file, or from a run directory's ``validation.json``."""
    if path.is_dir():
        path = path / VALIDATION
        if not path.is_file():
            raise InputFileError(
                f"{what} {path.parent}: a folder without {VALIDATION}",
                hint="pass a run directory of `edgecal validate --run-dir` or "
                "a file of `edgecal validate --save-baseline`",
            )
    text = read_text(path, what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{what} {path}: not JSON ({exc.msg}, line {exc.lineno})", hint=SAVE_HINT
        ) from None
    return parse_validation_doc(obj, str(path))


def nothing_to_gate() -> UsageError:
    return UsageError(
        "nothing to gate: give --results FILE (of `edgecal validate "
        "--save-baseline`) or a model to validate (PARAM BIN ...)"
    )


def check_outputs_of(json_out: str | None, junit: str | None) -> list[Output]:
    """The report files a gate writes (an empty name is given, and refused)."""
    return [
        Output(role, path, text=True)
        for role, path in (("json_out (--json-out)", json_out), ("junit (--junit)", junit))
        if path is not None
    ]


def check(
    results: PathArg | Sequence[PathArg] = (),
    *,
    baseline: PathArg | None = None,
    thresholds: Thresholds | None = None,
    validation: Callable[[], Validation] | None = None,
    metric: MetricSpec | None = None,
    max_metric_drop: float | None = None,
    json_out: PathArg | None = None,
    junit: PathArg | None = None,
    outputs: Sequence[Output] = (),
    other_inputs: Sequence[Input] = (),
) -> GateReport:
    """Gate the figures of ``results`` (or, without them, of ``validation()``: e.g.
    ``lambda: edgecal.validate(...)``) against ``thresholds`` (default: the per-run checks
    need a floor or ``baseline``) and ``baseline`` (a saved validation or run directory).
    ``metric``: the task metric the figures must carry (a name, ``module:function`` or the
    callable given to ``validate``), ``max_metric_drop``: the most points of it int8 may lose
    against fp32 (both also settable in ``thresholds``); a baseline's metric is gated too
    (``thresholds.tol_metric_points``).
    ``json_out``/``junit``: write the report there; ``outputs``/``other_inputs``: the caller's
    own files, checked with these before any work."""
    start = time.monotonic()
    results = paths_arg(results, "results")  # one path, or several
    baseline, json_out, junit = (
        optional_path_arg(v, n)
        for v, n in ((baseline, "baseline"), (json_out, "json_out"), (junit, "junit"))
    )
    thresholds = instance_arg(
        thresholds, "thresholds", Thresholds, "edgecal.Thresholds(min_agreement=0.98)"
    )
    validation = callable_arg(validation, "validation")
    max_metric_drop = optional_number_arg(max_metric_drop, "max_metric_drop", 0)
    res = [os.fspath(p) for p in results]
    base, json_s = (None if p is None else os.fspath(p) for p in (baseline, json_out))
    junit_s = None if junit is None else os.fspath(junit)
    check_outputs(
        [*check_outputs_of(json_s, junit_s), *outputs],
        [
            *saved_validation_inputs("--baseline", [base]),
            *saved_validation_inputs("--results", res),
            *other_inputs,
        ],
    )  # before any work
    th = thresholds if thresholds is not None else Thresholds()
    if metric is not None:
        th = dataclasses.replace(th, metric=metric_name(metric))
    if max_metric_drop is not None:
        th = dataclasses.replace(th, max_metric_drop_points=max_metric_drop)
    base_doc = load_validation_file(Path(base), "baseline") if base else None
    require_reference(base_doc is not None, th)  # before a (long) validation run
    if res:
        if validation is not None:
            raise UsageError(
                "give either --results FILE or a model and devices to validate now, not both",
                hint="--results gates figures already measured",
            )
        docs = [(p, load_validation_file(Path(p), "results file")) for p in res]
        current, source = merge_docs(docs), ", ".join(src for src, _ in docs)
    else:
        if validation is None:
            raise nothing_to_gate()
        fresh = validation()
        if not isinstance(fresh, Validation):
            raise UsageError(
                f"validation returned {shown(fresh)}: it must return the Validation of a run",
                hint="e.g. validation=lambda: edgecal.validate(model, int8, inputs=images)",
            )
        source = "validation on " + ", ".join(str(r.device.get("name")) for r in fresh.results)
        current = parse_validation_doc(fresh.document(), source)  # as a saved one is read
    report = evaluate_gate(
        current, base_doc, th, current_source=source, baseline_source=base or "baseline"
    )
    elapsed = time.monotonic() - start
    files: list[tuple[str, bytes]] = []  # both or neither
    if json_s is not None:
        files.append((json_s, dumps(to_json(report))))
    if junit_s is not None:
        files.append((junit_s, to_junit_xml(report, elapsed_s=elapsed).encode()))
    write_outputs(files)
    return report
