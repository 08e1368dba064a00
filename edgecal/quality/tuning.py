"""``edgecal tune``'s loop: from a table to an int8 model within an accuracy budget.

Start from the table (calibrated or given) and score its int8 model on the device.  While the
drop is beyond ``max_drop``, take the layers most harmful first (sensitivity ranking) and, for
each, try every other calibration method's scales for that layer alone; keep a method when it
does at least as well as leaving the layer in fp32, else leave the layer in fp32 -- one layer at
a time, re-scoring on the device after each change -- until the drop is within the target or the
budget (layers in fp32, seconds) is spent.  If one pass is not enough, a second pass puts in fp32
the layers whose best method still loses something, most harmful first, sweeping the ranking
again until a sweep changes nothing.

The loop only sees a :class:`VariantScorer` (``edgecal.workflows.scoring.Scorer`` on a device)
and an ``alternative`` callback, so its decisions are testable without a device (pure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgecal.calib.methods import Method
from edgecal.calib.table import CalibrationTable, weight_key
from edgecal.quality.jsondoc import Record
from edgecal.quality.metrics import Score
from edgecal.quality.rundoc import RESULT_SCHEMA, result_doc
from edgecal.quality.sensitivity import LayerSensitivity, Sensitivity

#: ``alternative(layer, method)`` -> the table records (blob scale and weight scales) that
#: ``method`` gives ``layer``, or None when that method has nothing for it.
Alternative = Callable[[str, str], dict[str, np.ndarray] | None]


class VariantScorer(Protocol):
    def score(
        self,
        table: CalibrationTable | None,
        keep_fp32: Sequence[str] = (),
        what: str = "int8 variant",
    ) -> Score: ...


@dataclass(frozen=True)
class TuneConfig:
    max_drop: float  # points
    methods: tuple[Method, ...] = tuple(Method)
    max_fp32_layers: int | None = None
    time_budget_s: float | None = None


@dataclass(frozen=True)
class TuneStep(Record):
    action: str  # "method" | "fp32"
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
        )


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


def tune(
    scorer: VariantScorer,
    table: CalibrationTable,
    method: str,
    quantized: Sequence[str],
    sensitivity: Callable[[CalibrationTable, Score], Sensitivity],
    alternative: Alternative,
    config: TuneConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], object] = lambda text: None,
) -> TuneResult:
    """See the module doc.  ``quantized``: the layers the int8 model of ``table`` quantizes;
    ``sensitivity(table, score)`` ranks them (most harmful first)."""
    start = clock()
    fp32: list[str] = []
    methods = {name: method for name in quantized}
    cur = scorer.score(table, fp32, what="int8 model")
    initial = cur
    steps: list[TuneStep] = []
    cost: dict[str, float] = {}
    say(f"int8 model: drop {points(cur.drop_points)} points, cosine {cur.cosine_mean:.6f}")

    def result(target_met: bool, reason: str) -> TuneResult:
        return TuneResult(
            table.without(fp32), list(fp32), methods, initial, cur, target_met, reason, steps, cost
        )

    if cur.drop_points <= config.max_drop:
        return result(
            True,
            f"the int8 model loses {points(cur.drop_points)} points, within "
            f"{config.max_drop:g}: nothing to change",
        )
    ranking: list[LayerSensitivity] = sensitivity(table, cur).layers

    def out_of_budget() -> str | None:
        if config.time_budget_s is not None and clock() - start >= config.time_budget_s:
            return f"the time budget of {config.time_budget_s:g} s is spent"
        return None

    def to_fp32(layer: str, score: Score) -> Score:
        cost[layer] = score.latency_ms - cur.latency_ms
        fp32.append(layer)
        methods[layer] = "fp32"
        steps.append(TuneStep("fp32", layer, None, score, True))
        say(f"{layer}: kept in fp32 (drop now {points(score.drop_points)} points)")
        return score

    for entry in ranking:
        layer = entry.layer
        why = out_of_budget()
        if why is not None:
            return result(False, why)
        best: tuple[str, CalibrationTable, Score, int] | None = None
        for m in config.methods:
            if m == methods[layer]:
                continue
            records = alternative(layer, m)
            if records is None or all(
                k in table.records and np.array_equal(records[k], table.records[k]) for k in records
            ):
                continue
            trial = with_records(table, layer, records)
            s = scorer.score(trial, fp32, what=f"{layer} with {m}")
            steps.append(TuneStep("method", layer, m, s, False))
            say(
                f"{layer} with {m}: drop {points(s.drop_points)} points, cosine {s.cosine_mean:.6f}"
            )
            if best is None or s.better_than(best[2]):
                best = (m, trial, s, len(steps) - 1)
            if out_of_budget() is not None:
                break
        can_fp32 = config.max_fp32_layers is None or len(fp32) < config.max_fp32_layers
        as_fp32 = scorer.score(table, [*fp32, layer], what=f"{layer} in fp32") if can_fp32 else None
        method_ok = (
            best is not None
            and best[2].better_than(cur)
            and (
                best[2].drop_points <= config.max_drop
                or as_fp32 is None
                or not as_fp32.better_than(best[2])
            )
        )
        if method_ok and best is not None:
            chosen, table, cur, index = best
            methods[layer] = chosen
            steps[index] = TuneStep("method", layer, chosen, cur, True)
            say(f"{layer}: {m} kept")
        elif as_fp32 is not None and as_fp32.better_than(cur):
            cur = to_fp32(layer, as_fp32)
        elif as_fp32 is not None:
            steps.append(TuneStep("fp32", layer, None, as_fp32, False))
        if cur.drop_points <= config.max_drop:
            return result(
                True, f"drop {points(cur.drop_points)} points, within {config.max_drop:g}"
            )
    # second pass: a layer whose best method still loses points goes to fp32 after all.
    # Repeated until a sweep changes nothing: a layer's loss can be hidden by the others' (a
    # tiny loss vanishes in the rounding of a larger sum, e.g. 1e-300 + 5e-324 == 1e-300) and
    # show only once a layer after it in the ranking went to fp32.
    changed = True
    while changed:
        changed = False
        for entry in ranking:
            layer = entry.layer
            if layer in fp32 or (
                config.max_fp32_layers is not None and len(fp32) >= config.max_fp32_layers
            ):
                continue
            why = out_of_budget()
            if why is not None:
                return result(False, why)
            as_fp32 = scorer.score(table, [*fp32, layer], what=f"{layer} in fp32")
            if as_fp32.better_than(cur):
                cur = to_fp32(layer, as_fp32)
                changed = True
                if cur.drop_points <= config.max_drop:
                    return result(
                        True, f"drop {points(cur.drop_points)} points, within {config.max_drop:g}"
                    )
    still = f"the drop is still {points(cur.drop_points)} points"
    if config.max_fp32_layers is not None and len(fp32) >= config.max_fp32_layers:
        return result(
            False, f"the budget of {config.max_fp32_layers} layer(s) in fp32 is spent and {still}"
        )
    return result(False, f"every quantized layer was tried; {still}")
