"""``edgecal tune``'s loop: from whole-model tables to the most int8 model within an accuracy
budget.

The objective, explicit: **meet ``max_drop`` with the most int8 layers, then the lowest
latency.**  A layer goes back to fp32 only when no candidate scale keeps the target.

1. *Start*: the requested method's table (offered first) when its all-int8 model meets the
   target -- no other whole-model table can do better on the objective, and a closer output on
   the tuning images is no reason to trade the method asked for (it measured worse on held-out
   images in the sample model's demo).  Else score every whole-model table offered (one per
   method: KL, ACIQ, EQ when asked, and any other rule that gives a table) and start from the
   best (fewest points lost, then the closest output); ties keep the first offered.
2. *Per layer, int8 first*: most harmful layer first (sensitivity ranking), try every
   candidate's scales for that layer alone (``alternative(layer, name)``: any method or
   threshold rule) and keep the best when it beats the current model -- whatever leaving the
   layer in fp32 would give.  Stop as soon as the target is met.
3. *Fallback*: re-rank, then put layers in fp32, most harmful first; when several single
   layers would each meet the target, the one whose fp32 costs the least latency (as the
   ranking measured it).  A sweep repeats until it changes nothing.
4. *Give back*: once the target is met, every fp32 layer is tried in int8 again (its best
   scales), least harmful first, and stays int8 if the target still holds.

With ``rank_scorer`` (e.g. a subset of the images), candidates are compared on it and only the
winner is scored by ``scorer`` (every image); every figure the loop decides on or reports --
the start, each accepted change, the final -- is ``scorer``'s.  A layer's candidates are scored
together (``score_many``: a scorer may compute only what each changes, and time fewer images);
an accepted one is scored again by ``score``, so every accepted figure is a whole run's.

The drop is whatever the scorers measure: top-1 (accuracy with labels, else agreement with
fp32), or a task metric's points (``edgecal tune --metric``: CTC text, IoU, fidelity, the
user's), the loop is the same.  The ranking images (:func:`ranking_subset` for top-1,
:func:`metric_ranking_subset` for the other metrics) are chosen from what the variants scored on
every image did to each image.

The loop only sees :class:`VariantScorer` s and an ``alternative`` callback, so its decisions
are testable without a device (pure).  It reads a :class:`Score` only through
``drop_points``, ``better_than`` and ``latency_ms`` (and ``cosine_mean`` for messages).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgecal.calib.methods import Method
from edgecal.calib.table import CalibrationTable, weight_key
from edgecal.quality.jsondoc import Obj, Record
from edgecal.quality.metrics import Score
from edgecal.quality.rundoc import RESULT_SCHEMA, result_doc
from edgecal.quality.sensitivity import LayerSensitivity, Sensitivity
from edgecal.quality.taskmetrics import Metric, MetricError, MetricFigures, Outputs

#: ``alternative(layer, method)`` -> the table records (blob scale and weight scales) that
#: ``method`` gives ``layer``, or None when that method has nothing for it.
Alternative = Callable[[str, str], dict[str, np.ndarray] | None]


@dataclass(frozen=True)
class Variant:
    """An int8 variant of the tuned model: ``table`` with ``keep_fp32`` in float (``what``: its
    name in progress lines)."""

    table: CalibrationTable | None
    keep_fp32: tuple[str, ...] = ()
    what: str = "int8 variant"


class VariantScorer(Protocol):
    def score(
        self,
        table: CalibrationTable | None,
        keep_fp32: Sequence[str] = (),
        what: str = "int8 variant",
    ) -> Score: ...

    def score_many(
        self,
        variants: Sequence[Variant],
        base: Variant,
        stop: Callable[[], bool] | None = None,
    ) -> list[Score]:
        """The ``score`` of each of ``variants``, each a small change of ``base`` (a scorer
        may compute only what changed), in order; when ``stop()`` says so, only those scored
        until then."""
        ...


def score_each(
    score: Callable[[CalibrationTable | None, Sequence[str], str], Score],
    variants: Sequence[Variant],
    stop: Callable[[], bool] | None = None,
) -> list[Score]:
    """``score(table, keep_fp32, what)`` of each variant in turn, until ``stop()`` says so: a
    :meth:`VariantScorer.score_many` that scores every variant whole."""
    out: list[Score] = []
    for v in variants:
        if stop is not None and stop():
            break
        out.append(score(v.table, v.keep_fp32, v.what))
    return out


#: The objective, as tune.json and the report state it.
OBJECTIVE = "meet max_drop with the most int8 layers, then the lowest latency"


@dataclass(frozen=True)
class TuneConfig:
    max_drop: float  # points
    methods: tuple[str, ...] = tuple(Method)  # candidates tried per layer (methods, rules)
    max_fp32_layers: int | None = None
    time_budget_s: float | None = None


@dataclass(frozen=True)
class TuneStep(Record):
    action: str  # "table" (a whole-model start) | "method" | "fp32" | "int8" (given back)
    layer: str
    method: str | None
    score: Score
    kept: bool


@dataclass
class TuneResult:
    table: CalibrationTable  # the final table, fp32 layers' lines removed
    fp32_layers: list[str]
    layer_methods: dict[str, str]
    initial: Score
    final: Score
    target_met: bool
    reason: str
    steps: list[TuneStep] = field(default_factory=list)
    latency_cost_ms: dict[str, float] = field(default_factory=dict)
    quantized: list[str] = field(default_factory=list)  # the quantizable layers
    start_method: str = ""  # the whole-model table started from

    @property
    def int8_layers(self) -> int:
        return len([x for x in self.quantized if x not in self.fp32_layers])


@dataclass(frozen=True)
class TuneDoc:
    """``tune.json``: tune's start (``method``, ``max_drop``, ``metric``), its outcome, its steps,
    the layers kept in fp32 with their latency cost, each layer's method; and, as ``edgecal
    tune`` writes them (optional when read), the variants scored, the run's seconds, the fp32
    model's latency and the methods tried."""

    method: str
    max_drop: float
    metric: str
    target_met: bool
    reason: str
    initial: Score
    final: Score
    steps: tuple[TuneStep, ...]
    fp32_layers: tuple[tuple[str, float], ...]  # (layer, latency cost ms)
    layer_methods: dict[str, str]
    evaluations: int | None = None  # variants scored
    seconds: float | None = None
    fp32_latency_ms: float | None = None  # the all-fp32 model's latency
    try_methods: tuple[str, ...] | None = None
    objective: str | None = None
    start_method: str | None = None  # the best whole-model table, started from
    int8_layers: int | None = None
    quantizable_layers: int | None = None
    #: ``{"int8": {...}, "fp32": {...}}`` each ``median_ms``, ``p10_ms``, ``p90_ms``, ``runs``:
    #: per-image latency on the device, measured one way for both models
    latency: dict[str, Any] | None = None
    warnings: tuple[str, ...] | None = None
    #: bytes written: ``run_dir`` and ``device_work`` (the scoring's files on the device)
    disk_bytes: dict[str, int] | None = None
    #: how candidates were ranked before being confirmed on every image
    ranking: dict[str, Any] | None = None
    #: with a task metric (``--metric``; ``metric`` is then its name): its figures for the
    #: ``initial`` and ``final`` scores
    metric_figures: dict[str, MetricFigures] | None = None
    #: with several devices: what each did of the scoring (``board``, ``shards``,
    #: ``samples``, ``retried``, ``reassigned``, ``collected``, ``seconds``, ``lost``)
    devices: tuple[dict[str, Any], ...] | None = None
    #: the variants scored computing only what they change (``variants``), the layers they ran
    #: (``layers_run``) and those their whole forwards would have run (``layers_whole``)
    incremental: dict[str, int] | None = None

    @classmethod
    def of(
        cls, result: TuneResult, method: str, max_drop: float, metric: str, **extra: Any
    ) -> TuneDoc:
        """The document of ``result``, a run started with ``method`` to reach ``max_drop``
        points of ``metric``; ``extra``: the optional fields."""
        return cls(
            method=method,
            max_drop=max_drop,
            metric=metric,
            target_met=result.target_met,
            reason=result.reason,
            initial=result.initial,
            final=result.final,
            steps=tuple(result.steps),
            fp32_layers=tuple((x, result.latency_cost_ms[x]) for x in result.fp32_layers),
            layer_methods=dict(result.layer_methods),
            objective=OBJECTIVE,
            start_method=result.start_method or None,
            int8_layers=result.int8_layers if result.quantized else None,
            quantizable_layers=len(result.quantized) if result.quantized else None,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": RESULT_SCHEMA,
            "method": self.method,
            "max_drop": self.max_drop,
            "metric": self.metric,
            "target_met": self.target_met,
            "reason": self.reason,
            "initial": self.initial.to_dict(),
            "final": self.final.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "fp32_layers": [{"layer": x, "latency_cost_ms": c} for x, c in self.fp32_layers],
            "layer_methods": dict(self.layer_methods),
        }
        optional = {
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "fp32_latency_ms": self.fp32_latency_ms,
            "try_methods": None if self.try_methods is None else list(self.try_methods),
            "objective": self.objective,
            "start_method": self.start_method,
            "int8_layers": self.int8_layers,
            "quantizable_layers": self.quantizable_layers,
            "latency": self.latency,
            "warnings": None if self.warnings is None else list(self.warnings),
            "disk_bytes": self.disk_bytes,
            "ranking": self.ranking,
            "metric_figures": None
            if self.metric_figures is None
            else {k: v.to_dict() for k, v in self.metric_figures.items()},
            "devices": None if self.devices is None else [dict(d) for d in self.devices],
            "incremental": self.incremental,
        }
        return {**d, **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def from_dict(cls, doc: Any) -> TuneDoc:
        """What :meth:`to_dict` wrote; :class:`Malformed` names the JSON path of a bad value."""
        top = result_doc(doc)
        methods = top.obj("layer_methods")
        return cls(
            method=top.text("method"),
            max_drop=top.num("max_drop"),
            metric=top.text("metric"),
            target_met=top.flag("target_met"),
            reason=top.text("reason"),
            initial=Score.from_dict(top.raw("initial"), top.at("initial")),
            final=Score.from_dict(top.raw("final"), top.at("final")),
            steps=tuple(TuneStep.from_dict(o.d, o.where) for o in top.objs("steps")),
            fp32_layers=tuple(
                (o.text("layer"), o.num("latency_cost_ms")) for o in top.objs("fp32_layers")
            ),
            layer_methods={k: methods.text(k) for k in methods.d},
            evaluations=top.integer("evaluations")
            if top.d.get("evaluations") is not None
            else None,
            seconds=top.opt_num("seconds"),
            fp32_latency_ms=top.opt_num("fp32_latency_ms"),
            try_methods=top.texts("try_methods") if top.d.get("try_methods") is not None else None,
            objective=top.opt_text("objective"),
            start_method=top.opt_text("start_method"),
            int8_layers=top.integer("int8_layers")
            if top.d.get("int8_layers") is not None
            else None,
            quantizable_layers=top.integer("quantizable_layers")
            if top.d.get("quantizable_layers") is not None
            else None,
            latency=top.obj("latency").d if top.d.get("latency") is not None else None,
            warnings=top.texts("warnings") if top.d.get("warnings") is not None else None,
            disk_bytes={k: int(v) for k, v in top.obj("disk_bytes").d.items()}
            if top.d.get("disk_bytes") is not None
            else None,
            ranking=top.obj("ranking").d if top.d.get("ranking") is not None else None,
            metric_figures=_figures(top.opt_obj("metric_figures")),
            devices=tuple(o.d for o in top.objs("devices"))
            if top.d.get("devices") is not None
            else None,
            incremental={k: top.obj("incremental").integer(k) for k in top.obj("incremental").d}
            if top.d.get("incremental") is not None
            else None,
        )


def _figures(o: Obj | None) -> dict[str, MetricFigures] | None:
    return None if o is None else {k: MetricFigures.from_dict(v, o.at(k)) for k, v in o.d.items()}


def with_records(
    table: CalibrationTable, layer: str, records: dict[str, np.ndarray]
) -> CalibrationTable:
    """A copy of ``table`` where ``layer``'s blob and weight lines are ``records``'."""
    out = CalibrationTable(records={k: v.copy() for k, v in table.records.items()})
    for key in (layer, weight_key(layer)):
        if key in records:
            out.records[key] = np.asarray(records[key], dtype=np.float32).copy()
    return out


def points(drop: float) -> str:
    """A drop in points for a message: two decimals, but a tiny non-zero drop as itself (not
    ``0.00``, which would read as within a target of 0)."""
    return f"{drop:.2f}" if drop == 0 or abs(drop) >= 0.005 else f"{drop:.2g}"


def _same(table: CalibrationTable, records: dict[str, np.ndarray]) -> bool:
    return all(k in table.records and np.array_equal(records[k], table.records[k]) for k in records)


def tune(
    scorer: VariantScorer,
    starts: Mapping[str, CalibrationTable],
    quantized: Sequence[str],
    sensitivity: Callable[[CalibrationTable, Score], Sensitivity],
    alternative: Alternative,
    config: TuneConfig,
    *,
    rank_scorer: VariantScorer | None = None,
    spent_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], object] = lambda text: None,
) -> TuneResult:
    """See the module doc.  ``starts``: the whole-model tables by name, the requested one first
    (its score is the result's ``initial``); ``quantized``: the layers their int8 models
    quantize; ``sensitivity(table, score)`` ranks them (most harmful first); ``rank_scorer``:
    compares candidates before ``scorer`` confirms the winner; ``spent_s``: seconds of the
    time budget spent before the loop (calibration, the fp32 run)."""
    if not starts:
        raise ValueError("tune needs at least one whole-model table to start from")
    t0 = clock()
    rank_by = rank_scorer or scorer
    steps: list[TuneStep] = []
    cost: dict[str, float] = {}
    fp32: list[str] = []

    # 1. the best whole-model table
    table: CalibrationTable | None = None
    start_name = ""
    cur: Score | None = None
    initial: Score | None = None
    for name, candidate in starts.items():
        label = f"{name} table" if len(starts) > 1 else "int8 model"
        s = scorer.score(candidate, (), what=label)
        say(f"{label}: drop {points(s.drop_points)} points, cosine {s.cosine_mean:.6f}")
        initial = initial or s
        if len(starts) > 1:
            steps.append(TuneStep("table", "", name, s, False))
        if cur is None or s.better_than(cur):
            table, start_name, cur = candidate, name, s
        if s is initial and s.drop_points <= config.max_drop:
            break  # the requested table meets the target all int8: no other start does better
    assert table is not None and cur is not None and initial is not None
    if len(starts) > 1:
        steps = [dataclasses.replace(x, kept=True) if x.method == start_name else x for x in steps]
    methods = {name: start_name for name in quantized}

    def result(target_met: bool, reason: str) -> TuneResult:
        assert table is not None and cur is not None and initial is not None
        return TuneResult(
            table.without(fp32),
            list(fp32),
            methods,
            initial,
            cur,
            target_met,
            reason,
            steps,
            cost,
            list(quantized),
            start_name,
        )

    def met() -> bool:
        assert cur is not None
        return cur.drop_points <= config.max_drop

    def within() -> TuneResult:
        assert cur is not None
        return result(True, f"drop {points(cur.drop_points)} points, within {config.max_drop:g}")

    def out_of_budget() -> str | None:
        if config.time_budget_s is not None and clock() - t0 + spent_s >= config.time_budget_s:
            return f"the time budget of {config.time_budget_s:g} s is spent"
        return None

    def fp32_full() -> bool:
        return config.max_fp32_layers is not None and len(fp32) >= config.max_fp32_layers

    if met():
        within_by = f"loses {points(cur.drop_points)} points, within {config.max_drop:g}"
        requested = next(iter(starts))
        if start_name == requested:
            return result(True, f"the int8 model {within_by}: nothing to change")
        return result(
            True,
            f"the {start_name} table {within_by} (the {requested} table lost "
            f"{points(initial.drop_points)}): nothing else to change",
        )
    why = out_of_budget()
    if why is not None:
        return result(False, why)
    ranking: list[LayerSensitivity] = sensitivity(table, cur).layers

    # 2. int8 first: per layer, the best candidate scales
    changed = False
    for entry in ranking:
        layer = entry.layer
        why = out_of_budget()
        if why is not None:
            return result(False, why)
        tries: list[tuple[str, CalibrationTable]] = []
        seen: list[dict[str, np.ndarray]] = []
        for m in config.methods:
            if m == methods[layer]:
                continue
            records = alternative(layer, m)
            if records is None or _same(table, records):
                continue
            if any(records.keys() == r.keys() and _same_records(records, r) for r in seen):
                continue  # another name for the same scales
            seen.append(records)
            tries.append((m, with_records(table, layer, records)))
        if not tries:
            continue
        # every candidate of the layer at once: each changes only this layer of the model
        scored = rank_by.score_many(
            [Variant(t, tuple(fp32), f"{layer} with {m}") for m, t in tries],
            Variant(table, tuple(fp32), "the current model"),
            stop=lambda: out_of_budget() is not None,
        )
        if not scored:
            continue  # the time budget: said at the next layer
        trials: list[tuple[str, CalibrationTable, Score]] = []
        for (m, trial), s in zip(tries, scored, strict=False):  # all, or those before the budget
            say(
                f"{layer} with {m}: drop {points(s.drop_points)} points, cosine {s.cosine_mean:.6f}"
                + (" (ranking images)" if rank_scorer is not None else "")
            )
            if rank_scorer is None:
                steps.append(TuneStep("method", layer, m, s, False))
            trials.append((m, trial, s))
        m, trial, s = trials[0]
        for t in trials[1:]:
            if t[2].better_than(s):
                m, trial, s = t
        if rank_scorer is not None:
            s = scorer.score(trial, fp32, what=f"{layer} with {m}, every image")
            steps.append(TuneStep("method", layer, m, s, False))
        if s.better_than(cur):
            if rank_scorer is None:  # a whole run: the figures kept, latency too, measured
                s = scorer.score(trial, fp32, what=f"{layer} with {m}")  # as every other's
            table, cur, methods[layer] = trial, s, m
            index = max(i for i, x in enumerate(steps) if x.layer == layer and x.method == m)
            steps[index] = TuneStep("method", layer, m, s, True)
            changed = True
            say(f"{layer}: {m} kept")
            if met():
                return within()

    # 3. fallback: fp32, most harmful first; of the layers that would each meet the target
    # alone, the cheapest in latency
    why = out_of_budget()
    if why is not None:
        return result(False, why)
    if changed:
        ranking = sensitivity(table, cur).layers

    def to_fp32(layer: str, score: Score) -> None:
        nonlocal cur
        assert cur is not None
        cost[layer] = score.latency_ms - cur.latency_ms
        fp32.append(layer)
        methods[layer] = "fp32"
        steps.append(TuneStep("fp32", layer, None, score, True))
        say(f"{layer}: kept in fp32 (drop now {points(score.drop_points)} points)")
        cur = score

    pending = list(ranking)
    while pending and not fp32_full():
        why = out_of_budget()
        if why is not None:
            return result(False, why)
        need = cur.drop_points - config.max_drop
        enough = [e for e in pending if e.gain_points >= need] if rank_scorer is None else []
        entry = (
            min(enough, key=lambda e: (e.keep_fp32.latency_ms, -e.gain_points, e.layer))
            if enough
            else pending[0]
        )
        pending.remove(entry)
        s = scorer.score(table, [*fp32, entry.layer], what=f"{entry.layer} in fp32")
        if s.better_than(cur):
            to_fp32(entry.layer, s)
            if met():
                break
        else:
            steps.append(TuneStep("fp32", entry.layer, None, s, False))
    # a layer's loss can be hidden by the others' (a tiny loss vanishes in the rounding of a
    # larger sum, e.g. 1e-300 + 5e-324 == 1e-300) and show only once another went to fp32:
    # sweep again until a sweep changes nothing, or the target is met
    sweep = True
    while sweep and not met():
        sweep = False
        for entry in ranking:
            if entry.layer in fp32 or fp32_full():
                continue
            why = out_of_budget()
            if why is not None:
                return result(False, why)
            s = scorer.score(table, [*fp32, entry.layer], what=f"{entry.layer} in fp32")
            if s.better_than(cur):
                to_fp32(entry.layer, s)
                sweep = True
                if met():
                    break

    # 4. give back: an fp32 layer that the target no longer needs goes back to int8
    if met():
        for layer in reversed(list(fp32)):
            if out_of_budget() is not None:
                break
            rest = [x for x in fp32 if x != layer]
            s = scorer.score(table, rest, what=f"{layer} back in int8")
            if s.drop_points <= config.max_drop:
                fp32.remove(layer)
                cost.pop(layer, None)
                methods[layer] = next(
                    (x.method for x in reversed(steps) if x.layer == layer and x.kept and x.method),
                    start_name,
                )
                steps.append(TuneStep("int8", layer, methods[layer], s, True))
                say(f"{layer}: back in int8 (drop {points(s.drop_points)} points)")
                cur = s
        return within()
    still = f"the drop is still {points(cur.drop_points)} points"
    if fp32_full():
        return result(
            False, f"the budget of {config.max_fp32_layers} layer(s) in fp32 is spent and {still}"
        )
    return result(False, f"every quantized layer was tried; {still}")


