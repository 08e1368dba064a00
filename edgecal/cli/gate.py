"""The ``edgecal check`` command: gate validation figures against floors and/or a baseline.

``edgecal check --baseline B.json --results R.json [R2.json ...] [thresholds]`` gates saved
figures; without ``--results`` it validates the model on the device(s) first (the validation
arguments of ``edgecal validate``) and gates that.  Exit 0 when every check passes, 1 when one
fails; the report files (``--json-out``, ``--junit``) are written either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecal.errors import InputFileError, UsageError
from edgecal.files.outputs import write_outputs
from edgecal.files.userfile import read_text
from edgecal.quality.gate import (
    SAVE_HINT,
    GateReport,
    Thresholds,
    evaluate_gate,
    merge_docs,
    parse_validation_doc,
    render_text,
    require_reference,
    to_json,
    to_junit_xml,
)
from edgecal.quality.validation import ValidationDoc
from edgecal.runs.rundir import VALIDATION

#: Exit status of a failed gate: distinct from errors (1) and bad usage (2), so CI can tell a
#: regression from a broken invocation.
GATE_FAILED = 3


def load_validation_file(path: Path, what: str) -> ValidationDoc:
    """A validation doc from a file, or from a run directory's ``validation.json``."""
    if path.is_dir():
        path = path / VALIDATION
        if not path.is_file():
            raise InputFileError(f"{what} {path.parent}: a folder without {VALIDATION}",
                                 hint="pass a run directory of `edgecal validate --run-dir` or "
                                      "a file of `edgecal validate --save-baseline`")
    text = read_text(path, what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{what} {path}: not JSON ({exc.msg}, line {exc.lineno})",
                             hint=SAVE_HINT) from None
    return parse_validation_doc(obj, str(path))


def thresholds_from_args(args: argparse.Namespace) -> Thresholds:
    min_speedup = args.min_speedup
    return Thresholds(
        min_accuracy=args.min_accuracy,
        min_agreement=args.min_agreement,
        min_cosine=args.min_cosine,
        max_accuracy_drop_points=args.max_accuracy_drop,
        tol_accuracy_points=args.tol_accuracy,
        tol_agreement_points=args.tol_agreement,
        tol_cosine=args.tol_cosine,
        tol_layer_cosine=args.tol_layer_cosine,
        require_speedup=bool(args.require_speedup or min_speedup is not None),
        min_speedup=1.0 if min_speedup is None else min_speedup,
        check_layers=not args.no_layer_checks,
    )


def _current_doc(args: argparse.Namespace) -> tuple[ValidationDoc, str]:
    if args.results:
        if getattr(args, "param", None) or getattr(args, "device", None):
            raise UsageError("give either --results FILE or a model and devices to validate "
                             "now, not both",
                             hint="--results gates figures already measured")
        docs = [(str(p), load_validation_file(Path(p), "results file")) for p in args.results]
        return merge_docs(docs), ", ".join(src for src, _ in docs)
    if not getattr(args, "param", None):
        raise UsageError("nothing to gate: give --results FILE (of `edgecal validate "
                         "--save-baseline`) or a model to validate (PARAM BIN ...)")
    from edgecal.cli.validate import run_validation

    doc = run_validation(args)
    names = [str(r.get("device", {}).get("name")) for r in doc.get("results", [])]
    source = "validation on " + ", ".join(names)
    return parse_validation_doc(doc, source), source


def cmd_check(args: argparse.Namespace) -> int:
    from edgecal.cli.validate import report_stream, validation_inputs, validation_outputs
    from edgecal.files.outputs import check_outputs

    start = time.monotonic()
    check_outputs(validation_outputs(args), validation_inputs(args))  # before any work
    th = thresholds_from_args(args)
    baseline = (load_validation_file(Path(args.baseline), "baseline")
                if args.baseline else None)
    require_reference(baseline is not None, th)  # before a (long) validation run
    current, source = _current_doc(args)
    report = evaluate_gate(current, baseline, th, current_source=source,
                           baseline_source=args.baseline or "baseline")
    elapsed = time.monotonic() - start
    files: list[tuple[str, bytes]] = []  # both or neither
    if args.json_out:
        files.append((args.json_out, (json.dumps(to_json(report), indent=2) + "\n").encode()))
    if args.junit:
        files.append((args.junit, to_junit_xml(report, elapsed_s=elapsed).encode()))
    write_outputs(files)
    if args.json:
        sys.stdout.write(json.dumps(to_json(report), indent=2) + "\n")
    else:
        report_stream(args).write(render_text(report))
    if not report.passed:
        sys.stderr.write(f"edgecal: check failed: {failure_summary(report)}\n")
        return GATE_FAILED
    return 0


def failure_summary(report: GateReport) -> str:
    return (f"{len(report.failures)} of {len(report.rows)} checks on "
            f"{'board' if len(report.failed_boards) == 1 else 'boards'} "
            f"{', '.join(report.failed_boards)}")


def _option_taken(p: argparse.ArgumentParser, opt: str) -> bool:
    return any(opt in a.option_strings for a in p._actions)


def add_check_command(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                      add_validation_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "check", help="regression gate: validation figures vs floors and/or a baseline "
                      f"(exit {GATE_FAILED} on a regression, 1/2 on an error; JUnit/JSON "
                      "reports)")
    add_validation_args(p)

    def opt(*names: str, **kw: Any) -> None:
        # the validation arguments may already define some (e.g. --json): keep theirs
        if not any(_option_taken(p, n) for n in names):
            p.add_argument(*names, **kw)

    opt("--baseline", metavar="FILE|RUN_DIR",
        help="figures to compare with (`edgecal validate --save-baseline FILE`)")
    opt("--results", nargs="+", action="extend", default=[], metavar="FILE|RUN_DIR",
        help="gate these saved figures instead of validating now (several: merged by board)")
    opt("--min-accuracy", type=float, metavar="FRACTION", help="int8 top-1 floor, e.g. 0.95")
    opt("--min-agreement", type=float, metavar="FRACTION",
        help="int8 vs fp32 top-1 agreement floor, e.g. 0.98")
    opt("--min-cosine", type=float, metavar="COS", help="output cosine (mean) floor")
    opt("--max-accuracy-drop", type=float, metavar="POINTS",
        help="most int8 may lose vs fp32 accuracy on this run, in points")
    opt("--tol-accuracy", type=float, default=0.5, metavar="POINTS",
        help="allowed accuracy loss vs the baseline (default 0.5 points)")
    opt("--tol-agreement", type=float, default=0.5, metavar="POINTS",
        help="allowed agreement loss vs the baseline (default 0.5 points)")
    opt("--tol-cosine", type=float, default=0.001,
        help="allowed output cosine loss vs the baseline (default 0.001)")
    opt("--tol-layer-cosine", type=float, default=0.005,
        help="allowed per-layer cosine loss vs the baseline (default 0.005)")
    opt("--no-layer-checks", action="store_true", help="no per-layer cosine checks")
    opt("--require-speedup", action="store_true",
        help="int8 must be faster than fp32 on each board")
    opt("--min-speedup", type=float, metavar="X",
        help="fp32/int8 latency at least this (implies --require-speedup)")
    opt("--json-out", metavar="FILE", help="also write the report as JSON")
    opt("--junit", metavar="FILE", help="also write the report as JUnit XML (for CI)")
    opt("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check)
