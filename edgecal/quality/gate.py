"""``edgecal check``: the regression gate over validation figures (pure functions, no I/O).

A *validation doc* is what ``edgecal validate`` writes (``validation.json``, ``--save-baseline``),
read as a :class:`~edgecal.quality.validation.ValidationDoc`.  :func:`evaluate_gate`
compares the current doc against explicit floors (:class:`Thresholds`) and/or a baseline doc and
returns one :class:`GateRow` per (board, check); :func:`to_json` and
:func:`to_junit_xml` present the :class:`GateReport`.

Every "at least" check uses one effective limit: the stricter of the explicit floor and
``baseline - tolerance``.  Values that are missing or NaN fail (a gate never passes on nothing).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from numbers import Real
from typing import Any

from edgecal.errors import InputFileError, UsageError
from edgecal.quality.consistency import Consistency
from edgecal.quality.jsondoc import Malformed, Obj, Range
from edgecal.quality.rundoc import json_safe
from edgecal.quality.validation import SAVE_HINT, ValidationDoc, ValidationResult

#: Schema of the ``--json-out`` report.
GATE_SCHEMA = 1

#: Slack on every comparison so that a value equal to its limit passes despite float rounding
#: (e.g. ``0.99 - 0.005`` vs a measured ``0.985``).
EPS = 1e-9

THRESHOLD_OPTIONS = (
    "--baseline",
    "--min-accuracy",
    "--min-agreement",
    "--min-cosine",
    "--max-accuracy-drop",
    "--require-speedup",
)


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Thresholds:
    """Explicit floors (``None`` = not checked) and tolerances against a baseline.

    Fractions (accuracy, agreement) are 0..1; "points" are percentage points (0.5 = 0.005).
    """

    min_accuracy: float | None = None  # int8 top-1 accuracy floor
    min_agreement: float | None = None  # int8 vs fp32 top-1 agreement floor
    min_cosine: float | None = None  # output cosine mean floor
    max_accuracy_drop_points: float | None = None  # fp32 - int8 accuracy on this run, points
    tol_accuracy_points: float = 0.5
    tol_agreement_points: float = 0.5
    tol_cosine: float = 0.001
    tol_layer_cosine: float = 0.005
    require_speedup: bool = False  # int8 latency < fp32 latency (and speedup >= min_speedup)
    min_speedup: float = 1.0
    check_layers: bool = True  # per-layer cosine rows against the baseline
    # the task metric (``validate --metric``): the one the figures must carry (its name), the
    # most points it may lose vs fp32 on this run, its allowed loss vs the baseline
    metric: str | None = None
    max_metric_drop_points: float | None = None
    tol_metric_points: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):  # a number (not a bool, not text) where one is taken
            v, optional = getattr(self, f.name), f.type == "float | None"
            if f.type not in ("float", "float | None") or (v is None and optional):
                continue
            if isinstance(v, bool) or not isinstance(v, Real):
                raise UsageError(
                    f"Thresholds {f.name} takes a number"
                    + (" (or None)" if optional else "")
                    + f", not {type(v).__name__} {v!r}",
                    hint=f"e.g. Thresholds({f.name}={f.default if f.default is not None else 0.9})",
                )
        for name in ("min_accuracy", "min_agreement"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise UsageError(
                    f"--{name.replace('_', '-')} {v}: give a fraction 0..1 (e.g. 0.95 for 95%)"
                )
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise UsageError(f"--min-cosine {self.min_cosine}: a cosine is in -1..1")
        for name in (
            "max_accuracy_drop_points",
            "tol_accuracy_points",
            "tol_agreement_points",
            "tol_cosine",
            "tol_layer_cosine",
            "max_metric_drop_points",
            "tol_metric_points",
        ):
            v = getattr(self, name)
            if v is not None and not (v >= 0.0 and math.isfinite(v)):
                raise UsageError(f"{name.replace('_', ' ')} {v}: must be a finite number >= 0")
        if not (self.min_speedup > 0.0 and math.isfinite(self.min_speedup)):
            raise UsageError(f"--min-speedup {self.min_speedup}: must be > 0")

    @property
    def explicit(self) -> bool:
        """Whether any check stands on its own (without a baseline)."""
        return self.require_speedup or any(
            v is not None
            for v in (
                self.min_accuracy,
                self.min_agreement,
                self.min_cosine,
                self.max_accuracy_drop_points,
                self.max_metric_drop_points,
            )
        )


#: The fix of a figure of the wrong type or out of its domain: the file was edited or damaged.
FIGURES_HINT = (
    "the file was changed or damaged: save it again with `edgecal validate --save-baseline FILE`"
)

_FRACTION = Range("a fraction in 0..1", 0.0, 1.0)
_COSINE = Range("a cosine in -1..1", -1.0, 1.0)
_DB = Range("a number of dB", finite=False, nan=True)  # inf: no noise at all
_MS = Range("a latency in ms >= 0 (or nan: not measured)", 0.0, nan=True)
_ANY = Range("a number", finite=False, nan=True)

#: The figures of a board (``results[i]``), of its layers (``layers[j]``) and of its task
#: metric (``metric``) by key: what each may hold.  A figure the gate may compare is a number
#: of its domain, never the wrong type, NaN or out of range: a check is never dropped or failed
#: because of a damaged file.
RESULT_FIGURES: dict[str, Range] = {
    "top1_fp32": Range("a fraction in 0..1 or null", 0.0, 1.0, null=True),
    "top1_int8": Range("a fraction in 0..1 or null", 0.0, 1.0, null=True),
    "agreement": _FRACTION,
    "cosine_mean": _COSINE,
    "cosine_min": _COSINE,
    "sqnr_mean_db": _DB,
    "sqnr_min_db": _DB,
    "latency_fp32_ms": _MS,
    "latency_int8_ms": _MS,
}
LAYER_FIGURES: dict[str, Range] = {
    "cosine_mean": _COSINE,
    "cosine_min": _COSINE,
    "sqnr_db": _DB,
    "top_scale": Range("a scale or null", null=True),
}
METRIC_FIGURES: dict[str, Range] = {
    "primary": _FRACTION,
    "primary_fp32": Range("a fraction in 0..1 or null", 0.0, 1.0, null=True),
}


def _check_keys(o: Obj, ranges: dict[str, Range]) -> None:
    for key, domain in ranges.items():
        if key in o.d:
            domain.check(o.d[key], o.at(key))


def check_figures(doc: dict[str, Any]) -> None:
    """Every figure ``doc`` (a validation document, its structure checked) holds is of its
    type and within its domain; else :class:`Malformed` naming its JSON path (e.g.
    ``results[0].agreement``).  A figure the document lacks is left to the gate."""
    for r in Obj.of(doc, "").objs("results"):
        _check_keys(r, RESULT_FIGURES)
        for key in ("n_samples", "threads"):
            if key in r.d:
                r.integer(key)
        for key in ("output_blob", "runtime"):
            if key in r.d:
                r.text(key)
        for layer in r.objs("layers") if "layers" in r.d else []:
            layer.text("name")
            _check_keys(layer, LAYER_FIGURES)
            for key in ("type", "top"):
                if key in layer.d:
                    layer.text(key)
            if "requantized" in layer.d:
                layer.flag("requantized")
        metric = r.opt_obj("metric")
        if metric is not None:
            metric.text("name")
            _check_keys(metric, METRIC_FIGURES)
            metric.num("primary")  # it must be there
            figures = metric.obj("figures")
            for key in figures.d:
                _ANY.check(figures.d[key], figures.at(key))
    cons = Obj.of(doc, "").opt_obj("consistency")
    if cons is not None:
        if "diverging" in cons.d:
            cons.texts("diverging")
        for b in cons.objs("boards") if "boards" in cons.d else []:
            b.text("board")
            if "diverges" in b.d:
                b.flag("diverges")


def parse_validation_doc(obj: Any, source: str) -> ValidationDoc:
    """``obj`` (parsed JSON read from ``source``) as a validation doc: its structure checked,
    then every figure it holds (:func:`check_figures`: of its type, finite where it must be,
    within its domain); a figure it lacks becomes a failing row later (no comparison, for a
    baseline).  :class:`InputFileError` names ``source`` and the figure's JSON path."""
    try:
        doc = ValidationDoc.from_dict(obj, lenient=True)
    except Malformed as exc:
        raise InputFileError(f"{source}: {exc}", hint=exc.hint or SAVE_HINT) from None
    try:
        check_figures(obj)
    except Malformed as exc:
        raise InputFileError(f"{source}: {exc}", hint=FIGURES_HINT) from None
    return doc


