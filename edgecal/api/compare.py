"""Compare two calibration tables (per-layer scale differences) or two histogram files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgecal.api.quantize import read_table
from edgecal.inputs.arguments import path_arg
from edgecal.runs.histfile import load_histograms
from edgecal.workflows.compare import (
    HistogramDiff,
    ScaleDiff,
    compare_histograms,
    compare_tables,
)


@dataclass
class Comparison:
    """One row per layer: of two tables (``tables``) or two histogram files (``histograms``)."""

    tables: list[ScaleDiff] | None = None
    histograms: list[HistogramDiff] | None = None

    @property
    def rows(self) -> list[ScaleDiff] | list[HistogramDiff]:
        return self.histograms if self.histograms is not None else (self.tables or [])


def compare_files(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> Comparison:
    """``a`` vs ``b``: histogram files when either is ``.npz``, else tables."""
    pa, pb = Path(path_arg(a, "a")), Path(path_arg(b, "b"))
    if pa.suffix == ".npz" or pb.suffix == ".npz":
        return Comparison(histograms=compare_histograms(load_histograms(pa), load_histograms(pb)))
    return Comparison(tables=compare_tables(read_table(pa), read_table(pb)))
