"""``edgecal report RUN``: one self-contained HTML page made from a run directory.

Three layers, each a function of the one before:

1. *load* (:func:`load_report_data`): the run directory's files (``edgecal.runs.rundir`` formats)
   into typed, checked records (:class:`ReportData`).  A file of the wrong shape raises
   :class:`~edgecal.errors.InputFileError` naming the file and the JSON path of the bad value;
   a missing file is ``None`` (the page says so).
2. *plot* (``*_plot`` functions): records in, PNG bytes out, with matplotlib's ``Figure`` and
   the Agg canvas directly (no pyplot, so no global figure state to leak or close).
3. *render* (:func:`render_html`): records in, the HTML document out.  Every string that came
   from a file is escaped; plots are ``data:`` URLs; no external resources at all, so the page
   works offline and from any folder.
"""

from __future__ import annotations

import base64
import html
import io
import math
import shlex
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edgecal import __version__
from edgecal.calib.methods import METHODS, Method
from edgecal.errors import InputFileError, UsageError
from edgecal.files.atomic import write_text_atomic
from edgecal.quality.consistency import Consistency
from edgecal.quality.jsondoc import Malformed as _Malformed
from edgecal.quality.metrics import Score
from edgecal.quality.rundoc import result_doc
from edgecal.quality.sensitivity import Sensitivity
from edgecal.quality.thresholds import LayerThresholds, ThresholdsDoc
from edgecal.quality.tuning import TuneDoc
from edgecal.quality.validation import ValidationDoc, ValidationResult
from edgecal.runs.histfile import load_histograms
from edgecal.runs.rundir import (
    HISTOGRAMS,
    REPORT,
    RUN_JSON,
    SENSITIVITY,
    THRESHOLDS,
    TUNE,
    VALIDATION,
    RunDir,
    RunInfo,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

T = TypeVar("T")

#: Files the report reads, in page order, with what each one holds.
REPORT_FILES = {
    VALIDATION: "per-board accuracy, agreement, cosine/SQNR, latency, per-layer figures",
    THRESHOLDS: "per-layer abs-max and KL/ACIQ/EQ thresholds",
    HISTOGRAMS: "per-layer activation histograms",
    SENSITIVITY: "per-layer sensitivity ranking",
    TUNE: "tune's steps and the layers kept in fp32",
    RUN_JSON: "what ran: commands, versions, input hashes",
}

# ============================================================================ records
# The run documents' records are their owners' (edgecal.quality, edgecal.runs.rundir); the
# report adds the histograms, read from histograms.npz.


@dataclass(frozen=True)
class LayerHistogram:
    layer: str
    blob: str
    absmax: float
    counts: np.ndarray  # 2048 bins, bin i covers [i, i+1) * absmax / 2048


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows; ``None`` for a file the run does not have."""

    run_path: str
    run: RunInfo
    validation: ValidationDoc | None = None
    thresholds: dict[str, LayerThresholds] | None = None
    histograms: tuple[LayerHistogram, ...] | None = None
    histogram_meta: dict[str, Any] | None = None
    sensitivity: Sensitivity | None = None
    tune: TuneDoc | None = None
    present: tuple[str, ...] = ()  # names of the REPORT_FILES the run has


# ============================================================================ load


def parse_sensitivity(doc: Any) -> Sensitivity:
    return Sensitivity.from_dict(result_doc(doc).d)


def _load(run: RunDir, name: str, parse: Callable[[Any], T]) -> T | None:
    doc = run.read_optional(name)
    if doc is None:
        return None
    try:
        return parse(doc)
    except _Malformed as exc:
        raise InputFileError(f"{run.file(name)}: malformed: {exc}",
                             hint="re-run the command that wrote it, with this edgecal "
                                  "version") from None


def _load_histograms(run: RunDir) -> tuple[tuple[LayerHistogram, ...], dict[str, Any]] | None:
    if not run.has(HISTOGRAMS):
        return None
    try:
        hs = load_histograms(run.file(HISTOGRAMS))
    except (zipfile.BadZipFile, EOFError) as exc:  # not caught by load_histograms
        raise InputFileError(f"{run.file(HISTOGRAMS)}: not a readable histogram file ({exc})",
                             hint="re-run the command that wrote it") from None
    hists = tuple(LayerHistogram(layer=k, blob=hs.blobs[k], absmax=float(h.absmax),
                                 counts=h.counts)
                  for k, h in hs.stats.items())
    return hists, dict(hs.meta) if isinstance(hs.meta, dict) else {}


def load_report_data(run: RunDir) -> ReportData:
    loaded = _load_histograms(run)
    run_info = _load(run, RUN_JSON, RunInfo.from_dict)
    assert run_info is not None  # RunDir.open checked it exists
    thresholds = _load(run, THRESHOLDS, ThresholdsDoc.from_dict)
    return ReportData(
        run_path=str(run.path), run=run_info,
        validation=_load(run, VALIDATION, ValidationDoc.from_dict),
        thresholds=thresholds.layers if thresholds is not None else None,
        histograms=loaded[0] if loaded else None,
        histogram_meta=loaded[1] if loaded else None,
        sensitivity=_load(run, SENSITIVITY, parse_sensitivity),
        tune=_load(run, TUNE, TuneDoc.from_dict),
        present=tuple(name for name in REPORT_FILES if run.has(name)),
    )


# ============================================================================ plots

#: Threshold line styles (colour, dash) per method.
_METHOD_STYLE: dict[str, tuple[str, str]] = {
    Method.KL: ("#d62728", "--"), Method.ACIQ: ("#2ca02c", "-."), Method.EQ: ("#9467bd", ":")}
#: ``table``: the scale of a table tune was given (``--table``), kept as it was.
_METHOD_LABEL = {**{m.value: i.label for m, i in METHODS.items()},
                 "table": "given table", "fp32": "fp32"}
_BOARD_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf")
_DPI = 90


def _plain(text: str, limit: int = 0) -> str:
    """Text for a plot label: shortened, with ``$`` escaped (no mathtext from file data)."""
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _finite(values: Iterable[float]) -> np.ndarray:
    """Values for bar lengths: non-finite ones become 0 (the tables show the real value)."""
    arr = np.array(list(values), dtype=np.float64)
    return np.where(np.isfinite(arr), arr, 0.0)


def _figure(width: float, height: float, *, fixed: bool = False) -> Figure:
    """A figure on the Agg canvas; ``fixed``: fixed margins instead of constrained layout
    (half the drawing time: no layout pass), for the per-layer plots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout=None if fixed else "constrained")
    if fixed:
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.17, top=0.9)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _style(ax: Axes) -> None:
    ax.tick_params(labelsize=7)
    ax.grid(axis="x", alpha=0.3, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def histogram_plot(hist: LayerHistogram, thr: LayerThresholds | None) -> bytes:
    """The |x| histogram in activation units (log counts) with the thresholds as lines."""
    from matplotlib.patches import StepPatch
    from matplotlib.ticker import NullLocator

    fig = _figure(5.2, 2.5, fixed=True)
    ax = fig.add_subplot()
    _style(ax)
    counts = np.asarray(hist.counts, dtype=np.float64)
    title = _plain(f"{hist.layer}  (input {hist.blob})", 70)
    if thr is not None and thr.chosen_method == "fp32":
        title += "  [kept in fp32]"
    ax.set_title(title, fontsize=8, loc="left")
    ax.set_xlabel("|x| (activation units)", fontsize=7)
    ax.set_ylabel("count (log)", fontsize=7)
    if not (math.isfinite(hist.absmax) and hist.absmax > 0 and counts.sum() > 0):
        ax.text(0.5, 0.5, "empty histogram (the blob was zero on every sample)",
                ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_yticks([])
        return _png(fig)
    edges = np.arange(counts.size + 1, dtype=np.float64) * (hist.absmax / counts.size)
    floor = 0.8  # below one count: empty bins draw nothing on the log axis
    # added without autoscaling (the limits are set below): scaling to a 4k-vertex patch
    # costs more than drawing it
    ax.add_artist(StepPatch(np.where(counts > 0, counts, floor), edges, baseline=floor,
                            fill=True, facecolor="#9bb7d4", edgecolor="#4a6f96", linewidth=0.4))
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks: many artists, no information
    ax.set_ylim(bottom=floor, top=float(counts.max()) * 2.0)
    right = hist.absmax
    if thr is not None:
        lines = [(m, v) for m, v in thr.by_method().items() if v is not None and math.isfinite(v)]
        for method, value in lines:
            color, dash = _METHOD_STYLE[method]
            chosen = method == thr.chosen_method
            ax.axvline(value, color=color, linestyle="-" if chosen else dash,
                       linewidth=2.6 if chosen else 1.2, zorder=4 if chosen else 3,
                       label=f"{_METHOD_LABEL[method]} {value:.4g}"
                             + (" (chosen)" if chosen else ""))
        drawn = {m for m, _ in lines}
        if thr.chosen is not None and math.isfinite(thr.chosen) \
                and thr.chosen_method not in drawn and thr.chosen_method != "fp32":
            ax.axvline(thr.chosen, color="black", linewidth=2.6, zorder=4,
                       label=f"chosen {thr.chosen:.4g}")
        shown = [v for _, v in lines]
        if thr.chosen is not None and math.isfinite(thr.chosen):
            shown.append(thr.chosen)
            if thr.chosen_method != "fp32" and thr.chosen < hist.absmax:
                ax.axvspan(thr.chosen, hist.absmax, color="#f4c7c3", alpha=0.35, zorder=1,
                           label="clipped")
        right = max([right, *shown])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="upper right", framealpha=0.85)
    ax.set_xlim(0.0, right * 1.03)
    return _png(fig)


def latency_plot(results: Sequence[ValidationResult]) -> bytes:
    """Median latency per image, fp32 vs int8, per board."""
    n = len(results)
    fig = _figure(1.6 + 1.2 * n, 2.6)
    ax = fig.add_subplot()
    _style(ax)
    ax.grid(False)
    ax.grid(axis="y", alpha=0.3, linewidth=0.6)
    x = np.arange(n, dtype=np.float64)
    for offset, label, values, color in (
            (-0.2, "fp32", [r.latency_fp32_ms for r in results], "#7f7f7f"),
            (0.2, "int8", [r.latency_int8_ms for r in results], "#1f77b4")):
        bars = ax.bar(x + offset, _finite(values), width=0.38, label=label, color=color)
        ax.bar_label(bars, labels=[_fmt(v, 3) for v in values], fontsize=6.5, padding=1)
    ax.set_xticks(x, [_plain(r.board, 16) for r in results])
    ax.set_ylabel("ms / image (median)", fontsize=7)
    ax.set_title("latency", fontsize=8, loc="left")
    ax.legend(fontsize=7)
    ax.margins(y=0.15)
    return _png(fig)


def _barh_height(rows: int, groups: int = 1) -> float:
    return min(40.0, 1.0 + 0.16 * rows * max(1.0, 0.6 * groups))


def layer_cosine_plot(results: Sequence[ValidationResult]) -> bytes:
    """Per-layer output cosine (mean as bars, min as a tick), grouped by board."""
    names = _layer_names(results)
    m = len(results)
    fig = _figure(6.0, _barh_height(len(names), m))
    ax = fig.add_subplot()
    _style(ax)
    y = np.arange(len(names), dtype=np.float64)
    height = 0.8 / m
    lows: list[float] = []
    for j, r in enumerate(results):
        by_name = {lf.name: lf for lf in r.layers}
        mean = [by_name[k].cosine_mean if k in by_name else math.nan for k in names]
        low = [by_name[k].cosine_min if k in by_name else math.nan for k in names]
        yy = y - 0.4 + height * (j + 0.5)
        ax.barh(yy, _finite(mean), height=height * 0.9, color=_BOARD_COLORS[j % 10],
                label=_plain(r.board, 20))
        ax.plot(low, yy, linestyle="none", marker="|", markersize=6, color="black",
                label="min" if j == m - 1 else None)
        lows.extend(v for v in [*mean, *low] if math.isfinite(v))
    lo = min(lows, default=0.0)
    left = max(-1.0, lo - max(1.0 - lo, 1e-4) * 0.15)
    ax.set_xlim(left, 1.0 + (1.0 - left) * 0.02)
    ax.set_yticks(y, [_plain(k, 28) for k in names])
    ax.invert_yaxis()
    ax.set_xlabel(f"cosine int8 vs fp32 (axis starts at {left:.4g})", fontsize=7)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside, not over
    return _png(fig)


def sensitivity_plot(sens: Sensitivity) -> bytes:
    """Per layer, ranked: accuracy points gained by keeping it fp32, and cosine gained."""
    layers = sens.layers
    fig = _figure(7.0, _barh_height(len(layers)))
    ax_gain, ax_cos = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(layers), dtype=np.float64)
    for ax, values, label in (
            (ax_gain, [s.gain_points for s in layers], f"gain_points ({sens.metric} points)"),
            (ax_cos, [s.harm_cosine for s in layers], "harm_cosine")):
        _style(ax)
        vals = _finite(values)
        ax.barh(y, vals, color=np.where(vals > 0, "#d62728", "#9e9e9e"), height=0.7)
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel(label, fontsize=7)
    ax_gain.set_yticks(y, [_plain(f"{rank}. {s.layer}", 28) for rank, s in enumerate(layers, 1)])
    ax_gain.invert_yaxis()
    ax_gain.set_title("keeping the layer fp32 gains (red = harmful in int8)", fontsize=8,
                      loc="left")
    return _png(fig)


