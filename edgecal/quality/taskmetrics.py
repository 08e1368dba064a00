"""Task metrics (pure): what "the int8 model is as good as fp32" means for a model's task.

A metric sees every sample's outputs of both models -- all outputs of the model, as a mapping
*output blob -> float32 array* per sample (ncnn's ``(c, h, w)`` layout; shapes may differ from
sample to sample) -- and the labels (``None``, or one per sample: class indices for ``top1``,
the labels file's text for the others), and returns a :class:`MetricFigures`: named figures and
one **primary** figure in ``[0, 1]``, higher better.  The points int8 loses
(:attr:`MetricFigures.drop_points`) are

* ``100 * (primary_fp32 - primary)`` when the metric has a ground-truth form (labels given:
  ``primary_fp32`` is fp32's figure against the labels, ``primary`` int8's);
* ``100 * (1 - primary)`` otherwise, for agreement-style figures (int8 against fp32: 1 when int8
  gives what fp32 gives).

Built in (:func:`builtin_metric`):

* ``top1``: argmax of the first output, flattened (what validate and tune always did): with
  labels, top-1 accuracy; else int8/fp32 top-1 agreement.
* ``fidelity``: per output, the cosine (mean, min over samples) and the SQNR (of the summed
  energies) of int8 against fp32; primary: the least mean cosine over the outputs, clipped to
  ``[0, 1]``.  Any model.
* ``ctc``: greedy CTC decoding of the first output (``(T, classes)``: argmax per time step,
  repeats collapsed, the blank class 0 dropped) into text with a character list (class ``i + 1``
  is line ``i``; PaddleOCR's ``use_space_char`` extra last class decodes as a space); primary:
  the exact-string rate of int8 against fp32, or with labels the exact-string accuracy against
  them.
* ``iou``: dense-map IoU of the first output: a one-channel map is thresholded (``> t``, default
  0.3, DB's binarization), several channels are a segmentation (argmax over channels, the IoU
  averaged over the classes either mask holds); primary: the mean IoU of int8's mask against
  fp32's over the samples (two empty masks count 1).

The user's own metric is any callable ``fn(fp32, int8, labels)`` (:class:`UserMetric`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgecal.errors import EdgecalError, UsageError
from edgecal.quality.jsondoc import Obj, number
from edgecal.quality.metrics import PairStats, Score

#: One sample's outputs: output blob -> float32 array.
Outputs = Mapping[str, np.ndarray]

#: The built-in metrics' names.
BUILTIN = ("top1", "fidelity", "ctc", "iou")
#: DB's binarization threshold: the default of ``iou`` on a probability map.
IOU_THRESHOLD = 0.3
#: What each metric wants of a labels file: class indices, the label text, or nothing.
LABELS_CLASS, LABELS_TEXT, LABELS_NONE = "class", "text", "none"


class MetricError(EdgecalError):
    """The metric cannot be computed (wrong outputs for it, a user metric that failed)."""


@dataclass(frozen=True)
class MetricFigures:
    """A metric's result: ``primary`` (int8, in ``[0, 1]``, higher better), ``primary_fp32``
    (fp32's, when the figure is against ground truth) and the other named ``figures``."""

    name: str
    primary: float
    primary_fp32: float | None = None
    figures: Mapping[str, float] = field(default_factory=dict)

    @property
    def drop_points(self) -> float:
        """Points int8 loses: ``100 * (primary_fp32 - primary)`` with a ground truth, else
        ``100 * (1 - primary)``."""
        if self.primary_fp32 is not None:
            return 100.0 * (self.primary_fp32 - self.primary)
        return 100.0 * (1.0 - self.primary)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "primary": self.primary,
            "primary_fp32": self.primary_fp32,
            "drop_points": self.drop_points,
            "figures": dict(self.figures),
        }

    @classmethod
    def from_dict(cls, doc: Any, where: str = "") -> MetricFigures:
        """What :meth:`to_dict` wrote (``drop_points`` is recomputed)."""
        o = Obj.of(doc, where)
        figs = o.obj("figures")
        return cls(
            o.text("name"),
            o.num("primary"),
            o.opt_num("primary_fp32"),
            {str(k): number(v, figs.at(str(k))) for k, v in figs.d.items()},
        )


