"""Blob (activation) scales from statistics: ``kl`` and ``aciq`` as ncnn2table computes them,
and the extra histogram rules of :mod:`edgecal.calib.rules` (``mse``, ``p99.9``...)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgecal.calib.aciq import aciq_clip
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.kl import kl_best_bin, threshold_from_bin
from edgecal.calib.methods import METHODS, RULES, Method, parse_method
from edgecal.calib.rules import edge_threshold, rule_edge
from edgecal.errors import CalibrationError

#: Scale used where ncnn would write ``inf`` (a blob that was zero on every sample, a weight
#: channel that is all zero).  It is ncnn's own zero guard (Embed/MHA/RNN weights, Gemm in
#: ncnn2int8).  Zero data quantizes to 0 with any finite scale, so the int8 result on that data
#: is unchanged; unlike ``inf`` it cannot produce NaN (0 * inf) downstream.
ZERO_GUARD_SCALE = np.float32(1.0)


@dataclass(frozen=True)
class BlobScale:
    threshold: np.float32
    scale: np.float32
    warnings: list[str] = field(default_factory=list)
    kl_bin: int | None = None


def scale_from_threshold(threshold: float | np.float32) -> np.float32:
    """``127 / threshold`` in float32 (inf for 0, as in C)."""
    with np.errstate(divide="ignore"):
        return np.float32(127) / np.float32(threshold)


def blob_scale(
    method: str | Method, hist: BlobHistogram, layer: str = "", *, kl_bin: int | None = None
) -> BlobScale:
    """The input-blob scale of one conv layer.  ``eq`` starts from ``kl`` (spec 2.9); the extra
    rules (``mse``, ``p99.9``...) take the bin edge :func:`edgecal.calib.rules.rule_edge` picks.

    A blob that is zero on every sample (absmax 0) gets :data:`ZERO_GUARD_SCALE` and a
    warning naming ``layer``, where ncnn2table would write ``inf``.  ``kl_bin``: KL's bin for
    these counts when already known (:func:`kl_best_bin` of ``hist.counts``).
    """
    rule = METHODS[parse_method(method)].blob_rule
    who = layer or "<unnamed layer>"
    absmax = np.float32(hist.absmax)
    total = hist.total
    if not np.isfinite(absmax) or absmax < 0:
        raise CalibrationError(f"layer {who}: input blob absmax is {absmax!r}")
    if absmax == 0 or (rule is not Method.ACIQ and total == 0):
        if total != 0:
            raise CalibrationError(f"layer {who}: histogram has counts but absmax is 0")
        msg = (
            f"layer {who}: its input blob was zero on every calibration sample; ncnn2table "
            f"would write scale inf, using {float(ZERO_GUARD_SCALE):g} (zero still quantizes "
            f"to 0)"
        )
        threshold = np.float32(127) / ZERO_GUARD_SCALE
        return BlobScale(threshold, ZERO_GUARD_SCALE, [msg])
    if rule is Method.ACIQ:
        threshold = aciq_clip(absmax, hist.elements_per_sample, 8)
        scale = scale_from_threshold(threshold)
        warnings = []
        if hist.elements_per_sample <= 1:
            warnings.append(
                f"layer {who}: input blob has {hist.elements_per_sample} element(s) per sample; "
                f"ACIQ gives threshold {float(threshold)} and scale {float(scale)} (as ncnn2table)"
            )
            if not np.isfinite(scale) or not np.isfinite(threshold):
                return BlobScale(threshold, ZERO_GUARD_SCALE, warnings)
        return BlobScale(threshold, scale, warnings)
    if rule in RULES:
        threshold = edge_threshold(rule_edge(rule, hist.counts), absmax)
        return BlobScale(threshold, scale_from_threshold(threshold))
    best = kl_best_bin(hist.counts) if kl_bin is None else kl_bin
    threshold = threshold_from_bin(best, absmax)
    return BlobScale(threshold, scale_from_threshold(threshold), [], best)