def _same_records(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


#: Ranking images: at least this many, and the whole set below twice this many.
RANKING_MIN = 64
RANKING_SEED = 12


def ranking_subset(
    classes: np.ndarray, disagree: np.ndarray, *, size: int, seed: int = RANKING_SEED
) -> list[int]:
    """The images candidates are ranked on (sorted indices): every image where an int8 model
    scored so far and fp32 disagree on top-1 (``disagree``, up to ``size``), then a sample
    stratified by fp32's class (``classes``; ``seed``: the same images every run), round robin
    over the classes, up to ``size`` in all."""
    n = len(classes)
    if size >= n:
        return list(range(n))
    chosen = {int(i) for i in np.flatnonzero(np.asarray(disagree))[:size]}
    rng = np.random.default_rng(seed)
    rest = [i for i in range(n) if i not in chosen]
    by_class: dict[int, list[int]] = {}
    for j in rng.permutation(len(rest)):
        i = rest[int(j)]
        by_class.setdefault(int(classes[i]), []).append(i)
    want = size - len(chosen)
    queues = [by_class[c] for c in sorted(by_class)]
    while want > 0 and any(queues):
        for q in queues:
            if q and want > 0:
                chosen.add(q.pop(0))
                want -= 1
    return sorted(chosen)


def metric_ranking_subset(
    harm: np.ndarray, *, size: int, seed: int = RANKING_SEED, share: float = 0.5
) -> list[int]:
    """The ranking images for a metric that is not top-1 (sorted indices): the images where an
    int8 model scored so far lost the most of the metric (``harm``: per image, the most points
    a variant lost on it alone; only those above 0, worst first, ties by index), up to
    ``share`` of ``size``, then a seeded random sample (``seed``: the same images every run)
    of the others, up to ``size`` in all.  The random half keeps images no variant harmed yet:
    a candidate may break those."""
    h = np.asarray(harm, dtype=np.float64)
    n = len(h)
    if size >= n:
        return list(range(n))
    hurt = [int(i) for i in np.argsort(-h, kind="stable") if h[i] > 0]
    chosen = set(hurt[: int(size * share)])
    rest = [i for i in range(n) if i not in chosen]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(rest))[: size - len(chosen)]
    chosen.update(rest[int(j)] for j in pick)
    return sorted(chosen)