def merge_docs(docs: Sequence[tuple[str, ValidationDoc]]) -> ValidationDoc:
    """One validation doc of several ``(source, doc)`` (e.g. one ``--results`` per board).

    Results are concatenated in order; consistency lists are concatenated too (the tolerances:
    the first doc's).  A board in two docs is an error naming both files.
    """
    if len(docs) == 1:
        return docs[0][1]
    where: dict[str, str] = {}
    results: list[ValidationResult] = []
    found = [doc.consistency for _, doc in docs if doc.consistency is not None]
    for source, doc in docs:
        for res in doc.results:
            if res.board in where:
                raise InputFileError(
                    f"board {res.board} is in both {where[res.board]} and {source}",
                    hint="pass one results file per board",
                )
            where[res.board] = source
            results.append(res)
    consistency = (
        Consistency(
            found[0].tolerance_cosine,
            found[0].tolerance_disagree,
            [p for c in found for p in c.pairs],
            [b for c in found for b in c.boards],
        )
        if found
        else None
    )
    return ValidationDoc(results, consistency)


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class GateRow:
    """One check on one board.  ``limit`` is the effective limit (``op`` says how ``value``
    must compare to it); ``baseline`` the baseline's figure when one was used."""

    board: str
    check: str
    value: float | None
    limit: float | None
    passed: bool
    message: str = ""
    op: str = ">="
    unit: str = ""  # "frac" | "cos" | "pts" | "x" | "" (how to print value/limit)
    baseline: float | None = None


