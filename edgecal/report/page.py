"""``edgecal report RUN``'s page: the records of :mod:`edgecal.report.html` in, one HTML
document out, by the Jinja2 templates in ``edgecal/report/templates`` (package data).

The templates are autoescaped: every string that came from a run file (layer and board names,
argv, hashes, device facts) reaches the page as text, never as markup.  This module only turns
records into the values the templates show (numbers formatted, plots as ``data:`` URLs, derived
figures such as the speed-up); the markup is all in the templates.  The page loads nothing
from anywhere: no external resources, so it works offline and from any folder.
"""

from __future__ import annotations

import base64
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from edgecal import __version__
from edgecal.calib.methods import METHODS, NCNN_METHODS, RULES
from edgecal.errors import InputFileError, UsageError
from edgecal.files.atomic import write_text_atomic
from edgecal.quality.consistency import Consistency
from edgecal.quality.metrics import Score
from edgecal.quality.sensitivity import Sensitivity
from edgecal.quality.thresholds import LayerThresholds
from edgecal.quality.tuning import TuneDoc
from edgecal.quality.validation import ValidationDoc
from edgecal.report.html import (
    _METHOD_LABEL,
    REPORT_FILES,
    LayerHistogram,
    ReportData,
    encodable,
    fmt,
    histogram_plot,
    latency_plot,
    layer_cosine_plot,
    layer_names,
    load_report_data,
    sensitivity_plot,
)
from edgecal.runs import rundir
from edgecal.runs.rundir import RunDir

#: The page's sections, in order: (anchor, heading).
SECTIONS = (
    ("summary", "Summary"),
    ("layers", "Per-layer histograms and thresholds"),
    ("cosine", "Per-layer cosine and SQNR"),
    ("sensitivity", "Sensitivity ranking"),
    ("tune", "Tune"),
    ("boards", "Board facts"),
    ("provenance", "Provenance"),
)

# ============================================================================ cell values


def fixed(value: float | None, decimals: int) -> str:
    if value is None or not math.isfinite(value):
        return fmt(value)
    return f"{value:.{decimals}f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{fixed(100.0 * value, 2)} %"


def cos(value: float) -> str:
    return fixed(value, 6)


def db(value: float) -> str:
    return fmt(value) if not math.isfinite(value) else f"{value:.1f} dB"


def ms(value: float) -> str:
    return fixed(value, 3)


