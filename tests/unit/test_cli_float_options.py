"""Every float option of every command refuses NaN, inf and values outside its domain as a
usage error naming the option (one line, exit 2), before any work."""

from __future__ import annotations

import pytest

from edgecal.cli.main import build_parser, main
from edgecal.cli.options import COSINE, FRACTION, NON_NEGATIVE, POSITIVE, Number
from edgecal.errors import UsageError

MODEL = ["m.param", "m.bin"]
TUNE = ["tune", *MODEL, "--images", "l.txt", "--out-dir", "d"]
CHECK = ["check", "--results", "r.json"]
VALIDATE = ["validate", *MODEL, "--table", "t.table", "--images", "l.txt"]

# (the command up to the option, the option, bad values); --min-accuracy, --min-agreement and
# --iou-threshold were refused before (by the API, in the same words): now while parsing too
CASES: list[tuple[list[str], str, list[str]]] = [
    ([*TUNE], "--max-drop", ["nan", "inf", "-1", "-0.5"]),
    ([*TUNE, "--max-drop", "1"], "--time-budget", ["nan", "-5", "inf"]),
    ([*TUNE, "--max-drop", "1", "--device", "x"], "--labgrid-wait", ["nan", "-1", "inf"]),
    ([*CHECK], "--min-agreement", ["2"]),
    ([*CHECK], "--min-cosine", ["nan", "1.01", "-2"]),
    ([*CHECK], "--max-accuracy-drop", ["nan", "-1", "inf"]),
    ([*CHECK], "--max-metric-drop", ["nan", "-1", "inf"]),
    ([*CHECK, "--min-accuracy", "0.5"], "--tol-accuracy", ["nan", "-1"]),
    ([*CHECK, "--min-accuracy", "0.5"], "--tol-agreement", ["nan", "-1"]),
    ([*CHECK, "--min-accuracy", "0.5"], "--tol-metric", ["nan", "-1"]),
    ([*CHECK, "--min-accuracy", "0.5"], "--tol-cosine", ["nan", "-0.001"]),
    ([*CHECK, "--min-accuracy", "0.5"], "--tol-layer-cosine", ["nan", "-0.001"]),
    ([*CHECK], "--min-speedup", ["nan", "0", "-1", "inf"]),
    ([*CHECK, "--min-accuracy", "0.5"], "--divergence-cosine", ["nan", "1.5"]),
    ([*VALIDATE], "--divergence-cosine", ["nan", "-1.5", "inf"]),
    ([*VALIDATE], "--divergence-top1", ["nan", "1.5", "-0.1"]),
    (["board", "clean", "pi4"], "--keep-mb", ["nan", "-1", "inf"]),
]


@pytest.mark.parametrize(
    ("head", "option", "value"),
    [(head, option, v) for head, option, values in CASES for v in values],
)
def test_a_bad_number_is_a_usage_error_naming_the_option(
    head: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*head, f"{option}={value}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgecal: error: {option} {value}: give "), err


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (NON_NEGATIVE, ["0", "1e3"], ["-1e-9", "nan", "inf", "x"]),
        (POSITIVE, ["1e-9", "2"], ["0", "-1", "nan", "inf"]),
        (FRACTION, ["0", "1", "0.5"], ["1.0001", "-0.0001", "nan"]),
        (COSINE, ["-1", "1", "0"], ["-1.0001", "1.0001", "nan", "-inf"]),
    ],
)
def test_number_types(kind: Number, good: list[str], bad: list[str]) -> None:
    args = build_parser().parse_args(
        [*TUNE, "--max-drop", "0", "--time-budget", "30", "--iou-threshold", "1"]
    )
    assert (args.max_drop, args.time_budget, args.iou_threshold) == (0.0, 30.0, 1.0)
    args = build_parser().parse_args(
        [*CHECK, "--min-cosine", "-1", "--min-accuracy", "1", "--min-speedup", "0.5"]
    )
    assert (args.min_cosine, args.min_accuracy, args.min_speedup) == (-1.0, 1.0, 0.5)
    for text in good:
        assert kind.parse(text, "--x") == float(text)
    for text in bad:
        with pytest.raises(UsageError, match=r"^--x "):
            kind.parse(text, "--x")