class Metric(Protocol):
    """A task metric: ``name``, the ``labels`` it wants (:data:`LABELS_CLASS`,
    :data:`LABELS_TEXT` or :data:`LABELS_NONE`) and the call."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> str: ...

    def __call__(
        self, fp32: Sequence[Outputs], int8: Sequence[Outputs], labels: Sequence[Any] | None
    ) -> MetricFigures: ...


# ----------------------------------------------------------------------------- helpers


def _check_pairs(name: str, fp32: Sequence[Outputs], int8: Sequence[Outputs]) -> None:
    if len(fp32) != len(int8) or not fp32:
        raise MetricError(f"metric {name}: {len(int8)} int8 samples against {len(fp32)} fp32")


def _first(name: str, sample: Outputs) -> np.ndarray:
    if not sample:
        raise MetricError(f"metric {name}: a sample without outputs")
    return np.asarray(next(iter(sample.values())), dtype=np.float32)


def _pair(name: str, a: Outputs, b: Outputs, i: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _first(name, a), _first(name, b)
    if x.shape != y.shape:
        raise MetricError(
            f"metric {name}: sample {i}'s output is {y.shape} in int8 and {x.shape} in fp32"
        )
    return x, y


def _check_labels(name: str, labels: Sequence[Any] | None, n: int) -> None:
    if labels is not None and len(labels) != n:
        raise MetricError(f"metric {name}: {len(labels)} labels for {n} samples")


# ----------------------------------------------------------------------------- top-1


@dataclass(frozen=True)
class Top1:
    """Top-1 of the first output, flattened (see the module doc)."""

    name: str = "top1"
    labels: str = LABELS_CLASS

    def __call__(
        self, fp32: Sequence[Outputs], int8: Sequence[Outputs], labels: Sequence[Any] | None
    ) -> MetricFigures:
        _check_pairs(self.name, fp32, int8)
        _check_labels(self.name, labels, len(fp32))
        pa = np.array([int(np.argmax(_first(self.name, s))) for s in fp32])
        pb = np.array([int(np.argmax(_first(self.name, s))) for s in int8])
        agree = float(np.mean(pa == pb))
        figs = {"agreement": agree}
        if labels is None:
            return MetricFigures(self.name, agree, None, figs)
        y = np.asarray(labels, dtype=np.int64)
        acc_a, acc_b = float(np.mean(pa == y)), float(np.mean(pb == y))
        figs.update(accuracy_fp32=acc_a, accuracy_int8=acc_b)
        return MetricFigures(self.name, acc_b, acc_a, figs)


# ----------------------------------------------------------------------------- fidelity


@dataclass(frozen=True)
class Fidelity:
    """Cosine and SQNR of every output (see the module doc)."""

    name: str = "fidelity"
    labels: str = LABELS_NONE

    def __call__(
        self, fp32: Sequence[Outputs], int8: Sequence[Outputs], labels: Sequence[Any] | None
    ) -> MetricFigures:
        _check_pairs(self.name, fp32, int8)
        stats: dict[str, PairStats] = {}
        for i, (a, b) in enumerate(zip(fp32, int8, strict=True)):
            if set(a) != set(b):
                raise MetricError(
                    f"metric fidelity: sample {i} has outputs {sorted(b)} in int8, "
                    f"{sorted(a)} in fp32"
                )
            for blob, ref in a.items():
                got = b[blob]
                if np.shape(ref) != np.shape(got):
                    raise MetricError(
                        f"metric fidelity: output {blob} of sample {i} is {np.shape(got)} in "
                        f"int8 and {np.shape(ref)} in fp32"
                    )
                stats.setdefault(blob, PairStats()).add(ref, got)
        figs: dict[str, float] = {}
        for blob, st in stats.items():
            figs[f"{blob}.cosine_mean"] = st.cosine_mean
            figs[f"{blob}.cosine_min"] = st.cosine_min
            figs[f"{blob}.sqnr_db"] = st.sqnr_db
        least = min(st.cosine_mean for st in stats.values())
        figs["cosine_mean_least"] = least
        return MetricFigures(self.name, float(np.clip(least, 0.0, 1.0)), None, figs)


# ----------------------------------------------------------------------------- CTC


def ctc_greedy(logits: np.ndarray, blank: int = 0) -> list[int]:
    """Greedy CTC decoding of ``(T, classes)`` scores (any leading 1-sized axes): the argmax
    class per time step, repeats collapsed, ``blank`` dropped."""
    x = np.asarray(logits)
    if x.ndim == 0 or x.size == 0:
        return []
    best = np.argmax(x.reshape(-1, x.shape[-1]), axis=1)
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(c) for c in best[keep] if c != blank]


def ctc_text(classes: Sequence[int], charset: Sequence[str] | None) -> str:
    """Decoded classes as text: class ``i + 1`` is ``charset[i]``, ``len(charset) + 1`` a space
    (PaddleOCR's ``use_space_char``); without a charset, the class numbers joined by spaces."""
    if charset is None:
        return " ".join(str(c) for c in classes)
    out = []
    for c in classes:
        if 1 <= c <= len(charset):
            out.append(charset[c - 1])
        elif c == len(charset) + 1:
            out.append(" ")
        else:
            raise MetricError(
                f"metric ctc: class {c} is beyond the character list ({len(charset)} characters)",
                hint="pass the character list the model was trained with (--charset)",
            )
    return "".join(out)


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class Ctc:
    """Greedy CTC decoding with a character list (see the module doc)."""

    charset: tuple[str, ...] | None = None
    blank: int = 0
    name: str = "ctc"
    labels: str = LABELS_TEXT

    def texts(self, samples: Sequence[Outputs]) -> list[str]:
        out = []
        for s in samples:
            x = _first(self.name, s)
            if self.charset is not None and x.ndim and x.shape[-1] > len(self.charset) + 2:
                raise MetricError(
                    f"metric ctc: the output has {x.shape[-1]} classes, the character list "
                    f"{len(self.charset)} characters (+ the blank, + a space at most)",
                    hint="pass the character list the model was trained with (--charset)",
                )
            out.append(ctc_text(ctc_greedy(x, self.blank), self.charset))
        return out

    def __call__(
        self, fp32: Sequence[Outputs], int8: Sequence[Outputs], labels: Sequence[Any] | None
    ) -> MetricFigures:
        _check_pairs(self.name, fp32, int8)
        _check_labels(self.name, labels, len(fp32))
        ta, tb = self.texts(fp32), self.texts(int8)
        exact = float(np.mean([a == b for a, b in zip(ta, tb, strict=True)]))
        chars = sum(len(a) for a in ta)
        edits = sum(edit_distance(a, b) for a, b in zip(ta, tb, strict=True))
        figs = {"exact_agreement": exact, "char_error_vs_fp32": edits / max(chars, 1)}
        if labels is None:
            return MetricFigures(self.name, exact, None, figs)
        truth = [str(y) for y in labels]
        acc_a = float(np.mean([a == y for a, y in zip(ta, truth, strict=True)]))
        acc_b = float(np.mean([b == y for b, y in zip(tb, truth, strict=True)]))
        figs.update(accuracy_fp32=acc_a, accuracy_int8=acc_b)
        return MetricFigures(self.name, acc_b, acc_a, figs)


# ----------------------------------------------------------------------------- IoU


def dense_mask(x: np.ndarray, threshold: float) -> tuple[np.ndarray, bool]:
    """A dense output as a mask: ``(classes per pixel, is_segmentation)``.  ncnn's ``(c, h, w)``
    (or ``(h, w)``): one channel thresholded (``> threshold``), several argmax over ``c``."""
    a = np.asarray(x)
    if a.ndim >= 3 and a.shape[0] > 1:
        return np.argmax(a, axis=0), True
    return (a.reshape(a.shape[-2:] if a.ndim >= 2 else a.shape) > threshold), False


def mask_iou(a: np.ndarray, b: np.ndarray, segmentation: bool) -> float:
    """IoU of two masks; a segmentation: the mean over the classes either holds.  Two empty
    masks: 1."""
    if not segmentation:
        union = int(np.count_nonzero(a | b))
        return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union
    ious = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        ma, mb = a == c, b == c
        ious.append(int(np.count_nonzero(ma & mb)) / int(np.count_nonzero(ma | mb)))
    return float(np.mean(ious)) if ious else 1.0


@dataclass(frozen=True)
class Iou:
    """Dense-map IoU of int8 against fp32 (see the module doc)."""

    threshold: float = IOU_THRESHOLD
    name: str = "iou"
    labels: str = LABELS_NONE

    def __call__(
        self, fp32: Sequence[Outputs], int8: Sequence[Outputs], labels: Sequence[Any] | None
    ) -> MetricFigures:
        _check_pairs(self.name, fp32, int8)
        ious, pixels = [], []
        for i, (a, b) in enumerate(zip(fp32, int8, strict=True)):
            x, y = _pair(self.name, a, b, i)
            if x.ndim < 2:
                raise MetricError(
                    f"metric iou: the output is {x.shape}, not a dense map ((c,) h, w)",
                    hint="use --metric iou with a detector's probability map or a segmenter",
                )
            ma, seg = dense_mask(x, self.threshold)
            mb, _ = dense_mask(y, self.threshold)
            ious.append(mask_iou(ma, mb, seg))
            pixels.append(float(np.mean(ma == mb)))
        figs = {
            "iou_mean": float(np.mean(ious)),
            "iou_min": float(np.min(ious)),
            "pixel_agreement": float(np.mean(pixels)),
            "threshold": float(self.threshold),
        }
        return MetricFigures(self.name, figs["iou_mean"], None, figs)


# ----------------------------------------------------------------------------- the user's


@dataclass(frozen=True)
class UserMetric:
    """The user's metric ``fn(fp32, int8, labels)`` (``fp32``/``int8``: per sample a mapping
    output blob -> float32 array; ``labels``: ``None`` or the labels file's text per sample)
    returning

    * a number in ``[0, 1]``: the primary figure, agreement-style (drop ``100 * (1 - x)``), or
    * a mapping of figure names to numbers holding ``"primary"`` (and, when measured against
      ground truth, ``"primary_fp32"``: drop ``100 * (primary_fp32 - primary)``), or
    * a :class:`MetricFigures`.
    """

    fn: Callable[..., Any]
    name: str
    labels: str = LABELS_TEXT

    def __call__(
        self, fp32: Sequence[Outputs], int8: Sequence[Outputs], labels: Sequence[Any] | None
    ) -> MetricFigures:
        try:
            got = self.fn(fp32, int8, labels)
        except EdgecalError:
            raise
        except (Exception, SystemExit) as exc:  # not KeyboardInterrupt: Ctrl-C interrupts
            raise MetricError(
                f"metric {self.name} failed: {raised(exc)}",
                hint="it is called as fn(fp32_outputs, int8_outputs, labels); see the README's "
                "'Your own metric'",
            ) from None
        return user_figures(self.name, got)


def raised(exc: BaseException) -> str:
    """What the user's code raised, for a message: ``ValueError: bad shape``; a ``SystemExit``
    (``sys.exit(0)`` in the user's module or function) says so, as it ends nothing here."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def _unit(name: str, what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise MetricError(
            f"metric {name} returned {what} {value!r:.60}, not a number",
            hint="return a number in [0, 1] or a dict with 'primary'",
        )
    x = float(value)
    if not (0.0 <= x <= 1.0):
        raise MetricError(
            f"metric {name} returned {what} {x}, outside [0, 1]",
            hint="the primary figure is a fraction, higher better (e.g. an accuracy)",
        )
    return x


def user_figures(name: str, got: Any) -> MetricFigures:
    """What a user metric returned, as :class:`MetricFigures` (see :class:`UserMetric`)."""
    if isinstance(got, MetricFigures):
        _unit(name, "primary", got.primary)
        if got.primary_fp32 is not None:
            _unit(name, "primary_fp32", got.primary_fp32)
        return got
    if isinstance(got, Mapping):
        if "primary" not in got:
            raise MetricError(
                f"metric {name} returned a mapping without 'primary' ({sorted(map(str, got))})",
                hint="put the figure to gate on under 'primary', a fraction in [0, 1]",
            )
        primary = _unit(name, "primary", got["primary"])
        fp = got.get("primary_fp32")
        base = None if fp is None else _unit(name, "primary_fp32", fp)
        figs: dict[str, float] = {}
        for k, v in got.items():
            if k in ("primary", "primary_fp32"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise MetricError(f"metric {name} returned figure {k!r} = {v!r:.60}, not a number")
            figs[str(k)] = float(v)
        return MetricFigures(name, primary, base, figs)
    return MetricFigures(name, _unit(name, "primary", got), None, {})


# ----------------------------------------------------------------------------- entry points


def builtin_metric(
    name: str, *, charset: Sequence[str] | None = None, iou_threshold: float = IOU_THRESHOLD
) -> Metric:
    """The built-in metric ``name`` (:data:`BUILTIN`); ``charset``: ``ctc``'s characters,
    ``iou_threshold``: ``iou``'s binarization threshold."""
    if not (0.0 <= iou_threshold <= 1.0) or math.isnan(iou_threshold):
        raise UsageError(f"--iou-threshold {iou_threshold}: give a probability in [0, 1]")
    if name == "top1":
        return Top1()
    if name == "fidelity":
        return Fidelity()
    if name == "ctc":
        return Ctc(tuple(charset) if charset is not None else None)
    if name == "iou":
        return Iou(float(iou_threshold))
    raise UsageError(
        f"--metric {name!r}: not a metric",
        hint=f"one of {', '.join(BUILTIN)}, or your own as module:function "
        "(or path/to/file.py:function)",
    )


def score_metric(
    metric: Metric,
    fp32: Sequence[Outputs],
    int8: Sequence[Outputs],
    labels: Sequence[Any] | None,
    latency_ms: float = math.nan,
) -> tuple[Score, MetricFigures]:
    """``metric`` of ``int8`` against ``fp32`` as a :class:`Score` (``drop_points``: the
    metric's; ``accuracy``: its primary when it has a ground-truth form, else ``None``;
    ``agreement``: its primary otherwise, else its ``agreement``/``exact_agreement`` figure or
    NaN; ``cosine_mean``/``cosine_min``: of the first output, for ties) and its figures."""
    figs = metric(fp32, int8, labels)
    stats = PairStats()
    for i, (a, b) in enumerate(zip(fp32, int8, strict=True)):
        stats.add(*_pair(metric.name, a, b, i))
    if figs.primary_fp32 is None:
        agree, acc = figs.primary, None
    else:
        f = figs.figures
        agree = float(f.get("agreement", f.get("exact_agreement", math.nan)))
        acc = figs.primary
    return (
        Score(agree, acc, stats.cosine_mean, stats.cosine_min, figs.drop_points, latency_ms),
        figs,
    )
