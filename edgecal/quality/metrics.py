"""The figures of quality (pure: numpy in, floats out): cosine, SQNR, top-1 agreement and
accuracy, the per-image statistics of a pair of models, and the :class:`Score` of an int8 variant
against fp32."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecal.quality.consistency import row_cosines
from edgecal.quality.jsondoc import Record


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two same-size arrays (float64); 1.0 when both are all zero, 0.0
    when only one is."""
    a64 = np.asarray(a, dtype=np.float64).ravel()
    b64 = np.asarray(b, dtype=np.float64).ravel()
    if a64.shape != b64.shape:
        raise ValueError(f"cosine of arrays of {a64.size} and {b64.size} values")
    return cosine_from_sums(_dot(a64, b64), _dot(a64, a64), _dot(b64, b64))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` (1-D float64) by numpy's pairwise summation, not BLAS: the sums the
    agents answer for a compared blob (``edgecal_agent.stats.pair_sums``), bit for bit."""
    return float(np.add.reduce(a * b))


def cosine_from_sums(dot: float, aa: float, bb: float) -> float:
    """:func:`cosine` from the float64 sums ``sum(a*b)``, ``sum(a*a)`` and ``sum(b*b)``."""
    na, nb = math.sqrt(aa), math.sqrt(bb)
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(dot / na / nb, -1.0, 1.0))


def sqnr_from_energies(signal: float, noise: float) -> float:
    """``10*log10(signal / noise)`` in dB; +inf for no noise, -inf for noise on no signal."""
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def energies(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """``(sum ref^2, sum (ref - test)^2)`` in float64."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    t = np.asarray(test, dtype=np.float64).ravel()
    if r.shape != t.shape:
        raise ValueError(f"SQNR of arrays of {r.size} and {t.size} values")
    d = r - t
    return _dot(r, r), _dot(d, d)


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``ref``:
    ``10*log10(sum ref^2 / sum (ref - test)^2)`` dB."""
    return sqnr_from_energies(*energies(ref, test))


def agreement(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """Fraction of samples whose top-1 classes agree."""
    pa, pb = np.asarray(a), np.asarray(b)
    if pa.shape != pb.shape or pa.size == 0:
        raise ValueError(f"agreement of {pa.size} and {pb.size} predictions")
    return float(np.mean(pa == pb))


def accuracy(pred: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    return agreement(pred, labels)


class _Summary:
    """A read-only attribute: ``reduce`` of a list of figures, NaN when the list is empty."""

    def __init__(self, values: str, reduce: Callable[[list[float]], Any]) -> None:
        self.values, self.reduce = values, reduce

    def __get__(self, obj: object, owner: type | None = None) -> float:
        values = getattr(obj, self.values)
        return float(self.reduce(values)) if values else math.nan


@dataclass
class PairStats:
    """Cosine and SQNR of ``test`` vs ``ref`` over images: per-image cosines and SQNRs, and
    the summed energies (the aggregate SQNR)."""

    cosines: list[float] = field(default_factory=list)
    sqnrs: list[float] = field(default_factory=list)
    signal: float = 0.0
    noise: float = 0.0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        s, n = energies(ref, test)
        self.signal += s
        self.noise += n
        self.cosines.append(cosine(ref, test))
        self.sqnrs.append(sqnr_from_energies(s, n))

    def add_sums(self, ref_ref: float, test_test: float, ref_test: float, err_err: float) -> None:
        """:meth:`add` of an image from its four float64 sums (``sum ref^2``, ``sum test^2``,
        ``sum ref*test``, ``sum (ref - test)^2``: what the agent answers for a compared
        blob, ``edgecal_agent.stats.pair_sums``)."""
        self.signal += ref_ref
        self.noise += err_err
        self.cosines.append(cosine_from_sums(ref_test, ref_ref, test_test))
        self.sqnrs.append(sqnr_from_energies(ref_ref, err_err))

    cosine_mean = _Summary("cosines", np.mean)
    cosine_min = _Summary("cosines", np.min)
    sqnr_mean_db = _Summary("sqnrs", np.mean)
    sqnr_min_db = _Summary("sqnrs", np.min)

    @property
    def sqnr_db(self) -> float:
        """SQNR of the summed energies over all images."""
        return sqnr_from_energies(self.signal, self.noise)


@dataclass(frozen=True)
class Score(Record):
    """One int8 variant against fp32 on the scoring images."""

    agreement: float
    accuracy: float | None
    cosine_mean: float
    cosine_min: float
    drop_points: float
    latency_ms: float

    def better_than(self, other: Score) -> bool:
        """Fewer points lost; on a tie, the closer output (higher mean cosine)."""
        return (self.drop_points, -self.cosine_mean) < (other.drop_points, -other.cosine_mean)


def drop_points(agreement: float, accuracy: float | None, accuracy_fp32: float | None) -> float:
    """Points lost against fp32: of top-1 accuracy when labels are known, else of top-1
    agreement (``100 * (1 - agreement)``)."""
    if accuracy is not None and accuracy_fp32 is not None:
        return 100.0 * (accuracy_fp32 - accuracy)
    return 100.0 * (1.0 - agreement)


def score_outputs(
    ref: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray | None,
    accuracy_fp32: float | None,
    latency_ms: float,
) -> Score:
    """Pure: the score of int8 outputs ``got`` against fp32 outputs ``ref`` (both
    ``(n, values)``)."""
    if ref.shape != got.shape:
        raise ValueError(f"outputs of shape {got.shape} against fp32 {ref.shape}")
    pred_ref, pred = np.argmax(ref, axis=1), np.argmax(got, axis=1)
    agree = float(np.mean(pred == pred_ref))
    acc = float(np.mean(pred == labels)) if labels is not None else None
    cos = row_cosines(ref, got)
    return Score(
        agree,
        acc,
        float(cos.mean()),
        float(cos.min()),
        drop_points(agree, acc, accuracy_fp32),
        latency_ms,
    )