# ============================================================================ HTML


class _Html(str):
    """Markup built here (trusted); every other string is escaped when it reaches the page."""


def _esc(value: Any) -> str:
    return value if isinstance(value, _Html) else html.escape(str(value), quote=True)


def _tag(name: str, body: Any, cls: str | None = None) -> _Html:
    attr = f' class="{_esc(cls)}"' if cls else ""
    return _Html(f"<{name}{attr}>{_esc(body)}</{name}>")


def _join(parts: Iterable[Any]) -> _Html:
    return _Html("".join(_esc(p) for p in parts))


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def _fixed(value: float | None, decimals: int) -> str:
    if value is None or not math.isfinite(value):
        return _fmt(value)
    return f"{value:.{decimals}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{_fixed(100.0 * value, 2)} %"


def _cos(value: float) -> str:
    return _fixed(value, 6)


def _db(value: float) -> str:
    return _fmt(value) if not math.isfinite(value) else f"{value:.1f} dB"


def _ms(value: float) -> str:
    return _fixed(value, 3)


def _table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]],
           row_classes: Iterable[str | None] | None = None) -> _Html:
    """A table; ``headers`` ``None``: no header row."""
    head = f"<thead><tr>{_join(_tag('th', h) for h in headers)}</tr></thead>" if headers else ""
    classes = list(row_classes) if row_classes is not None else None
    body = []
    for i, row in enumerate(rows):
        cls = classes[i] if classes is not None else None
        attr = f' class="{_esc(cls)}"' if cls else ""
        body.append(f"<tr{attr}>{_join(_tag('td', c) for c in row)}</tr>")
    return _Html(f"<table>{head}<tbody>{''.join(body)}</tbody></table>")


