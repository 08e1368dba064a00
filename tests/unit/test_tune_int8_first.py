"""The int8-first objective of ``edgecal.quality.tuning.tune`` against today's plain fallback
(fp32 for the most harmful layers until the target is met), on a fake device whose scores come
from an additive per-layer damage model: each layer loses ``harm[layer][candidate]`` points with
that candidate's scales and nothing in fp32."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal.calib.table import CalibrationTable, weight_key
from edgecal.quality.latency import latency_doc, latency_of, slower_warning
from edgecal.quality.metrics import Score
from edgecal.quality.sensitivity import LayerSensitivity, Sensitivity, rank
from edgecal.quality.tuning import (
    TuneConfig,
    TuneDoc,
    Variant,
    ranking_subset,
    score_each,
    tune,
)

LAYERS = ["conv0", "conv1", "conv2", "conv3", "fc"]
CANDIDATES = ["kl", "aciq", "mse", "p99.99"]
TAG = {m: float(i + 1) for i, m in enumerate(CANDIDATES)}


def table_of(methods: dict[str, str], default: str = "kl") -> CalibrationTable:
    t = CalibrationTable()
    for layer in LAYERS:
        t.set(weight_key(layer), [10.0, 20.0])
        t.set(layer, TAG[methods.get(layer, default)])
    return t


class Additive:
    """The fake device: ``harm[layer][candidate]`` points lost per int8 layer, summed;
    ``fp32_ms[layer]``: the latency a layer adds in fp32."""

    def __init__(self, harm: dict[str, dict[str, float]], fp32_ms: dict[str, float]) -> None:
        self.harm, self.fp32_ms = harm, fp32_ms
        self.calls = 0

    def method_of(self, table: CalibrationTable, layer: str) -> str:
        v = float(table.records[layer][0])
        return next(m for m, tag in TAG.items() if tag == v)

    def score(
        self, table: CalibrationTable | None, keep_fp32: Sequence[str] = (), what: str = ""
    ) -> Score:
        assert table is not None
        self.calls += 1
        drop = sum(self.harm[x][self.method_of(table, x)] for x in LAYERS if x not in keep_fp32)
        latency = 1.0 + sum(self.fp32_ms[x] for x in keep_fp32)
        return Score(1 - drop / 100, None, 1 - drop / 1000, 1 - drop / 500, drop, latency)

    def score_many(
        self, variants: Sequence[Variant], base: Variant, stop: Callable[[], bool] | None = None
    ) -> list[Score]:
        """As a device scorer: each variant's :meth:`score` (an incremental scorer's answers
        are its whole forwards'), until ``stop()``."""
        return score_each(self.score, variants, stop)

    def sensitivity(self, table: CalibrationTable, base: Score) -> Sensitivity:
        entries = []
        for x in LAYERS:
            s = self.score(table, [x])
            gain = base.drop_points - s.drop_points
            entries.append(
                LayerSensitivity(x, "Conv", s, None, gain, s.cosine_mean - base.cosine_mean)
            )
        return Sensitivity("fake", "agreement", 10, base, rank(entries))

    def alternative(self, layer: str, method: str) -> dict[str, np.ndarray] | None:
        return {layer: np.array([TAG[method]], np.float32)}


def plain_fallback(world: Additive, max_drop: float) -> list[str]:
    """Today's behaviour with no other scales: from the KL table, fp32 for the most harmful
    layer (sensitivity ranking) while the drop is beyond the target; the fp32 layers."""
    table = table_of({})
    cur = world.score(table)
    fp32: list[str] = []
    for entry in world.sensitivity(table, cur).layers:
        if cur.drop_points <= max_drop:
            break
        s = world.score(table, [*fp32, entry.layer])
        if s.better_than(cur):
            fp32.append(entry.layer)
            cur = s
    return fp32


# harms in quarter points: exact in binary, so a sum does not depend on its order
harm_st = st.fixed_dictionaries(
    {
        x: st.fixed_dictionaries({m: st.integers(0, 80).map(lambda q: q / 4) for m in CANDIDATES})
        for x in LAYERS
    }
)
ms_st = st.fixed_dictionaries({x: st.integers(0, 20).map(lambda q: q / 100) for x in LAYERS})