@dataclass(frozen=True)
class GateReport:
    rows: tuple[GateRow, ...]
    warnings: tuple[str, ...] = ()
    current_source: str = "results"
    baseline_source: str | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """The report as ``edgecal check --json-out`` writes it (:func:`to_json`)."""
        return to_json(self)

    @property
    def failures(self) -> list[GateRow]:
        return [r for r in self.rows if not r.passed]

    @property
    def boards(self) -> list[str]:
        return list(dict.fromkeys(r.board for r in self.rows))

    @property
    def failed_boards(self) -> list[str]:
        return list(dict.fromkeys(r.board for r in self.failures))

    def summary(self) -> str:
        n = len(self.rows)
        if self.passed:
            return f"PASS: all {n} checks on {_plural(self.boards, 'board')}"
        return (
            f"FAIL: {len(self.failures)} of {n} checks failed on "
            f"{_plural(self.failed_boards, 'board')}"
        )


def _plural(names: Sequence[str], what: str) -> str:
    return f"{what}{'s' if len(names) != 1 else ''} {', '.join(names)}"


# ----------------------------------------------------------------------------- evaluation


def _ok(value: float | None, op: str, limit: float) -> bool:
    if value is None or math.isnan(value):
        return False
    if op == ">=":
        return value >= limit - EPS
    if op == "<=":
        return value <= limit + EPS
    raise ValueError(op)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if unit == "frac":
        return f"{value:.4f}"
    if unit == "cos":
        return f"{value:.6f}"
    if unit == "pts":
        return f"{value:.2f} pts"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g}"