def _kv_table(items: Iterable[tuple[str, Any]]) -> _Html:
    return _table(None, [(_tag("b", k), _value_text(v)) for k, v in items])


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value_text(v)}" for k, v in value.items())
    return str(value)


def _img(png: bytes, alt: str) -> _Html:
    data = base64.b64encode(png).decode("ascii")
    return _Html(f'<img class="plot" alt="{_esc(alt)}" src="data:image/png;base64,{data}">')


def _figure_html(png: bytes, alt: str, caption: str) -> _Html:
    return _Html(f"<figure>{_img(png, alt)}{_tag('figcaption', caption)}</figure>")


def _missing(name: str, what: str) -> _Html:
    return _Html(f'<p class="missing">Not in this run: <code>{_esc(name)}</code> ({_esc(what)}'
                 ").</p>")


def _layer_names(results: Sequence[ValidationResult]) -> list[str]:
    names: dict[str, None] = {}
    for r in results:
        for lf in r.layers:
            names.setdefault(lf.name, None)
    return list(names)


def _score_row(label: str, s: Score) -> list[Any]:
    return [label, _pct(s.agreement), _pct(s.accuracy), _fixed(s.drop_points, 2),
            _cos(s.cosine_mean), _cos(s.cosine_min), _ms(s.latency_ms)]


