"""Assemble a calibration table in ncnn2table's write order (spec 2.11)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecal.calib.candidates import CANDIDATE_RULES, candidate_scales
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.methods import METHODS, Method, parse_method
from edgecal.calib.scales import blob_scale
from edgecal.calib.table import CalibrationTable, bad_scales, format_value, weight_key
from edgecal.calib.weights import (
    CALIBRATED_TYPES,
    STATIC_TYPES,
    conv_weight_scales,
    static_weight_scales,
)
from edgecal.errors import CalibrationError
from edgecal.ncnnfmt.param import Layer


@dataclass(frozen=True)
class LayerScaleInfo:
    """What ncnn2table prints per conv layer: input blob absmax, threshold and scale.

    ``candidates``: every histogram rule's threshold for the blob (``"kl"``, ``"aciq"``,
    ``"mse"``, ``"p99.9"``...: :func:`edgecal.calib.candidates.candidate_thresholds`); empty
    when the statistics hold no histogram (abs-max only) or the blob was zero throughout.
    """

    name: str
    absmax: np.float32
    threshold: np.float32
    scale: np.float32
    candidates: Mapping[str, np.float32] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The layer's figures as plain numbers (``candidates`` only when there are some)."""
        return {
            "name": self.name,
            "absmax": float(self.absmax),
            "threshold": float(self.threshold),
            "scale": float(self.scale),
            **(
                {"candidates": {k: float(v) for k, v in self.candidates.items()}}
                if self.candidates
                else {}
            ),
        }


@dataclass
class TableBuild:
    table: CalibrationTable
    per_layer: list[LayerScaleInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def format_scale_line(info: LayerScaleInfo) -> str:
    """``"%-40s : max = %-15f  threshold = %-15f  scale = %-15f"`` (no newline)."""
    mx = format_value(info.absmax).ljust(15)
    th = format_value(info.threshold).ljust(15)
    sc = format_value(info.scale).ljust(15)
    return f"{info.name:<40} : max = {mx}  threshold = {th}  scale = {sc}"


def build_table(
    layers_and_weights: Iterable[tuple[Layer, Mapping[str, Any]]],
    blob_stats: Mapping[str, BlobHistogram] | None,
    method: str | Method = Method.KL,
) -> TableBuild:
    """The table ncnn2table writes.

    ``layers_and_weights``: every layer of the model in ``.param`` order with its decoded
    weight records (an empty mapping for layers without weights).  ``blob_stats``: per conv
    layer *name*, the statistics of its input blob; ``None`` or empty gives the weight-only
    table of a run without a dataset (static scales only).  ``eq`` builds its KL starting point.
    ``method`` may be one of ncnn's or an extra rule (``mse``, ``p99.99``...: blob scales from
    the rule, weight scales as for ``kl``); every layer's ``candidates`` are filled when its
    statistics hold a histogram.
    """
    method = parse_method(method)
    items = list(layers_and_weights)
    with_data = bool(blob_stats)
    table = CalibrationTable()
    result = TableBuild(table)
    convs = [(lay, w) for lay, w in items if lay.type in CALIBRATED_TYPES]
    if with_data:
        assert blob_stats is not None
        missing = [lay.name for lay, _ in convs if lay.name not in blob_stats]
        if missing:
            raise CalibrationError(
                f"no activation statistics for layer(s) {', '.join(missing)}",
                hint="statistics are keyed by the consuming layer's name",
            )
        for lay, w in convs:
            ws = conv_weight_scales(lay, w, method)
            result.warnings.extend(ws.warnings)
            table.set(weight_key(lay.name, 0), ws.params[0])
        rule = METHODS[method].blob_rule
        for lay, _ in convs:
            hist = blob_stats[lay.name]
            candidates: dict[str, np.float32] = {}
            if hist.total > 0 and rule in CANDIDATE_RULES:  # a histogram: every rule at once
                every = candidate_scales(hist, lay.name)
                bs = every[rule.value]
                candidates = {name: s.threshold for name, s in every.items()}
            else:
                bs = blob_scale(method, hist, lay.name)
            result.warnings.extend(bs.warnings)
            table.set(lay.name, [bs.scale])
            result.per_layer.append(
                LayerScaleInfo(
                    lay.name, np.float32(hist.absmax), bs.threshold, bs.scale, candidates
                )
            )
    for kind in STATIC_TYPES:
        for lay, w in items:
            if lay.type != kind:
                continue
            ws = static_weight_scales(lay, w)
            result.warnings.extend(ws.warnings)
            for i, values in enumerate(ws.params):
                table.set(weight_key(lay.name, i), values)
    for key, values in table.records.items():
        bad = bad_scales(values)
        if bad:
            result.warnings.append(
                f"table line {key} holds {len(bad)} scale(s) that are not finite and > 0 "
                f"(first: value {bad[0][0] + 1}, {format_value(bad[0][1])}); `edgecal quantize` "
                "refuses this line, keep the layer in float (--keep-fp32) or fix its cause"
            )
    return result