@settings(max_examples=200, deadline=None)
@given(harm_st, ms_st, st.integers(0, 60).map(lambda q: q / 4), st.booleans())
def test_never_fewer_int8_layers_than_the_plain_fallback(
    harm: dict[str, dict[str, float]], fp32_ms: dict[str, float], max_drop: float, both: bool
) -> None:
    """For any additive damage and any target: the int8-first loop meets the target and keeps
    at least as many layers int8 as the plain fallback does."""
    world = Additive(harm, fp32_ms)
    plain = plain_fallback(world, max_drop)
    starts = {"kl": table_of({})}
    if both:
        starts["aciq"] = table_of({}, "aciq")
    r = tune(
        world,
        starts,
        LAYERS,
        world.sensitivity,
        world.alternative,
        TuneConfig(max_drop=max_drop, methods=tuple(CANDIDATES)),
    )
    assert r.target_met and r.final.drop_points <= max_drop
    assert r.int8_layers >= len(LAYERS) - len(plain), (r.fp32_layers, plain)
    # and the figures it reports are the final model's
    assert r.final == world.score(r.table, r.fp32_layers)


def world_of(**overrides: dict[str, float]) -> Additive:
    harm = {x: {m: 0.0 for m in CANDIDATES} for x in LAYERS}
    harm.update(overrides)
    return Additive(harm, {x: 0.1 for x in LAYERS})


def run(world: Additive, max_drop: float, starts: dict[str, CalibrationTable] | None = None):  # type: ignore[no-untyped-def]
    return tune(
        world,
        starts or {"kl": table_of({})},
        LAYERS,
        world.sensitivity,
        world.alternative,
        TuneConfig(max_drop=max_drop, methods=tuple(CANDIDATES)),
    )


def test_starts_from_the_best_whole_model_table() -> None:
    """KL loses 40 points on conv0, ACIQ's whole table nothing: tune starts from ACIQ and
    changes nothing else; ``initial`` is still the requested (KL) table's."""
    w = world_of(conv0={"kl": 40.0, "aciq": 0.0, "mse": 1.0, "p99.99": 1.0})
    r = run(w, 0.5, {"kl": table_of({}), "aciq": table_of({}, "aciq")})
    assert r.target_met and r.start_method == "aciq" and r.int8_layers == len(LAYERS)
    assert r.initial.drop_points == 40.0 and r.final.drop_points == 0.0
    assert [(s.action, s.method, s.kept) for s in r.steps] == [
        ("table", "kl", False),
        ("table", "aciq", True),
    ]
    # the reason says which table met the target, not that nothing changed
    assert r.reason == (
        "the aciq table loses 0.00 points, within 0.5 (the kl table lost 40.00): nothing else "
        "to change"
    )


def test_a_candidate_that_meets_the_target_beats_fp32() -> None:
    """conv2 loses 5 points with KL; fp32 would win all 5 back, MSE wins 4.9: the old loop
    would prefer fp32 when no method meets... here MSE meets the target, so conv2 stays int8."""
    w = world_of(conv2={"kl": 5.0, "aciq": 3.0, "mse": 0.1, "p99.99": 2.0})
    r = run(w, 0.2)
    assert r.target_met and r.fp32_layers == [] and r.layer_methods["conv2"] == "mse"


def test_fp32_only_when_no_candidate_keeps_the_target() -> None:
    w = world_of(fc={"kl": 5.0, "aciq": 4.0, "mse": 3.0, "p99.99": 3.5})
    r = run(w, 1.0)
    assert r.target_met and r.fp32_layers == ["fc"]
    tried = sorted(s.method for s in r.steps if s.layer == "fc" and s.action == "method")
    assert tried == ["aciq", "mse", "p99.99"]  # every candidate before giving it up


def test_of_the_layers_that_each_meet_the_target_the_cheapest_goes_to_fp32() -> None:
    """conv1 and conv3 both lose 2 points whatever the scales; the target needs one of them
    in fp32: conv3 costs less latency in fp32, so conv3 goes."""
    bad = {m: 2.0 for m in CANDIDATES}
    w = world_of(conv1=bad, conv3=bad)
    w.fp32_ms = {**w.fp32_ms, "conv1": 0.5, "conv3": 0.05}
    r = run(w, 2.0)
    assert r.target_met and r.fp32_layers == ["conv3"]
    assert r.latency_cost_ms["conv3"] == pytest.approx(0.05)