_SCORE_HEAD = ("", "agreement", "accuracy", "drop (points)", "cosine mean", "cosine min",
               "latency ms")


def summary_section(v: ValidationDoc | None) -> _Html:
    if v is None:
        return _missing(VALIDATION, REPORT_FILES[VALIDATION])
    if not v.results:
        return _Html("<p class=\"missing\">validation.json has no board results.</p>")
    c = v.consistency
    diverging = set(c.diverging) | {b.board for b in c.boards if b.diverges} if c else set()
    rows, classes = [], []
    for r in v.results:
        speedup = (r.latency_fp32_ms / r.latency_int8_ms
                   if r.latency_int8_ms > 0 and math.isfinite(r.latency_int8_ms) else math.nan)
        flag = r.board in diverging
        rows.append([_Html(f"<b>{_esc(r.board)}</b>" + (" ⚠ diverges" if flag else "")),
                     f"{r.runtime}, {r.threads} thr", r.n_samples, _pct(r.top1_fp32),
                     _pct(r.top1_int8), _pct(r.agreement), _cos(r.cosine_mean),
                     _cos(r.cosine_min), _db(r.sqnr_mean_db), _db(r.sqnr_min_db),
                     _ms(r.latency_fp32_ms), _ms(r.latency_int8_ms), f"{_fixed(speedup, 2)}×"])
        classes.append("bad" if flag else None)
    parts: list[Any] = [
        _table(("board", "runtime", "images", "top-1 fp32", "top-1 int8", "agreement",
                "cosine mean", "cosine min", "SQNR mean", "SQNR min", "fp32 ms", "int8 ms",
                "speed-up"), rows, classes),
        _Html("<p class=\"note\">Output blob: "
              + ", ".join(f"<code>{_esc(r.output_blob)}</code> ({_esc(r.board)})"
                          for r in v.results) + ". Top-1 needs labels (— without).</p>"),
        _figure_html(latency_plot(v.results), "latency per image, fp32 vs int8, per board",
                     "median latency per image, fp32 vs int8"),
    ]
    parts.append(_consistency_html(v.consistency, len(v.results)))
    return _join(parts)