def per_sample_harm(
    metric: Metric,
    fp32: Sequence[Outputs],
    int8: Sequence[Outputs],
    labels: Sequence[Any] | None,
) -> np.ndarray:
    """Points ``metric`` loses on each sample alone (``metric`` called on one sample pair at a
    time, with its label).  A metric that cannot score a single sample (a user metric that
    fails on one) gives way to the samples' output fidelity: ``100 * (1 - cosine)``, the least
    cosine over the outputs."""
    try:
        return np.array(
            [
                metric([a], [b], None if labels is None else [labels[i]]).drop_points
                for i, (a, b) in enumerate(zip(fp32, int8, strict=True))
            ],
            dtype=np.float64,
        )
    except MetricError:
        return np.array(
            [100.0 * (1.0 - _least_cosine(a, b)) for a, b in zip(fp32, int8, strict=True)],
            dtype=np.float64,
        )


def _least_cosine(a: Outputs, b: Outputs) -> float:
    out = 1.0
    for blob, x in a.items():
        u = np.asarray(x, dtype=np.float64).ravel()
        v = np.asarray(b[blob], dtype=np.float64).ravel()
        if u.shape != v.shape:
            return 0.0
        nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
        c = 1.0 if nu == 0 and nv == 0 else float(u @ v) / (nu * nv) if nu and nv else 0.0
        out = min(out, c)
    return out