def _at_least(
    board: str,
    check: str,
    value: float | None,
    base: float | None,
    th: Thresholds,
    what: str,
    missing: str,
) -> list[GateRow]:
    """The row of ``check``: ``value >= max(floor, base - tol)``, the floor ``th.min_<what>``
    (``--min-<what>``), ``base`` the baseline's figure, ``tol`` ``th.tol_<what>`` (or
    ``th.tol_<what>_points``: percentage points of a fraction); no row when there is neither
    floor nor baseline.  ``missing`` says why a value may be absent."""
    floor: float | None = getattr(th, f"min_{what}", None)
    points: float | None = getattr(th, f"tol_{what}_points", None)
    if points is not None:
        tol, tol_text = points / 100.0, f"{points:g} pts"
    else:
        tol = getattr(th, f"tol_{what}")
        tol_text = f"{tol:g}"
    unit = "cos" if what.endswith("cosine") else "frac"
    limits: list[tuple[float, str]] = []
    if floor is not None:
        limits.append((floor, f"--min-{what} {fmt(floor, unit)}"))
    if base is not None:
        limits.append((base - tol, f"baseline {fmt(base, unit)} - {tol_text}"))
    if not limits:
        return []
    limit, why = max(limits, key=lambda t: t[0])
    if value is None:
        return [GateRow(board, check, None, limit, False, missing, unit=unit, baseline=base)]
    passed = _ok(value, ">=", limit)
    msg = why if passed else f"{fmt(value, unit)} < {fmt(limit, unit)} ({why})"
    return [GateRow(board, check, value, limit, passed, msg, unit=unit, baseline=base)]


def _same_model(cur: ValidationResult, base: ValidationResult) -> tuple[bool | None, str]:
    """Whether both docs are for the same fp32 model (``None``: cannot tell)."""
    a, b = cur.models.get("fp32") or {}, base.models.get("fp32") or {}
    keys = [k for k in ("param_sha256", "bin_sha256") if a.get(k) and b.get(k)]
    if not keys:
        return None, ""
    diff = [k for k in keys if a[k] != b[k]]
    if not diff:
        return True, "same fp32 model as the baseline"
    k = diff[0]
    what = k.split("_")[0]
    return False, (
        f"the baseline is for another fp32 model ({what} sha256 "
        f"{str(b[k])[:12]}... there, {str(a[k])[:12]}... here; "
        "fix: re-save the baseline with `edgecal validate --save-baseline`)"
    )


def _board_rows(
    board: str, cur: ValidationResult, base: ValidationResult | None, th: Thresholds
) -> list[GateRow]:
    rows: list[GateRow] = []
    if base is not None:
        same, msg = _same_model(cur, base)
        if same is not None:
            rows.append(GateRow(board, "fp32 model", None, None, same, msg, op="", unit=""))
        if same is False:
            base = None  # its figures are of another model: compare with floors only
    acc = cur.figure("top1_int8")
    acc_fp32 = cur.figure("top1_fp32")
    no_acc = "no int8 accuracy in the results (fix: validate with --labels)"

    def figure(name: str) -> float | None:
        return base.figure(name) if base is not None else None

    rows += _at_least(board, "accuracy_int8", acc, figure("top1_int8"), th, "accuracy", no_acc)
    if th.max_accuracy_drop_points is not None:
        limit = th.max_accuracy_drop_points
        if acc is None or acc_fp32 is None:
            rows.append(
                GateRow(
                    board,
                    "accuracy_drop",
                    None,
                    limit,
                    False,
                    "no fp32/int8 accuracy in the results (fix: validate with --labels)",
                    op="<=",
                    unit="pts",
                )
            )
        else:
            drop = 100.0 * (acc_fp32 - acc)
            passed = _ok(drop, "<=", limit)
            msg = (
                f"fp32 {fmt(acc_fp32, 'frac')} - int8 {fmt(acc, 'frac')}"
                if passed
                else f"int8 loses {drop:.2f} points vs fp32 on this run, more than "
                f"--max-accuracy-drop {limit:g}"
            )
            rows.append(
                GateRow(board, "accuracy_drop", drop, limit, passed, msg, op="<=", unit="pts")
            )

    for check, what, missing in (
        ("agreement", "agreement", "no agreement in the results"),
        ("cosine_mean", "cosine", "no output cosine in the results"),
    ):
        rows += _at_least(board, check, cur.figure(check), figure(check), th, what, missing)

    rows += _metric_rows(board, cur, base, th)

    if th.require_speedup:
        rows.append(_speedup_row(board, cur, th))

    if base is not None and th.check_layers:
        base_layers = {x.name: x for x in base.layers}
        for layer in cur.layers:
            if layer.name not in base_layers:
                continue
            name = layer.name
            b = base_layers[name].figure("cosine_mean")
            if b is None:
                continue
            rows += _at_least(
                board,
                f"layer {name} cosine",
                layer.figure("cosine_mean"),
                b,
                th,
                "layer_cosine",
                f"no cosine for layer {name}",
            )
    return rows