def _consistency_html(c: Consistency | None, n_boards: int) -> _Html:
    if c is None:
        return _Html("<h3>Cross-board consistency</h3><p class=\"missing\">No cross-board check"
                     f" in this run ({n_boards} board{'s' if n_boards != 1 else ''}; it needs "
                     "two or more).</p>")
    parts: list[Any] = [_Html("<h3>Cross-board consistency</h3>")]
    diverging = list(dict.fromkeys([*c.diverging, *(b.board for b in c.boards if b.diverges)]))
    if diverging:
        parts.append(_tag("p", "Diverging boards: " + ", ".join(diverging), "alert"))
    else:
        parts.append(_tag("p", "All boards agree within tolerance.", "ok"))
    parts.append(_tag("p", f"Tolerance: cosine ≥ {_fmt(c.tolerance_cosine, 6)}, top-1 "
                           f"disagreement ≤ {_pct(c.tolerance_disagree)}.", "note"))
    parts.append(_table(
        ("board", "min cosine to the others", "diverges", "why"),
        [(b.board, _cos(b.cosine_to_others_min),
          _Html("<b>yes</b>") if b.diverges else "no", b.why or "") for b in c.boards],
        ["bad" if b.diverges else None for b in c.boards]))
    parts.append(_table(
        ("board A", "board B", "cosine mean", "cosine min", "top-1 disagreement"),
        [(p.a, p.b, _cos(p.cosine_mean), _cos(p.cosine_min), _pct(p.top1_disagree))
         for p in c.pairs]))
    return _join(parts)


def _threshold_cell(t: LayerThresholds, method: str) -> Any:
    value = t.by_method()[method]
    text = _fmt(value)
    return _tag("b", text + " ✓", "chosen") if method == t.chosen_method else text


