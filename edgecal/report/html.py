"""``edgecal report RUN``: the run directory's records and plots for one self-contained page.

Three layers, each a function of the one before:

1. *load* (:func:`load_report_data`): the run directory's files (``edgecal.runs.rundir`` formats)
   into typed, checked records (:class:`ReportData`).  A file of the wrong shape raises
   :class:`~edgecal.errors.InputFileError` naming the file and the JSON path of the bad value;
   a missing file is ``None`` (the page says so).
2. *plot* (``*_plot`` functions): records in, PNG bytes out, with matplotlib's ``Figure`` and
   the Agg canvas directly (no pyplot, so no global figure state to leak or close).
3. *render* (:mod:`edgecal.report.page`): records in, the HTML document out, by Jinja2
   templates with autoescaping; plots are ``data:`` URLs; no external resources at all, so the
   page works offline and from any folder.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edgecal.calib.methods import METHODS, Method
from edgecal.errors import InputFileError
from edgecal.quality.jsondoc import Malformed as _Malformed
from edgecal.quality.rundoc import result_doc
from edgecal.quality.sensitivity import Sensitivity
from edgecal.quality.thresholds import LayerThresholds, ThresholdsDoc
from edgecal.quality.tuning import TuneDoc
from edgecal.quality.validation import ValidationDoc, ValidationResult
from edgecal.runs.histfile import load_histograms
from edgecal.runs.rundir import (
    HISTOGRAMS,
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
        raise InputFileError(
            f"{run.file(name)}: malformed: {exc}",
            hint="re-run the command that wrote it, with this edgecal version",
        ) from None


def _load_histograms(run: RunDir) -> tuple[tuple[LayerHistogram, ...], dict[str, Any]] | None:
    if not run.has(HISTOGRAMS):
        return None
    try:
        hs = load_histograms(run.file(HISTOGRAMS))
    except (zipfile.BadZipFile, EOFError) as exc:  # not caught by load_histograms
        raise InputFileError(
            f"{run.file(HISTOGRAMS)}: not a readable histogram file ({exc})",
            hint="re-run the command that wrote it",
        ) from None
    hists = tuple(
        LayerHistogram(layer=k, blob=hs.blobs[k], absmax=float(h.absmax), counts=h.counts)
        for k, h in hs.stats.items()
    )
    return hists, dict(hs.meta) if isinstance(hs.meta, dict) else {}


def load_report_data(run: RunDir) -> ReportData:
    loaded = _load_histograms(run)
    run_info = _load(run, RUN_JSON, RunInfo.from_dict)
    assert run_info is not None  # RunDir.open checked it exists
    thresholds = _load(run, THRESHOLDS, ThresholdsDoc.from_dict)
    return ReportData(
        run_path=str(run.path),
        run=run_info,
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
_METHOD_STYLE: dict[str, tuple[str, Any]] = {
    Method.KL: ("#d62728", "--"),
    Method.ACIQ: ("#2ca02c", "-."),
    Method.EQ: ("#9467bd", ":"),
    Method.MSE: ("#1f77b4", (0, (5, 1, 1, 1))),
    Method.P99_9: ("#8c564b", (0, (1, 1))),
    Method.P99_99: ("#e377c2", (0, (3, 1))),
    Method.P99_999: ("#7f7f7f", (0, (6, 2))),
}
#: ``table``: the scale of a table tune was given (``--table``), kept as it was.
_METHOD_LABEL = {
    **{m.value: i.label for m, i in METHODS.items()},
    "table": "given table",
    "fp32": "fp32",
}
_BOARD_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_DPI = 90


def _plain(text: str, limit: int = 0) -> str:
    """Text for a plot label: shortened, with ``$`` escaped (no mathtext from file data)."""
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return encodable(text).replace("$", r"\$")


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
        ax.text(
            0.5,
            0.5,
            "empty histogram (the blob was zero on every sample)",
            ha="center",
            va="center",
            fontsize=8,
            transform=ax.transAxes,
        )
        ax.set_yticks([])
        return _png(fig)
    edges = np.arange(counts.size + 1, dtype=np.float64) * (hist.absmax / counts.size)
    floor = 0.8  # below one count: empty bins draw nothing on the log axis
    # added without autoscaling (the limits are set below): scaling to a 4k-vertex patch
    # costs more than drawing it
    ax.add_artist(
        StepPatch(
            np.where(counts > 0, counts, floor),
            edges,
            baseline=floor,
            fill=True,
            facecolor="#9bb7d4",
            edgecolor="#4a6f96",
            linewidth=0.4,
        )
    )
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks: many artists, no information
    ax.set_ylim(bottom=floor, top=float(counts.max()) * 2.0)
    right = hist.absmax
    if thr is not None:
        lines = [(m, v) for m, v in thr.by_method().items() if v is not None and math.isfinite(v)]
        for method, value in lines:
            color, dash = _METHOD_STYLE[method]
            chosen = method == thr.chosen_method
            ax.axvline(
                value,
                color=color,
                linestyle="-" if chosen else dash,
                linewidth=2.6 if chosen else 1.2,
                zorder=4 if chosen else 3,
                label=f"{_METHOD_LABEL[method]} {value:.4g}" + (" (chosen)" if chosen else ""),
            )
        drawn = {m for m, _ in lines}
        if (
            thr.chosen is not None
            and math.isfinite(thr.chosen)
            and thr.chosen_method not in drawn
            and thr.chosen_method != "fp32"
        ):
            ax.axvline(
                thr.chosen, color="black", linewidth=2.6, zorder=4, label=f"chosen {thr.chosen:.4g}"
            )
        shown = [v for _, v in lines]
        if thr.chosen is not None and math.isfinite(thr.chosen):
            shown.append(thr.chosen)
            if thr.chosen_method != "fp32" and thr.chosen < hist.absmax:
                ax.axvspan(
                    thr.chosen, hist.absmax, color="#f4c7c3", alpha=0.35, zorder=1, label="clipped"
                )
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
        (0.2, "int8", [r.latency_int8_ms for r in results], "#1f77b4"),
    ):
        bars = ax.bar(x + offset, _finite(values), width=0.38, label=label, color=color)
        ax.bar_label(bars, labels=[fmt(v, 3) for v in values], fontsize=6.5, padding=1)
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
    names = layer_names(results)
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
        ax.barh(
            yy,
            _finite(mean),
            height=height * 0.9,
            color=_BOARD_COLORS[j % 10],
            label=_plain(r.board, 20),
        )
        ax.plot(
            low,
            yy,
            linestyle="none",
            marker="|",
            markersize=6,
            color="black",
            label="min" if j == m - 1 else None,
        )
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
        (ax_cos, [s.harm_cosine for s in layers], "harm_cosine"),
    ):
        _style(ax)
        vals = _finite(values)
        ax.barh(y, vals, color=np.where(vals > 0, "#d62728", "#9e9e9e"), height=0.7)
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel(label, fontsize=7)
    ax_gain.set_yticks(y, [_plain(f"{rank}. {s.layer}", 28) for rank, s in enumerate(layers, 1)])
    ax_gain.invert_yaxis()
    ax_gain.set_title(
        "keeping the layer fp32 gains (red = harmful in int8)", fontsize=8, loc="left"
    )
    return _png(fig)


# ============================================================================ shared with the page


def encodable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold (lone surrogates: a JSON ``"\\udcff"``, a
    non-UTF-8 file name) as a visible ``\\udcff``; fonts and the page's file take the rest."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def layer_names(results: Sequence[ValidationResult]) -> list[str]:
    names: dict[str, None] = {}
    for r in results:
        for lf in r.layers:
            names.setdefault(lf.name, None)
    return list(names)