def _metric_rows(
    board: str, cur: ValidationResult, base: ValidationResult | None, th: Thresholds
) -> list[GateRow]:
    """The task metric's rows: the metric asked for (``th.metric``), its drop on this run
    (``th.max_metric_drop_points``) and its primary figure against the baseline's (when the
    baseline has one); none when none of them applies."""
    m = cur.metric
    fix = "validate with --metric " + (th.metric or "NAME")
    rows: list[GateRow] = []
    if th.metric is not None and (m is None or m.name != th.metric):
        got = "no metric" if m is None else f"metric {m.name}"
        rows.append(
            GateRow(board, "metric", None, None, False, f"{got} in the results (fix: {fix})", "")
        )
    if th.max_metric_drop_points is not None:
        limit = th.max_metric_drop_points
        if m is None:
            msg = f"no metric in the results (fix: {fix})"
            rows.append(GateRow(board, "metric_drop", None, limit, False, msg, "<=", "pts"))
        else:
            drop = m.drop_points
            passed = _ok(drop, "<=", limit)
            how = (
                f"fp32 {fmt(m.primary_fp32, 'frac')} - int8 {fmt(m.primary, 'frac')}"
                if m.primary_fp32 is not None
                else f"1 - {fmt(m.primary, 'frac')}"
            )
            msg = (
                f"{m.name}: {how}"
                if passed
                else f"int8 loses {drop:.2f} points of {m.name} on this run, more than "
                f"--max-metric-drop {limit:g} ({how})"
            )
            rows.append(GateRow(board, "metric_drop", drop, limit, passed, msg, "<=", "pts"))
    if base is not None and base.metric is not None:
        name = base.metric.name
        if m is not None and m.name != name:
            msg = (
                f"metric {m.name} here, {name} in the baseline (fix: validate with --metric {name})"
            )
            rows.append(GateRow(board, f"metric {name}", None, None, False, msg, ""))
        else:
            rows += _at_least(
                board,
                f"metric {name}",
                None if m is None else m.primary,
                base.metric.primary,
                th,
                "metric",
                f"no metric {name} in the results (fix: validate with --metric {name})",
            )
    return rows


def _speedup_row(board: str, cur: ValidationResult, th: Thresholds) -> GateRow:
    fp, i8 = cur.figure("latency_fp32_ms"), cur.figure("latency_int8_ms")
    if fp is None or i8 is None or not (fp > 0 and i8 > 0):
        return GateRow(
            board,
            "speedup",
            None,
            th.min_speedup,
            False,
            f"no usable latencies in the results (fp32 {fp}, int8 {i8} ms)",
            unit="x",
        )
    speedup = fp / i8
    passed = i8 < fp and _ok(speedup, ">=", th.min_speedup)
    lat = f"fp32 {fp:.3f} ms, int8 {i8:.3f} ms"
    need = "faster than" if th.min_speedup <= 1.0 else f"{th.min_speedup:g}x as fast as"
    msg = lat if passed else f"int8 is not {need} fp32 ({lat})"
    return GateRow(board, "speedup", speedup, th.min_speedup, passed, msg, unit="x")