def layers_section(thresholds: dict[str, LayerThresholds] | None,
                   hists: Sequence[LayerHistogram] | None) -> _Html:
    parts: list[Any] = []
    if thresholds is None:
        parts.append(_missing(THRESHOLDS, REPORT_FILES[THRESHOLDS] + "; plots without lines"))
    else:
        parts.append(_table(
            ("layer", "input blob", "abs-max", *(i.label for i in METHODS.values()), "chosen"),
            [(t.layer, t.blob, _fmt(t.absmax), *(_threshold_cell(t, m) for m in Method),
              f"{_METHOD_LABEL[t.chosen_method]} {_fmt(t.chosen)}"
              if t.chosen_method != "fp32" else "kept in fp32")
             for t in thresholds.values()]))
        parts.append(_tag("p", "Thresholds in activation units (scale = 127 / threshold).",
                          "note"))
    if hists is None:
        parts.append(_missing(HISTOGRAMS, REPORT_FILES[HISTOGRAMS]))
        return _join(parts)
    figs = []
    for h in hists:
        t = thresholds.get(h.layer) if thresholds else None
        marks = ", ".join(f"{_METHOD_LABEL[m]} {_fmt(v)}" for m, v in t.by_method().items()
                          if v is not None) if t else "no thresholds"
        figs.append(_figure_html(
            histogram_plot(h, t),
            f"histogram of |x| at the input of layer {h.layer} ({marks})",
            f"{h.layer}: abs-max {_fmt(h.absmax)}, bin width {_fmt(h.absmax / h.counts.size)}"))
    parts.append(_Html(f'<div class="grid">{_join(figs)}</div>'))
    return _join(parts)


def cosine_section(v: ValidationDoc | None) -> _Html:
    if v is None:
        return _missing(VALIDATION, REPORT_FILES[VALIDATION])
    results = [r for r in v.results if r.layers]
    if not results:
        return _Html("<p class=\"missing\">validation.json has no per-layer figures.</p>")
    names = _layer_names(results)
    first = {lf.name: lf for lf in results[0].layers}
    head = ["layer", "type", "requantized"]
    for r in results:
        head += [f"{r.board} cosine mean", f"{r.board} cosine min", f"{r.board} SQNR"]
    rows = []
    for name in names:
        lf0 = first.get(name)
        row: list[Any] = [name, lf0.type if lf0 else "", _value_text(lf0.requantized)
                          if lf0 else ""]
        for r in results:
            lf = next((x for x in r.layers if x.name == name), None)
            row += ([_cos(lf.cosine_mean), _cos(lf.cosine_min), _db(lf.sqnr_db)] if lf
                    else ["—", "—", "—"])
        rows.append(row)
    boards = ", ".join(r.board for r in results)
    return _join([
        _figure_html(layer_cosine_plot(results),
                     f"per-layer output cosine, int8 vs fp32, boards {boards}",
                     "per-layer output cosine int8 vs fp32 (bar: mean over images, tick: min)"),
        _table(head, rows)])


def sensitivity_section(s: Sensitivity | None) -> _Html:
    if s is None:
        return _missing(SENSITIVITY, REPORT_FILES[SENSITIVITY])
    parts: list[Any] = [
        _tag("p", f"Board {s.board}, metric {s.metric}, {s.n_samples} images. All int8: "
                  f"drop {_fixed(s.all_int8.drop_points, 2)} points, agreement "
                  f"{_pct(s.all_int8.agreement)}, cosine {_cos(s.all_int8.cosine_mean)}.")]
    if not s.layers:
        parts.append(_tag("p", "No layers ranked.", "missing"))
        return _join(parts)
    parts.append(_figure_html(sensitivity_plot(s), "sensitivity per layer: gain_points and "
                                                    "harm_cosine, most harmful first",
                              "gain from keeping each layer fp32 (most harmful first)"))
    parts.append(_table(
        ("rank", "layer", "type", "gain (points)", "harm cosine", "keep fp32: drop",
         "only int8: drop", "keep fp32: latency ms"),
        [(rank, x.layer, x.type, _fixed(x.gain_points, 2), _fmt(x.harm_cosine),
          _fixed(x.keep_fp32.drop_points, 2),
          _fixed(x.only_int8.drop_points if x.only_int8 else None, 2),
          _ms(x.keep_fp32.latency_ms)) for rank, x in enumerate(s.layers, 1)],
        ["bad" if x.gain_points > 0 else None for x in s.layers]))
    return _join(parts)