def test_gives_back_a_layer_the_target_no_longer_needs() -> None:
    """A non-additive device: conv0 and conv1 each 'lose' 3 points only while the other is
    int8 too (their errors compound); once conv1 is in fp32, conv0 in fp32 is not needed."""
    w = world_of()

    def score(
        table: CalibrationTable | None, keep_fp32: Sequence[str] = (), what: str = ""
    ) -> Score:
        w.calls += 1
        both = "conv0" not in keep_fp32 and "conv1" not in keep_fp32
        drop = 6.0 if both else 0.0
        lat = 1.0 + 0.1 * len(keep_fp32)
        return Score(1 - drop / 100, None, 1 - drop / 1000, 1 - drop / 500, drop, lat)

    w.score = score  # type: ignore[method-assign]
    r = run(w, 0.5)
    assert r.target_met and len(r.fp32_layers) == 1 and r.int8_layers == len(LAYERS) - 1


def test_the_sweep_stops_once_the_target_is_met() -> None:
    """A stale ranking (as a subset's can be) puts conv0, conv1, conv2 in that order: the
    fallback refuses conv0, keeps conv1, refuses conv2; the sweep then keeps conv0, which meets
    the target, and tries nothing more in fp32 (conv2 would tie and add nothing)."""
    drop = {(): 10.0, ("conv1",): 5.0, ("conv0", "conv1"): 0.0}
    scored: list[tuple[str, ...]] = []
    w = world_of()

    def score(
        table: CalibrationTable | None, keep_fp32: Sequence[str] = (), what: str = ""
    ) -> Score:
        key = tuple(sorted(keep_fp32))
        scored.append(key)
        d = min(v for k, v in drop.items() if set(k) <= set(key))
        return Score(1 - d / 100, None, 1 - d / 1000, 1 - d / 500, d, 1.0 + 0.1 * len(key))

    def stale(table: CalibrationTable, base: Score) -> Sensitivity:
        entries = [
            LayerSensitivity(x, "Conv", base, None, g, 0.0)
            for x, g in (("conv0", 3.0), ("conv1", 2.0), ("conv2", 1.0))
        ]
        return Sensitivity("fake", "agreement", 10, base, entries)

    w.score = score  # type: ignore[method-assign]
    r = tune(
        w,
        {"kl": table_of({})},
        ["conv0", "conv1", "conv2"],
        stale,
        w.alternative,
        TuneConfig(max_drop=0.5, methods=()),
    )
    assert r.target_met and sorted(r.fp32_layers) == ["conv0", "conv1"]
    assert ("conv0", "conv1", "conv2") not in scored, scored
    assert [(s.action, s.layer, s.kept) for s in r.steps] == [
        ("fp32", "conv0", False),
        ("fp32", "conv1", True),
        ("fp32", "conv2", False),
        ("fp32", "conv0", True),
    ]


def test_ranking_scorer_compares_and_the_full_scorer_confirms() -> None:
    """Candidates are compared on the ranking scorer; every kept step is the full scorer's."""
    w = world_of(conv2={"kl": 5.0, "aciq": 3.0, "mse": 0.1, "p99.99": 2.0})
    ranker = Additive(w.harm, w.fp32_ms)
    r = tune(
        w,
        {"kl": table_of({})},
        LAYERS,
        ranker.sensitivity,
        w.alternative,
        TuneConfig(max_drop=0.2, methods=tuple(CANDIDATES)),
        rank_scorer=ranker,
    )
    assert r.target_met and r.layer_methods["conv2"] == "mse"
    assert ranker.calls > 0
    # the full scorer: the start, and the winner once
    assert w.calls == 2 and [s.method for s in r.steps] == ["mse"]


def test_time_budget_caps_the_ranking() -> None:
    w = world_of(conv2={"kl": 5.0, "aciq": 5.0, "mse": 5.0, "p99.99": 5.0})
    ticks = iter(range(0, 1000, 10))
    r = tune(
        w,
        {"kl": table_of({})},
        LAYERS,
        w.sensitivity,
        w.alternative,
        TuneConfig(max_drop=0.0, methods=tuple(CANDIDATES), time_budget_s=5),
        clock=lambda: next(ticks),
    )
    assert not r.target_met and "time budget of 5 s" in r.reason


def test_tune_doc_round_trip_with_the_new_fields() -> None:
    w = world_of(fc={"kl": 5.0, "aciq": 4.0, "mse": 3.0, "p99.99": 3.5})
    r = run(w, 1.0)
    lat = {"int8": latency_doc([0.002, 0.001, 0.003]), "fp32": latency_doc([0.001])}
    doc = TuneDoc.of(
        r,
        "kl",
        1.0,
        "agreement",
        latency=lat,
        warnings=("slow",),
        disk_bytes={"run_dir": 10, "host_work": 0, "device_work": 5},
        ranking={"images": 3, "of": 3, "how": "every image"},
    )
    d = doc.to_dict()
    assert d["int8_layers"] == 4 and d["quantizable_layers"] == 5
    assert d["objective"].startswith("meet max_drop with the most int8 layers")
    assert d["latency"]["int8"]["median_ms"] == pytest.approx(2.0)
    assert TuneDoc.from_dict(d) == doc