def _consistency_rows(cons: Consistency | None) -> dict[str, GateRow]:
    if cons is None:
        return {}
    tol = cons.tolerance_cosine
    out: dict[str, GateRow] = {}
    for b in cons.boards:
        msg = (
            f"diverges from the other boards: {b.why or 'see consistency'}"
            if b.diverges
            else "agrees with the other boards"
        )
        out[b.board] = GateRow(
            b.board, "consistency", b.cosine_to_others_min, tol, not b.diverges, msg, unit="cos"
        )
    return out


def require_reference(has_baseline: bool, th: Thresholds) -> None:
    """A gate needs a baseline or an explicit threshold: else :class:`UsageError`."""
    if not has_baseline and not th.explicit:
        raise UsageError("nothing to check against", hint="give " + " or ".join(THRESHOLD_OPTIONS))


def evaluate_gate(
    current: ValidationDoc,
    baseline: ValidationDoc | None,
    th: Thresholds,
    *,
    current_source: str = "results",
    baseline_source: str = "baseline",
) -> GateReport:
    """Gate ``current`` (a validation doc) against ``th`` and the ``baseline`` doc.

    Board matching: by device name; a baseline of exactly one board applies to every current
    board.  With a multi-board baseline, a current board it lacks and a baseline board not
    validated now are failures, as is any board in ``consistency.diverging``.
    """
    require_reference(baseline is not None, th)
    results = current.results
    names = [r.board for r in results]
    if len(set(names)) != len(names):
        raise UsageError(f"{current_source}: a board appears twice in the results")
    warnings: list[str] = []
    base_by_name: dict[str, ValidationResult] = {}
    single_base: ValidationResult | None = None
    if baseline is not None:
        base_results = baseline.results
        if len(base_results) == 1:
            single_base = base_results[0]
            bname = single_base.board
            others = [n for n in names if n != bname]
            if others:
                warnings.append(f"the baseline of board {bname} applies to {', '.join(others)}")
        else:
            base_by_name = {r.board: r for r in base_results}

    cons_rows = _consistency_rows(current.consistency)
    rows: list[GateRow] = []
    for name, cur in zip(names, results, strict=True):
        base: ValidationResult | None = None
        if single_base is not None:
            base = single_base
        elif baseline is not None:
            base = base_by_name.get(name)
            if base is None:
                rows.append(
                    GateRow(
                        name,
                        "baseline",
                        None,
                        None,
                        False,
                        f"no baseline for board {name} in {baseline_source} (fix: re-save the "
                        "baseline with this board validated too)",
                        op="",
                    )
                )
        if base is not None:
            warnings += _drift_warnings(name, cur, base)
        mine = _board_rows(name, cur, base, th)
        if not mine and not any(r.board == name for r in rows):
            # a gate never passes on nothing (e.g. a baseline without any figure)
            mine = [
                GateRow(
                    name,
                    "checks",
                    None,
                    None,
                    False,
                    f"nothing to check on board {name}: the baseline has none of its "
                    "figures and no threshold applies",
                    op="",
                )
            ]
        rows += mine
        if name in cons_rows:
            rows.append(cons_rows.pop(name))
    rows += cons_rows.values()  # diverging boards not among the results (should not happen)
    for bname in base_by_name:
        if bname not in names:
            rows.append(
                GateRow(
                    bname,
                    "validated",
                    None,
                    None,
                    False,
                    f"board {bname} is in the baseline but not in {current_source} (fix: validate "
                    f"on it too, e.g. --device {bname}, or re-save the baseline without it)",
                    op="",
                )
            )
    return GateReport(
        tuple(rows),
        tuple(warnings),
        current_source,
        baseline_source if baseline is not None else None,
    )