def tune_section(t: TuneDoc | None) -> _Html:
    if t is None:
        return _missing(TUNE, REPORT_FILES[TUNE])
    status = (_tag("p", f"Target met: {t.metric} drop {_fixed(t.final.drop_points, 2)} ≤ "
                        f"{_fixed(t.max_drop, 2)} points. {t.reason[:1].upper()}{t.reason[1:]}",
                   "ok")
              if t.target_met else
              _tag("p", f"Target not met (max drop {_fixed(t.max_drop, 2)} points): "
                        f"{t.reason}", "alert"))
    parts: list[Any] = [
        status,
        _tag("p", f"Method {t.method}, metric {t.metric}"
                  + (f", {t.evaluations} variants scored" if t.evaluations is not None else "")
                  + (f"; the fp32 model takes {_ms(t.fp32_latency_ms)} ms per image"
                     if t.fp32_latency_ms is not None else "") + ".", "note"),
        _table(_SCORE_HEAD, [_score_row("initial", t.initial), _score_row("final", t.final)]),
        _Html("<h3>Steps</h3>"),
        _table(("#", "action", "layer", "method", "drop (points)", "agreement", "cosine mean",
                "latency ms", "kept"),
               [(i + 1, s.action, s.layer, s.method or "—", _fixed(s.score.drop_points, 2),
                 _pct(s.score.agreement), _cos(s.score.cosine_mean), _ms(s.score.latency_ms),
                 "yes" if s.kept else "no") for i, s in enumerate(t.steps)],
               ["ok" if s.kept else None for s in t.steps])
        if t.steps else _tag("p", "No steps.", "note"),
        _Html("<h3>Layers kept in fp32</h3>"),
    ]
    if t.fp32_layers:
        total = sum(c for _, c in t.fp32_layers)
        parts.append(_table(("layer", "latency cost ms"),
                            [*[(k, _ms(c)) for k, c in t.fp32_layers],
                             (_Html("<b>total</b>"), _ms(total))]))
    else:
        parts.append(_tag("p", "None: every calibrated layer is int8.", "note"))
    if t.layer_methods:
        parts.append(_Html("<h3>Per-layer methods</h3>"))
        parts.append(_table(("layer", "method"), sorted(t.layer_methods.items())))
    return _join(parts)


def boards_section(v: ValidationDoc | None) -> _Html:
    if v is None:
        return _missing(VALIDATION, "the device facts come from it")
    parts: list[Any] = []
    for r in v.results:
        parts.append(_tag("h3", r.board))
        facts = dict(r.device) or {"name": r.board}
        parts.append(_kv_table([*facts.items(), ("runtime", r.runtime),
                                ("threads", r.threads)]))
    return _join(parts)