def test_latency_summary_and_the_slower_warning() -> None:
    s = latency_doc([0.001 * i for i in range(1, 11)])
    assert s["runs"] == 10 and s["median_ms"] == pytest.approx(5.5)
    assert s["p10_ms"] == pytest.approx(1.9) and s["p90_ms"] == pytest.approx(9.1)
    assert latency_doc([]) == {"runs": 0}
    slow, fast = latency_of([0.001 * i for i in range(1, 11)]), latency_of([0.001])
    assert slower_warning(fast, slow) is None and slower_warning(None, slow) is None
    w = slower_warning(slow, fast)
    assert w is not None and "slower than fp32" in w and "5.500 ms against 1.000 ms" in w


def test_ranking_subset_takes_the_disagreements_then_every_class() -> None:
    classes = np.array([0] * 50 + [1] * 30 + [2] * 20)
    disagree = np.zeros(100, dtype=bool)
    disagree[[3, 60, 99]] = True
    got = ranking_subset(classes, disagree, size=12)
    assert len(got) == 12 and {3, 60, 99} <= set(got) and got == sorted(got)
    assert {int(classes[i]) for i in got if i not in (3, 60, 99)} == {0, 1, 2}
    assert got == ranking_subset(classes, disagree, size=12)  # fixed seed
    assert ranking_subset(classes, disagree, size=100) == list(range(100))


def test_a_rule_added_to_rules_is_a_try_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring a threshold rule in is one entry of ``RULES``: --try-methods then takes it."""
    from edgecal.api.tune import parse_try_methods
    from edgecal.errors import UsageError
    from edgecal.workflows import alternatives

    assert parse_try_methods("kl,mse,p99.9,p99.999") == ("kl", "mse", "p99.9", "p99.999")
    with pytest.raises(UsageError, match=r"unknown method 'clip3'"):
        parse_try_methods("kl,clip3")
    monkeypatch.setitem(alternatives.RULES, "clip3", alternatives.RULES["kl"])
    assert parse_try_methods("kl,clip3") == ("kl", "clip3")


def test_the_report_states_the_objective_layers_latency_and_warnings() -> None:
    from edgecal.report.page import tune_view

    w = world_of(fc={"kl": 5.0, "aciq": 4.0, "mse": 3.0, "p99.99": 3.5})
    r = run(w, 1.0)
    int8, fp32 = latency_doc([0.002] * 3), latency_doc([0.001] * 3)
    slower = slower_warning(latency_of([0.002] * 3), latency_of([0.001] * 3))
    assert slower is not None
    doc = TuneDoc.of(
        r,
        "kl",
        1.0,
        "agreement",
        latency={"int8": int8, "fp32": fp32},
        warnings=(slower,),
        disk_bytes={"run_dir": 10, "host_work": 0, "device_work": 5},
    )
    note = tune_view(doc)["note"]
    assert "Objective: meet max_drop with the most int8 layers" in note
    assert "Layers int8: 4 of 5, from the kl table." in note
    assert "int8 2.000 (2.000–2.000) ms, fp32 1.000" in note
    assert "Warning: the int8 model is slower than fp32" in note
    assert "10 bytes in the run directory, 5 pushed to the device" in note


def test_the_requested_table_stays_when_it_meets_the_target_all_int8() -> None:
    """A closer output on the tuning images is no reason to leave the requested method when its
    all-int8 model already meets the target: the other tables are not even scored; when it
    misses the target, the best whole-model table is the start."""
    world = world_of(conv0={"kl": 1.0, "aciq": 0.0, "mse": 0.0, "p99.99": 0.0})
    starts = {"kl": table_of({}), "aciq": table_of({}, "aciq")}
    r = run(world, 1.0, starts)
    assert r.start_method == "kl" and r.target_met and world.calls == 1
    assert not any(s.action == "table" and s.method == "aciq" for s in r.steps)
    world = world_of(conv0={"kl": 1.0, "aciq": 0.0, "mse": 0.0, "p99.99": 0.0})
    r = run(world, 0.5, starts)
    assert r.start_method == "aciq" and r.final.drop_points == 0.0
