"""Differences between two calibrations: tables (per-layer scales) or histogram files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgecal.calib.kl import kl_best_bin
from edgecal.calib.table import CalibrationTable, is_weight_key
from edgecal.runs.histfile import HistogramSet


def _rel(a: float, b: float) -> float:
    denom = max(abs(a), abs(b))
    return 0.0 if denom == 0 else abs(a - b) / denom


@dataclass(frozen=True)
class ScaleDiff:
    key: str
    kind: str  # "blob" or "weight"
    a: float | None  # blob: the scale; weight: None (see max_rel)
    b: float | None
    max_rel: float  # largest relative difference over the values of the key
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_tables(a: CalibrationTable, b: CalibrationTable) -> list[ScaleDiff]:
    """One row per key of either table, in ``a``'s order then ``b``'s extra keys."""
    rows: list[ScaleDiff] = []
    for key in [*a.records, *(k for k in b.records if k not in a.records)]:
        kind = "weight" if is_weight_key(key) else "blob"
        va, vb = a.records.get(key), b.records.get(key)
        if va is None or vb is None:
            present = "a" if vb is None else "b"
            rows.append(ScaleDiff(key, kind, None, None, float("inf"), f"only in {present}"))
            continue
        if va.shape != vb.shape:
            rows.append(
                ScaleDiff(key, kind, None, None, float("inf"), f"{va.size} vs {vb.size} values")
            )
            continue
        rel = max((_rel(float(x), float(y)) for x, y in zip(va, vb, strict=True)), default=0.0)
        if kind == "blob":
            rows.append(ScaleDiff(key, kind, float(va[0]), float(vb[0]), rel))
        else:
            changed = int(np.count_nonzero(va != vb))
            rows.append(
                ScaleDiff(key, kind, None, None, rel, f"{changed} of {va.size} channels differ")
            )
    return rows


@dataclass(frozen=True)
class HistogramDiff:
    layer: str
    absmax_a: float
    absmax_b: float
    absmax_rel: float
    kl_bin_a: int | None
    kl_bin_b: int | None
    mass_moved: float  # half the L1 distance of the normalised histograms (0 = same shape)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_histograms(a: HistogramSet, b: HistogramSet) -> list[HistogramDiff]:
    """Per calibrated layer: abs-max, KL bin and how much histogram mass moved.

    Histograms binned on different abs-max ranges are compared on their own bins (each is a
    density over [0, its absmax]); ``mass_moved`` is then a shape difference, not a bin-exact one.
    """
    rows: list[HistogramDiff] = []
    for layer in [*a.stats, *(k for k in b.stats if k not in a.stats)]:
        ha, hb = a.stats.get(layer), b.stats.get(layer)
        if ha is None or hb is None:
            only, h = ("a", ha) if ha is not None else ("b", hb)
            m = float(h.absmax) if h is not None else float("nan")
            rows.append(
                HistogramDiff(layer, m, m, float("inf"), None, None, 1.0, f"only in {only}")
            )
            continue
        sa, sb = int(ha.counts.sum()), int(hb.counts.sum())
        moved = 0.0
        if sa and sb:
            pa = ha.counts.astype(np.float64) / sa
            pb = hb.counts.astype(np.float64) / sb
            moved = float(np.abs(pa - pb).sum() / 2)
        rows.append(
            HistogramDiff(
                layer,
                float(ha.absmax),
                float(hb.absmax),
                _rel(float(ha.absmax), float(hb.absmax)),
                kl_best_bin(ha.counts) if sa else None,
                kl_best_bin(hb.counts) if sb else None,
                moved,
                "" if (sa and sb) else "no histogram (abs-max only)",
            )
        )
    return rows