def value_text(value: Any) -> str:
    """A device fact or metadata value as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(value_text(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {value_text(v)}" for k, v in value.items())
    return str(value)


@dataclass(frozen=True)
class Cell:
    """A table cell with markup: ``text`` in a ``<tag class="cls">``, then plain ``after``
    (all three escaped by the template)."""

    text: str
    tag: str = "b"
    cls: str = ""
    after: str = ""


@dataclass(frozen=True)
class Table:
    """``head`` ``()``: no header row; ``classes``: a class per row (``""``: none)."""

    head: Sequence[str]
    rows: Sequence[Sequence[Any]]
    classes: Sequence[str] = ()

    def row_class(self, i: int) -> str:
        return self.classes[i] if i < len(self.classes) else ""


@dataclass(frozen=True)
class Figure:
    url: str  # data:image/png;base64,...
    alt: str
    caption: str


def figure(png: bytes, alt: str, caption: str) -> Figure:
    return Figure("data:image/png;base64," + base64.b64encode(png).decode("ascii"), alt, caption)


def kv_table(items: Sequence[tuple[str, Any]]) -> Table:
    return Table((), [(Cell(k), value_text(v)) for k, v in items])


def _missing(name: str, what: str = "") -> dict[str, str]:
    """A run file the section needs and the run does not have (``what``: what it holds)."""
    return {"missing": name, "what": what or REPORT_FILES[name]}


# ============================================================================ sections


def _score_row(label: str, s: Score) -> list[str]:
    return [
        label,
        pct(s.agreement),
        pct(s.accuracy),
        fixed(s.drop_points, 2),
        cos(s.cosine_mean),
        cos(s.cosine_min),
        ms(s.latency_ms),
    ]


_SCORE_HEAD = (
    "",
    "agreement",
    "accuracy",
    "drop (points)",
    "cosine mean",
    "cosine min",
    "latency ms",
)


def summary_view(v: ValidationDoc | None) -> dict[str, Any]:
    if v is None:
        return _missing(rundir.VALIDATION)
    if not v.results:
        return {"empty": "validation.json has no board results."}
    c = v.consistency
    diverging = set(c.diverging) | {b.board for b in c.boards if b.diverges} if c else set()
    metric = next((r.metric.name for r in v.results if r.metric is not None), None)
    rows = []
    for r in v.results:
        speedup = (
            r.latency_fp32_ms / r.latency_int8_ms
            if r.latency_int8_ms > 0 and math.isfinite(r.latency_int8_ms)
            else math.nan
        )
        rows.append(
            [
                Cell(r.board, after=" ⚠ diverges" if r.board in diverging else ""),
                f"{r.runtime}, {r.threads} thr",
                r.n_samples,
                pct(r.top1_fp32),
                pct(r.top1_int8),
                pct(r.agreement),
                cos(r.cosine_mean),
                cos(r.cosine_min),
                db(r.sqnr_mean_db),
                db(r.sqnr_min_db),
                ms(r.latency_fp32_ms),
                ms(r.latency_int8_ms),
                f"{fixed(speedup, 2)}×",
            ]
        )
        if metric:  # the task metric (validate --metric): its figure and drop
            m = r.metric
            rows[-1] += [pct(m.primary), fixed(m.drop_points, 2)] if m else ["—", "—"]
    return {
        "table": Table(
            (
                "board",
                "runtime",
                "images",
                "top-1 fp32",
                "top-1 int8",
                "agreement",
                "cosine mean",
                "cosine min",
                "SQNR mean",
                "SQNR min",
                "fp32 ms",
                "int8 ms",
                "speed-up",
                *((f"{metric} int8", f"{metric} drop pts") if metric else ()),
            ),
            rows,
            ["bad" if r.board in diverging else "" for r in v.results],
        ),
        "blobs": [(r.output_blob, r.board) for r in v.results],
        "latency": figure(
            latency_plot(v.results),
            "latency per image, fp32 vs int8, per board",
            "median latency per image, fp32 vs int8",
        ),
        "consistency": consistency_view(v.consistency, len(v.results)),
    }


def consistency_view(c: Consistency | None, n_boards: int) -> dict[str, Any]:
    if c is None:
        return {"n_boards": n_boards}
    return {
        "diverging": list(
            dict.fromkeys([*c.diverging, *(b.board for b in c.boards if b.diverges)])
        ),
        "tolerance": f"Tolerance: cosine ≥ {fmt(c.tolerance_cosine, 6)}, top-1 disagreement ≤ "
        f"{pct(c.tolerance_disagree)}.",
        "boards": Table(
            ("board", "min cosine to the others", "diverges", "why"),
            [
                (
                    b.board,
                    cos(b.cosine_to_others_min),
                    Cell("yes") if b.diverges else "no",
                    b.why or "",
                )
                for b in c.boards
            ],
            ["bad" if b.diverges else "" for b in c.boards],
        ),
        "pairs": Table(
            ("board A", "board B", "cosine mean", "cosine min", "top-1 disagreement"),
            [
                (p.a, p.b, cos(p.cosine_mean), cos(p.cosine_min), pct(p.top1_disagree))
                for p in c.pairs
            ],
        ),
    }


def _threshold_cell(t: LayerThresholds, method: str) -> Any:
    text = fmt(t.by_method().get(method))
    return Cell(text + " ✓", cls="chosen") if method == t.chosen_method else text


def layers_view(
    thresholds: dict[str, LayerThresholds] | None, hists: Sequence[LayerHistogram] | None
) -> dict[str, Any]:
    view: dict[str, Any] = {}
    if thresholds is None:
        view["no_thresholds"] = _missing(
            rundir.THRESHOLDS, REPORT_FILES[rundir.THRESHOLDS] + "; plots without lines"
        )
    else:
        # ncnn's methods always; an extra rule's column when some layer has its threshold
        shown = [
            *NCNN_METHODS,
            *(m for m in RULES if any(m in t.rules for t in thresholds.values())),
        ]
        view["thresholds"] = Table(
            ("layer", "input blob", "abs-max", *(METHODS[m].label for m in shown), "chosen"),
            [
                (
                    t.layer,
                    t.blob,
                    fmt(t.absmax),
                    *(_threshold_cell(t, m) for m in shown),
                    f"{_METHOD_LABEL[t.chosen_method]} {fmt(t.chosen)}"
                    if t.chosen_method != "fp32"
                    else "kept in fp32",
                )
                for t in thresholds.values()
            ],
        )
    if hists is None:
        view["no_histograms"] = _missing(rundir.HISTOGRAMS)
        return view
    figs = []
    for h in hists:
        t = thresholds.get(h.layer) if thresholds else None
        marks = (
            ", ".join(
                f"{_METHOD_LABEL[m]} {fmt(v)}" for m, v in t.by_method().items() if v is not None
            )
            if t
            else "no thresholds"
        )
        figs.append(
            figure(
                histogram_plot(h, t),
                f"histogram of |x| at the input of layer {h.layer} ({marks})",
                f"{h.layer}: abs-max {fmt(h.absmax)}, bin width {fmt(h.absmax / h.counts.size)}",
            )
        )
    view["histograms"] = figs
    return view


def cosine_view(v: ValidationDoc | None) -> dict[str, Any]:
    if v is None:
        return _missing(rundir.VALIDATION)
    results = [r for r in v.results if r.layers]
    if not results:
        return {"empty": "validation.json has no per-layer figures."}
    first = {lf.name: lf for lf in results[0].layers}
    head = ["layer", "type", "requantized"]
    for r in results:
        head += [f"{r.board} cosine mean", f"{r.board} cosine min", f"{r.board} SQNR"]
    rows = []
    for name in layer_names(results):
        lf0 = first.get(name)
        row: list[Any] = [name, lf0.type if lf0 else "", value_text(lf0.requantized) if lf0 else ""]
        for r in results:
            lf = next((x for x in r.layers if x.name == name), None)
            row += (
                [cos(lf.cosine_mean), cos(lf.cosine_min), db(lf.sqnr_db)] if lf else ["—", "—", "—"]
            )
        rows.append(row)
    boards = ", ".join(r.board for r in results)
    return {
        "plot": figure(
            layer_cosine_plot(results),
            f"per-layer output cosine, int8 vs fp32, boards {boards}",
            "per-layer output cosine int8 vs fp32 (bar: mean over images, tick: min)",
        ),
        "table": Table(head, rows),
    }


def sensitivity_view(s: Sensitivity | None) -> dict[str, Any]:
    if s is None:
        return _missing(rundir.SENSITIVITY)
    view: dict[str, Any] = {
        "intro": f"Board {s.board}, metric {s.metric}, {s.n_samples} images. All int8: drop "
        f"{fixed(s.all_int8.drop_points, 2)} points, agreement "
        f"{pct(s.all_int8.agreement)}, cosine {cos(s.all_int8.cosine_mean)}."
    }
    if not s.layers:
        return view
    view["plot"] = figure(
        sensitivity_plot(s),
        "sensitivity per layer: gain_points and harm_cosine, most harmful first",
        "gain from keeping each layer fp32 (most harmful first)",
    )
    view["table"] = Table(
        (
            "rank",
            "layer",
            "type",
            "gain (points)",
            "harm cosine",
            "keep fp32: drop",
            "only int8: drop",
            "keep fp32: latency ms",
        ),
        [
            (
                rank,
                x.layer,
                x.type,
                fixed(x.gain_points, 2),
                fmt(x.harm_cosine),
                fixed(x.keep_fp32.drop_points, 2),
                fixed(x.only_int8.drop_points if x.only_int8 else None, 2),
                ms(x.keep_fp32.latency_ms),
            )
            for rank, x in enumerate(s.layers, 1)
        ],
        ["bad" if x.gain_points > 0 else "" for x in s.layers],
    )
    return view


def _tune_objective_note(t: TuneDoc) -> str:
    """The objective, the layers int8, the latency of both models with its spread, the
    warnings and the disk use (tune.json from issue 12 on; empty for older runs)."""
    parts = []
    if t.objective:
        parts.append(f"Objective: {t.objective}.")
    figs = t.metric_figures or {}
    if "final" in figs:
        f = figs["final"]
        start = f", {fmt(figs['initial'].primary)} at the start" if "initial" in figs else ""
        base = "" if f.primary_fp32 is None else f" (fp32 {fmt(f.primary_fp32)})"
        parts.append(
            f"Metric {f.name}, the drop's: int8 {fmt(f.primary)}{base} at the end{start}; "
            + ", ".join(f"{k} {fmt(v)}" for k, v in f.figures.items())
            + "."
        )
    if t.int8_layers is not None:
        start = f", from the {t.start_method} table" if t.start_method else ""
        parts.append(f"Layers int8: {t.int8_layers} of {t.quantizable_layers}{start}.")
    lat = t.latency or {}
    if "median_ms" in lat.get("int8", {}) and "median_ms" in lat.get("fp32", {}):
        a, b = lat["int8"], lat["fp32"]
        parts.append(
            f"Latency per image, median (p10–p90): int8 {ms(a['median_ms'])} "
            f"({ms(a['p10_ms'])}–{ms(a['p90_ms'])}) ms, fp32 {ms(b['median_ms'])} "
            f"({ms(b['p10_ms'])}–{ms(b['p90_ms'])}) ms."
        )
    parts.extend(f"Warning: {w}." for w in t.warnings or ())
    if t.disk_bytes:
        d = t.disk_bytes
        parts.append(
            f"Disk: {d.get('run_dir', 0)} bytes in the run directory, "
            f"{d.get('device_work', 0)} pushed to the device."
        )
    return "".join(" " + p for p in parts)


def tune_view(t: TuneDoc | None) -> dict[str, Any]:
    if t is None:
        return _missing(rundir.TUNE)
    view: dict[str, Any] = {
        "status": (
            f"Target met: {t.metric} drop {fixed(t.final.drop_points, 2)} ≤ "
            f"{fixed(t.max_drop, 2)} points. {t.reason[:1].upper()}{t.reason[1:]}"
            if t.target_met
            else f"Target not met (max drop {fixed(t.max_drop, 2)} points): {t.reason}"
        ),
        "target_met": t.target_met,
        "note": f"Method {t.method}, metric {t.metric}"
        + (f", {t.evaluations} variants scored" if t.evaluations is not None else "")
        + (
            f"; the fp32 model takes {ms(t.fp32_latency_ms)} ms per image"
            if t.fp32_latency_ms is not None
            else ""
        )
        + "."
        + _tune_objective_note(t),
        "scores": Table(
            _SCORE_HEAD, [_score_row("initial", t.initial), _score_row("final", t.final)]
        ),
    }
    if t.steps:
        view["steps"] = Table(
            (
                "#",
                "action",
                "layer",
                "method",
                "drop (points)",
                "agreement",
                "cosine mean",
                "latency ms",
                "kept",
            ),
            [
                (
                    i + 1,
                    s.action,
                    s.layer,
                    s.method or "—",
                    fixed(s.score.drop_points, 2),
                    pct(s.score.agreement),
                    cos(s.score.cosine_mean),
                    ms(s.score.latency_ms),
                    "yes" if s.kept else "no",
                )
                for i, s in enumerate(t.steps)
            ],
            ["ok" if s.kept else "" for s in t.steps],
        )
    if t.fp32_layers:
        total = sum(c for _, c in t.fp32_layers)
        view["fp32_layers"] = Table(
            ("layer", "latency cost ms"),
            [*[(k, ms(c)) for k, c in t.fp32_layers], (Cell("total"), ms(total))],
        )
    if t.layer_methods:
        view["layer_methods"] = Table(("layer", "method"), sorted(t.layer_methods.items()))
    return view


def boards_view(v: ValidationDoc | None) -> dict[str, Any]:
    if v is None:
        return _missing(rundir.VALIDATION, "the device facts come from it")
    return {
        "boards": [
            (
                r.board,
                kv_table(
                    [
                        *(dict(r.device) or {"name": r.board}).items(),
                        ("runtime", r.runtime),
                        ("threads", r.threads),
                    ]
                ),
            )
            for r in v.results
        ]
    }


def provenance_view(data: ReportData) -> dict[str, Any]:
    run = data.run
    view: dict[str, Any] = {
        "facts": kv_table(
            [
                ("run directory", data.run_path),
                ("kind", run.kind),
                ("edgecal (run)", run.edgecal),
                ("agent protocol", run.protocol),
                ("edgecal (report)", __version__),
            ]
        ),
    }
    if run.commands:
        view["commands"] = Table(
            ("#", "at", "kind", "command"),
            [
                (i + 1, c.at, c.kind, Cell(shlex.join(c.argv), "code"))
                for i, c in enumerate(run.commands)
            ],
        )
    if run.inputs:
        view["inputs"] = Table(
            ("input", "path", "images", "sha256"),
            [
                (k, v.get("path", "—"), v.get("count", "—"), Cell(v.get("sha256", "—"), "code"))
                for k, v in run.inputs.items()
            ],
        )
    if data.validation is not None:
        rows = [
            (
                r.board,
                kind,
                f.get("param", "—"),
                Cell(f.get("param_sha256", "—"), "code"),
                f.get("bin", "—"),
                Cell(f.get("bin_sha256", "—"), "code"),
            )
            for r in data.validation.results
            for kind, f in r.models.items()
        ]
        if rows:
            view["models"] = Table(
                ("board", "model", "param", "param sha256", "bin", "bin sha256"), rows
            )
    if data.histogram_meta:
        view["histogram_meta"] = kv_table(sorted(data.histogram_meta.items()))
    return view


# ============================================================================ the page

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("edgecal.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    finalize=lambda value: (
        value if not isinstance(value, str) or isinstance(value, Markup) else encodable(value)
    ),
)  # Markup: a macro's output, made of finalized values
_ENV.tests["cell"] = lambda value: isinstance(value, Cell)


def render_html(data: ReportData) -> str:
    """The complete page for ``data`` (pure but for reading the templates)."""
    return _ENV.get_template("report.html.j2").render(
        data=data,
        name=Path(data.run_path).name or data.run_path,
        version=__version__,
        files=[(name, what, name in data.present) for name, what in REPORT_FILES.items()],
        sections=SECTIONS,
        summary=summary_view(data.validation),
        layers=layers_view(data.thresholds, data.histograms),
        cosine=cosine_view(data.validation),
        sensitivity=sensitivity_view(data.sensitivity),
        tune=tune_view(data.tune),
        boards=boards_view(data.validation),
        provenance=provenance_view(data),
    )


# ============================================================================ entry points


def render_report(run: RunDir) -> str:
    """The HTML page of ``run`` (reads its files; raises InputFileError on a malformed one)."""
    return render_html(load_report_data(run))


def open_run(path: Path) -> RunDir:
    """:meth:`RunDir.open`, also for a run.json that is JSON but not an object."""
    try:
        return RunDir.open(path)
    except AttributeError:
        raise InputFileError(
            f"{path / rundir.RUN_JSON}: malformed: the document should be an object",
            hint="re-run the command that wrote it",
        ) from None


def write_report(run_path: Path, out: Path | None = None) -> Path:
    """Write the page of the run at ``run_path`` to ``out`` (default ``RUN/report.html``),
    atomically; return the path written."""
    run = open_run(Path(run_path))
    page = render_report(run)
    target = Path(out) if out is not None else run.file(rundir.REPORT)
    try:
        write_text_atomic(target, page)
    except FileNotFoundError:
        raise UsageError(f"cannot write {target}: its folder does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    return target