def provenance_section(data: ReportData) -> _Html:
    run = data.run
    parts: list[Any] = [
        _kv_table([("run directory", data.run_path), ("kind", run.kind),
                   ("edgecal (run)", run.edgecal), ("agent protocol", run.protocol),
                   ("edgecal (report)", __version__)]),
        _Html("<h3>Commands</h3>"),
        _table(("#", "at", "kind", "command"),
               [(i + 1, c.at, c.kind, _tag("code", shlex.join(c.argv)))
                for i, c in enumerate(run.commands)])
        if run.commands else _tag("p", "No commands recorded.", "missing"),
        _Html("<h3>Inputs</h3>"),
    ]
    if run.inputs:
        parts.append(_table(("input", "path", "images", "sha256"),
                            [(k, v.get("path", "—"), v.get("count", "—"),
                              _tag("code", v.get("sha256", "—")))
                             for k, v in run.inputs.items()]))
    else:
        parts.append(_tag("p", "No inputs recorded.", "missing"))
    if data.validation is not None:
        rows = [(r.board, kind, f.get("param", "—"), _tag("code", f.get("param_sha256", "—")),
                 f.get("bin", "—"), _tag("code", f.get("bin_sha256", "—")))
                for r in data.validation.results for kind, f in r.models.items()]
        if rows:
            parts.append(_Html("<h3>Models validated</h3>"))
            parts.append(_table(("board", "model", "param", "param sha256", "bin",
                                 "bin sha256"), rows))
    if data.histogram_meta:
        parts.append(_Html("<h3>Histograms</h3>"))
        parts.append(_kv_table(sorted(data.histogram_meta.items())))
    return _join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;
 padding:0 1.2em 3em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:.8em 0 .2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
 margin-top:1.8em}h3{margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f5f8}tbody tr:nth-child(even){background:#fafbfc}
tr.bad td{background:#fde8e7}tr.ok td{background:#eaf6ea}
code{font-size:.9em;word-break:break-all}
.missing{color:#8a5a00;background:#fff6e0;border-left:4px solid #e0a800;padding:.4em .7em}
.alert{color:#a31515;background:#fde8e7;border-left:4px solid #d62728;padding:.4em .7em;
 font-weight:600}
.ok{color:#1d6b1d}p.ok{background:#eaf6ea;border-left:4px solid #2ca02c;padding:.4em .7em}
.note{color:#555;font-size:.85em}
b.chosen{color:#a31515}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
figure{margin:.5em 0;display:inline-block;vertical-align:top}
figcaption{font-size:.8em;color:#555;max-width:480px}
.grid{display:flex;flex-wrap:wrap;gap:.6em}
nav a{margin-right:1em}
ul.files{columns:2;font-size:.85em;padding-left:1.2em}
"""

_SECTIONS = (("summary", "Summary"), ("layers", "Per-layer histograms and thresholds"),
             ("cosine", "Per-layer cosine and SQNR"), ("sensitivity", "Sensitivity ranking"),
             ("tune", "Tune"), ("boards", "Board facts"), ("provenance", "Provenance"))


def render_html(data: ReportData) -> str:
    """The complete page for ``data`` (pure: no file access)."""
    bodies = {
        "summary": summary_section(data.validation),
        "layers": layers_section(data.thresholds, data.histograms),
        "cosine": cosine_section(data.validation),
        "sensitivity": sensitivity_section(data.sensitivity),
        "tune": tune_section(data.tune),
        "boards": boards_section(data.validation),
        "provenance": provenance_section(data),
    }
    nav = _join(_Html(f'<a href="#{key}">{_esc(title)}</a>') for key, title in _SECTIONS)
    files = _join(_tag("li", _Html(
        ("✓ " if name in data.present else "✗ ") + f"<code>{_esc(name)}</code>: "
        + _esc(what if name in data.present else f"missing ({what})")))
        for name, what in REPORT_FILES.items())
    sections = _join(_Html(f'<section id="{key}"><h2>{_esc(title)}</h2>{bodies[key]}</section>')
                     for key, title in _SECTIONS)
    name = Path(data.run_path).name or data.run_path
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>edgecal report: {_esc(name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>edgecal report: {_esc(name)}</h1>"
        f"<p class=\"note\">Run directory <code>{_esc(data.run_path)}</code> ({_esc(data.run.kind)}"
        f" run, edgecal {_esc(data.run.edgecal)}).</p>"
        f"<nav>{nav}</nav><ul class=\"files\">{files}</ul>{sections}"
        f"<p class=\"note\">Made by edgecal {_esc(__version__)} <code>edgecal report</code>.</p>"
        "</body></html>\n"
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
        raise InputFileError(f"{path / RUN_JSON}: malformed: the document should be an object",
                             hint="re-run the command that wrote it") from None


def write_report(run_path: Path, out: Path | None = None) -> Path:
    """Write the page of the run at ``run_path`` to ``out`` (default ``RUN/report.html``),
    atomically; return the path written."""
    run = open_run(Path(run_path))
    page = render_report(run)
    target = Path(out) if out is not None else run.file(REPORT)
    try:
        write_text_atomic(target, page)
    except FileNotFoundError:
        raise UsageError(f"cannot write {target}: its folder does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    return target