def _drift_warnings(board: str, cur: ValidationResult, base: ValidationResult) -> list[str]:
    out = []
    for key, what in (
        ("n_samples", "images"),
        ("runtime", "runtime"),
        ("output_blob", "output blob"),
    ):
        a, b = (None if key in r.missing else getattr(r, key) for r in (cur, base))
        if a is not None and b is not None and a != b:
            out.append(
                f"{board}: {what} {a} here, {b} in the baseline: figures may not be comparable"
            )
    return out


# ----------------------------------------------------------------------------- rendering


def limit_text(row: GateRow) -> str:
    if row.limit is None or not row.op:
        return "-"
    return f"{row.op} {fmt(row.limit, row.unit)}"


def to_json(report: GateReport) -> dict[str, Any]:
    return json_safe(
        {
            "schema": GATE_SCHEMA,
            "passed": report.passed,
            "n_checks": len(report.rows),
            "n_failed": len(report.failures),
            "boards": report.boards,
            "failed_boards": report.failed_boards,
            "results": report.current_source,
            "baseline": report.baseline_source,
            "warnings": list(report.warnings),
            "summary": report.summary(),
            "rows": [asdict(r) for r in report.rows],
        }
    )


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(text: str) -> str:
    """Characters XML 1.0 cannot hold (control characters, lone surrogates) as '?'."""
    return _XML_BAD.sub("?", text)


def _classname(board: str) -> str:
    """``edgecal.check.<board>``; dots in the board name (an IP) would split the class path in
    CI viewers, so they become underscores."""
    return "edgecal.check." + re.sub(r"[.\s]", "_", board)


def _other_board(warning: str, board: str, boards: Sequence[str]) -> bool:
    """Whether ``warning`` is about another board (it starts with that board's name)."""
    return any(warning.startswith(f"{b}: ") for b in boards if b != board)


def to_junit_xml(report: GateReport, *, elapsed_s: float = 0.0) -> str:
    """JUnit XML: ``testsuites`` > one ``testsuite`` per board > one ``testcase`` per check,
    with a ``failure`` element on each failed check."""
    x = _xml_text
    root = ET.Element(
        "testsuites",
        {
            "name": "edgecal check",
            "tests": str(len(report.rows)),
            "failures": str(len(report.failures)),
            "errors": "0",
            "time": f"{elapsed_s:.3f}",
        },
    )
    for board in report.boards:
        rows = [r for r in report.rows if r.board == board]
        failed = [r for r in rows if not r.passed]
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": x(board),
                "tests": str(len(rows)),
                "failures": str(len(failed)),
                "errors": "0",
                "skipped": "0",
                "time": "0.000",
            },
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", {"name": "board", "value": x(board)})
        if report.baseline_source:
            ET.SubElement(
                props, "property", {"name": "baseline", "value": x(report.baseline_source)}
            )
        for r in rows:
            case = ET.SubElement(
                suite,
                "testcase",
                {"classname": x(_classname(board)), "name": x(r.check), "time": "0.000"},
            )
            detail = (
                f"board {r.board}, {r.check}: value {fmt(r.value, r.unit)}, limit "
                f"{limit_text(r)}"
                + (f", baseline {fmt(r.baseline, r.unit)}" if r.baseline is not None else "")
            )
            if r.passed:
                ET.SubElement(case, "system-out").text = x(f"{detail}. {r.message}".strip())
            else:
                fail = ET.SubElement(
                    case,
                    "failure",
                    {"message": x(r.message or f"{r.check} failed"), "type": "edgecal.check"},
                )
                fail.text = x(f"{detail}\n{r.message}")
        notes = [w for w in report.warnings if not _other_board(w, board, report.boards)]
        if notes:
            ET.SubElement(suite, "system-err").text = x("\n".join(notes))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
