"""The ``edgecal check`` command: gate validation figures against floors and/or a baseline.

``edgecal check --baseline B.json --results R.json [R2.json ...] [thresholds]`` gates
saved figures; without ``--results`` it validates the model on the device(s) first (the
validation arguments of ``edgecal validate``) and gates that.  Exit 0 when every check passes,
3 when one fails, 1 on an error, 2 on bad usage or when the verdict cannot be printed; the
report files (``--json-out``, ``--junit``) are written either way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecal.cli.options import (
    COSINE,
    FRACTION,
    NON_NEGATIVE,
    POINTS,
    POSITIVE,
    Number,
    NumberOption,
    print_json,
)
from edgecal.cli.render import render_gate
from edgecal.errors import UsageError
from edgecal.quality.gate import GateReport, Thresholds, to_json

if TYPE_CHECKING:
    from edgecal.api.validate import Validation

#: Exit status of a failed gate: distinct from errors (1) and bad usage (2), so CI can tell a
#: regression from a broken invocation.
GATE_FAILED = 3


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
        metric=getattr(args, "metric", None),
        max_metric_drop_points=args.max_metric_drop,
        tol_metric_points=args.tol_metric,
    )


def cmd_check(args: argparse.Namespace) -> int:
    from edgecal.api.check import check, nothing_to_gate
    from edgecal.cli.validate import (
        report_stream,
        run_validation,
        validation_inputs,
        validation_outputs,
    )
    from edgecal.files.outputs import check_outputs

    model = [
        m for m in (getattr(args, k, None) for k in ("param", "bin", "int8_param", "int8_bin")) if m
    ]
    # --results takes every word up to the next option: a model given after it lands there
    model += [r for r in args.results if Path(r).suffix.lower() in (".param", ".bin")]
    if args.results and model:
        raise UsageError(
            f"--results checks saved results files: do not give a model ({' '.join(model)})",
            hint="give either --results FILE... or a model to validate now, not both",
        )
    check_outputs(validation_outputs(args), validation_inputs(args))  # before any work
    th = thresholds_from_args(args)

    def validate_now() -> Validation:
        if not getattr(args, "param", None):
            raise nothing_to_gate()
        return run_validation(args)

    fresh = validate_now if getattr(args, "param", None) or getattr(args, "device", None) else None
    report = check(
        args.results,
        baseline=args.baseline,
        thresholds=th,
        validation=fresh,
        json_out=args.json_out,
        junit=args.junit,
    )
    if args.json:
        print_json(to_json(report))
    else:
        report_stream(args).write(render_gate(report))
    if not report.passed:
        sys.stderr.write(f"edgecal: check failed: {failure_summary(report)}\n")
        return GATE_FAILED
    return 0


def failure_summary(report: GateReport) -> str:
    return (
        f"{len(report.failures)} of {len(report.rows)} checks on "
        f"{'board' if len(report.failed_boards) == 1 else 'boards'} "
        f"{', '.join(report.failed_boards)}"
    )


#: The gate's numeric thresholds: option, its numbers, default, metavar, help (``--min-speedup``
#: comes with the speed-up flag below them).
THRESHOLD_OPTIONS: tuple[tuple[str, Number, float | None, str | None, str], ...] = (
    ("--min-accuracy", FRACTION, None, "FRACTION", "int8 top-1 floor, e.g. 0.95"),
    (
        "--min-agreement",
        FRACTION,
        None,
        "FRACTION",
        "int8 vs fp32 top-1 agreement floor, e.g. 0.98",
    ),
    ("--min-cosine", COSINE, None, "COS", "output cosine (mean) floor"),
    (
        "--max-accuracy-drop",
        POINTS,
        None,
        "POINTS",
        "most int8 may lose vs fp32 accuracy on this run, in points",
    ),
    (
        "--tol-accuracy",
        POINTS,
        0.5,
        "POINTS",
        "allowed accuracy loss vs the baseline (default 0.5 points)",
    ),
    (
        "--tol-agreement",
        POINTS,
        0.5,
        "POINTS",
        "allowed agreement loss vs the baseline (default 0.5 points)",
    ),
    (
        "--max-metric-drop",
        POINTS,
        None,
        "POINTS",
        "most int8 may lose vs fp32 of the --metric's figure on this run, in points",
    ),
    (
        "--tol-metric",
        POINTS,
        0.5,
        "POINTS",
        "allowed loss of the --metric's figure vs the baseline (default 0.5 points)",
    ),
    (
        "--tol-cosine",
        NON_NEGATIVE,
        0.001,
        None,
        "allowed output cosine loss vs the baseline (default 0.001)",
    ),
    (
        "--tol-layer-cosine",
        NON_NEGATIVE,
        0.005,
        None,
        "allowed per-layer cosine loss vs the baseline (default 0.005)",
    ),
)


def _option_taken(p: argparse.ArgumentParser, opt: str) -> bool:
    return any(opt in a.option_strings for a in p._actions)


def add_check_command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_validation_args: Callable[[argparse.ArgumentParser], None],
) -> None:

    p = sub.add_parser(
        "check",
        help="regression gate: validation figures vs floors and/or a baseline "
        f"(exit 0 when every check passes, {GATE_FAILED} on a regression, 1 on an error, 2 on "
        "bad usage or when the verdict cannot be printed; JUnit/JSON reports)",
        description=f"Exit 0: every check passed; {GATE_FAILED}: a regression (a check "
        "failed); 1: an error (a bad baseline or results file, a device); 2: bad usage, or an "
        "output (the report, --json-out, --junit) that cannot be written.",
    )
    add_validation_args(p)

    def opt(*names: str, **kw: Any) -> None:
        # the validation arguments may already define some (e.g. --json): keep theirs
        if not any(_option_taken(p, n) for n in names):
            p.add_argument(*names, **kw)

    opt(
        "--baseline",
        metavar="FILE|RUN_DIR",
        help="figures to compare with (`edgecal validate --save-baseline FILE`)",
    )
    opt(
        "--results",
        action="extend",
        nargs="+",
        default=[],
        metavar="FILE|RUN_DIR",
        help="gate these saved figures instead of validating now (no model then); several "
        "files (or --results repeated) are merged by board",
    )
    for name, kind, default, metavar, text in THRESHOLD_OPTIONS:
        opt(name, action=NumberOption, within=kind, default=default, metavar=metavar, help=text)
    opt("--no-layer-checks", action="store_true", help="no per-layer cosine checks")
    opt(
        "--require-speedup", action="store_true", help="int8 must be faster than fp32 on each board"
    )
    opt(
        "--min-speedup",
        action=NumberOption,
        within=POSITIVE,
        metavar="X",
        help="fp32/int8 latency at least this (implies --require-speedup)",
    )
    opt("--json-out", metavar="FILE", help="also write the report as JSON")
    opt("--junit", metavar="FILE", help="also write the report as JUnit XML (for CI)")
    opt("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check)
