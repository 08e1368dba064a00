"""One declaration per record: what the owner's ``to_dict`` writes, its ``from_dict`` reads back
(through JSON, as the report reads a run directory); the method registry."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecal.calib.methods import METHOD_NAMES, METHODS, OFFLINE_NAMES, Method, parse_method
from edgecal.calib.table import CalibrationTable
from edgecal.errors import CalibrationError
from edgecal.quality.consistency import BoardVerdict, Consistency, PairFigures
from edgecal.quality.jsondoc import Malformed
from edgecal.quality.metrics import Score
from edgecal.quality.sensitivity import LayerSensitivity, Sensitivity
from edgecal.quality.thresholds import CHOSEN_METHODS, LayerThresholds, ThresholdsDoc
from edgecal.quality.tuning import TuneDoc, TuneResult, TuneStep
from edgecal.quality.validation import (
    Int8Files,
    LayerFigures,
    ModelFiles,
    ValidationDoc,
    ValidationResult,
)
from edgecal.runs.rundir import RUN_JSON, Command, RunDir, RunInfo


def _json(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


def score(drop: float) -> Score:
    return Score(
        agreement=0.9,
        accuracy=None,
        cosine_mean=0.99,
        cosine_min=0.9,
        drop_points=drop,
        latency_ms=1.5,
    )


def test_score_and_tune_step_round_trip() -> None:
    assert Score.from_dict(_json(score(2.0).to_dict())) == score(2.0)
    step = TuneStep(action="method", layer="conv1", method=Method.ACIQ, score=score(1.0), kept=True)
    back = TuneStep.from_dict(_json(step.to_dict()))
    assert back == step and back.method == "aciq"


def test_sensitivity_round_trip_keeps_the_ranking() -> None:
    layers = [
        LayerSensitivity(
            layer=f"l{i}",
            type="Convolution",
            keep_fp32=score(i),
            only_int8=score(2 * i),
            gain_points=3.0 - i,
            harm_cosine=0.01,
        )
        for i in range(3)
    ]
    sens = Sensitivity(
        board="emu1", metric="accuracy", n_samples=20, all_int8=score(4.0), layers=layers
    )
    doc = _json(sens.to_dict())
    assert [x["rank"] for x in doc["layers"]] == [1, 2, 3]
    doc["layers"].reverse()  # the ranks order the layers, not the list
    assert Sensitivity.from_dict(doc) == sens


def test_consistency_and_layer_figures_round_trip() -> None:
    c = Consistency(
        tolerance_cosine=0.999,
        tolerance_disagree=0.01,
        pairs=[PairFigures("a", "b", 0.9999, 0.998, 0.0)],
        boards=[BoardVerdict("a", 0.998, False, None), BoardVerdict("b", 0.9, True, "cosine 0.9")],
    )
    back = Consistency.from_dict(_json(c.to_dict()))
    assert back == c and back.diverging == ["b"]
    f = LayerFigures(
        name="conv1",
        type="Convolution",
        top="conv1_out",
        requantized=True,
        top_scale=10.0,
        cosine_mean=0.999,
        cosine_min=0.99,
        sqnr_db=30.0,
    )
    assert LayerFigures.from_dict(_json(f.to_dict())) == f


def test_from_dict_names_the_json_path() -> None:
    doc = _json(score(1.0).to_dict())
    doc["drop_points"] = "high"
    with pytest.raises(Malformed, match=r"all_int8\.drop_points"):
        Score.from_dict(doc, "all_int8")


def test_method_values_are_what_the_files_spell() -> None:
    assert METHOD_NAMES == ("kl", "aciq", "eq") and OFFLINE_NAMES == ("kl", "aciq")
    assert json.dumps({Method.EQ: [Method.KL]}) == '{"eq": ["kl"]}'
    assert f"{Method.ACIQ}" == str(Method.ACIQ) == "aciq"
    assert METHODS[Method.EQ].blob_rule is Method.KL and METHODS[Method.EQ].needs_device
    assert not METHODS[Method.ACIQ].needs_histograms
    assert parse_method("kl") is Method.KL
    with pytest.raises(CalibrationError, match="unknown calibration method 'best'"):
        parse_method("best")


# ----------------------------------------------------------------------------- run documents

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
figure = st.floats(allow_nan=True, allow_infinity=True)
finite = st.floats(-1e6, 1e6)
sha = st.text("0123456789abcdef", min_size=64, max_size=64)


def _round_trip(to_dict: Any, from_dict: Any) -> None:
    """to_dict, through JSON, from_dict, to_dict: the same document."""
    doc = _json(to_dict())
    assert _json(from_dict(doc).to_dict()) == doc


layer_figures = st.builds(
    LayerFigures,
    name=names,
    type=st.sampled_from(["Convolution", "InnerProduct"]),
    top=names,
    requantized=st.booleans(),
    top_scale=st.none() | finite,
    cosine_mean=figure,
    cosine_min=figure,
    sqnr_db=figure,
)
board_result = st.builds(
    ValidationResult,
    n_samples=st.integers(0, 10**6),
    output_blob=names,
    runtime=names,
    threads=st.integers(1, 64),
    top1_fp32=st.none() | finite,
    top1_int8=st.none() | finite,
    agreement=figure,
    cosine_mean=figure,
    cosine_min=figure,
    sqnr_mean_db=figure,
    sqnr_min_db=figure,
    latency_fp32_ms=figure,
    latency_int8_ms=figure,
    layers=st.lists(layer_figures, max_size=3),
    device=st.fixed_dictionaries({"name": names, "cores": st.integers(1, 8)}),
    fp32=st.none() | st.builds(ModelFiles, names, names, sha, sha),
    int8=st.none()
    | st.builds(Int8Files, st.none() | names, st.none() | names, sha, sha, table=st.none() | names),
)
verdicts = st.builds(BoardVerdict, names, finite, st.booleans(), st.none() | names)
consistency = st.builds(
    Consistency,
    finite,
    finite,
    st.lists(st.builds(PairFigures, names, names, finite, finite, finite), max_size=2),
    st.lists(verdicts, max_size=3, unique_by=lambda v: v.board),
)


@given(
    st.lists(board_result, min_size=1, max_size=3, unique_by=lambda r: r.board),
    st.none() | consistency,
)
def test_validation_doc_round_trip(
    results: list[ValidationResult], cons: Consistency | None
) -> None:
    vd = ValidationDoc(results, cons)
    _round_trip(vd.to_dict, ValidationDoc.from_dict)
    # the gate's lenient reading of a whole document reads the same figures
    _round_trip(vd.to_dict, lambda d: ValidationDoc.from_dict(d, lenient=True))


def test_validation_result_writes_today_s_board_document() -> None:
    """The keys ``edgecal validate`` has always written for a board (validate's figures, then
    the models' files), inf as a string."""
    res = ValidationResult(
        n_samples=2,
        output_blob="prob",
        runtime="deployed",
        threads=1,
        top1_fp32=None,
        top1_int8=None,
        agreement=1.0,
        cosine_mean=0.99,
        cosine_min=0.98,
        sqnr_mean_db=math.inf,
        sqnr_min_db=30.0,
        latency_fp32_ms=2.0,
        latency_int8_ms=1.0,
        layers=[LayerFigures("c", "Convolution", "c_out", False, None, 1.0, 1.0, math.inf)],
        device={"name": "local"},
        fp32=ModelFiles("m.param", "m.bin", "a", "b"),
        int8=Int8Files(None, None, "c", "d", table="t.table"),
    )
    doc = res.to_dict()
    assert list(doc) == [
        "n_samples",
        "output_blob",
        "runtime",
        "threads",
        "top1_fp32",
        "top1_int8",
        "agreement",
        "cosine_mean",
        "cosine_min",
        "sqnr_mean_db",
        "sqnr_min_db",
        "latency_fp32_ms",
        "latency_int8_ms",
        "layers",
        "device",
        "fp32",
        "int8",
    ]
    assert doc["sqnr_mean_db"] == "inf" and doc["layers"][0]["sqnr_db"] == "inf"
    assert doc["fp32"] == {
        "param": "m.param",
        "bin": "m.bin",
        "param_sha256": "a",
        "bin_sha256": "b",
    }
    assert doc["int8"] == {
        "param": None,
        "bin": None,
        "table": "t.table",
        "param_sha256": "c",
        "bin_sha256": "d",
    }
    assert "fp32" not in ValidationResult(**{**res.__dict__, "fp32": None}).to_dict()


def test_validation_doc_lenient_reading_keeps_what_is_missing() -> None:
    doc = {
        "schema": 1,
        "results": [
            {
                "device": {"name": "b"},
                "agreement": "0.5",
                "cosine_mean": "high",
                "layers": [{"name": "c"}, 3],
            }
        ],
        "consistency": {"diverging": ["b"]},
    }
    with pytest.raises(Malformed, match="results\\[0\\] has no 'n_samples'"):
        ValidationDoc.from_dict(doc)
    vd = ValidationDoc.from_dict(doc, lenient=True)
    res = vd.results[0]
    assert res.figure("agreement") == 0.5 and res.figure("cosine_mean") is None
    assert res.figure("top1_int8") is None and res.board == "b"
    assert [x.name for x in res.layers] == ["c"] and res.layers[0].figure("cosine_mean") is None
    assert vd.consistency is not None and vd.consistency.diverging == ["b"]


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ([1], "a JSON list, not an object"),
        ({"schema": 1}, 'no "results" list'),
        ({"schema": 3, "results": []}, "validation schema 3"),
        ({"schema": 1, "results": [{"device": {}}]}, "results[0] does not name its device"),
    ],
)
def test_validation_doc_structure_errors_have_hints(doc: Any, says: str) -> None:
    with pytest.raises(Malformed) as info:
        ValidationDoc.from_dict(doc)
    assert says in str(info.value) and info.value.hint


@given(
    st.dictionaries(
        names,
        st.builds(
            LayerThresholds,
            layer=st.just(""),
            blob=names,
            absmax=finite,
            kl=st.none() | finite,
            aciq=st.none() | finite,
            eq=st.none() | finite,
            chosen_method=st.sampled_from(CHOSEN_METHODS),
            chosen=st.none() | finite,
        ),
        max_size=4,
    )
)
def test_thresholds_doc_round_trip(layers: dict[str, LayerThresholds]) -> None:
    doc = ThresholdsDoc({k: dataclasses.replace(t, layer=k) for k, t in layers.items()})
    _round_trip(doc.to_dict, ThresholdsDoc.from_dict)
    assert ThresholdsDoc.from_dict(_json(doc.to_dict())) == doc


scores = st.builds(Score, finite, st.none() | finite, finite, finite, finite, finite)


@given(
    st.builds(
        TuneDoc,
        method=st.sampled_from(["kl", "table"]),
        max_drop=finite,
        metric=names,
        target_met=st.booleans(),
        reason=names,
        initial=scores,
        final=scores,
        steps=st.lists(
            st.builds(
                TuneStep,
                st.sampled_from(["method", "fp32"]),
                names,
                st.none() | st.sampled_from(METHOD_NAMES),
                scores,
                st.booleans(),
            ),
            max_size=3,
        ).map(tuple),
        fp32_layers=st.lists(st.tuples(names, finite), max_size=3).map(tuple),
        layer_methods=st.dictionaries(names, st.sampled_from(METHOD_NAMES), max_size=3),
        evaluations=st.none() | st.integers(0, 100),
        seconds=st.none() | finite,
        fp32_latency_ms=st.none() | finite,
        try_methods=st.none() | st.lists(st.sampled_from(METHOD_NAMES)).map(tuple),
    )
)
def test_tune_doc_round_trip(doc: TuneDoc) -> None:
    _round_trip(doc.to_dict, TuneDoc.from_dict)
    assert TuneDoc.from_dict(_json(doc.to_dict())) == doc


def test_tune_doc_of_a_result() -> None:
    table = CalibrationTable(records={})
    result = TuneResult(
        table,
        ["conv2"],
        {"conv1": "aciq", "conv2": "fp32"},
        score(3.0),
        score(0.5),
        True,
        "within",
        [TuneStep("fp32", "conv2", None, score(0.5), True)],
        {"conv2": 0.25},
    )
    doc = TuneDoc.of(
        result, "kl", 1.0, "agreement", evaluations=4, try_methods=(Method.ACIQ,)
    ).to_dict()
    assert doc["fp32_layers"] == [{"layer": "conv2", "latency_cost_ms": 0.25}]
    assert doc["try_methods"] == ["aciq"] and doc["evaluations"] == 4
    assert "seconds" not in doc and doc["schema"] == 1
    assert _json(doc)["layer_methods"] == {"conv1": "aciq", "conv2": "fp32"}


@given(
    st.builds(
        RunInfo,
        kind=st.sampled_from(["validate", "tune"]),
        edgecal=names,
        protocol=st.integers(0, 9) | names,
        commands=st.lists(
            st.builds(Command, st.lists(names, max_size=3).map(tuple), names, names), max_size=3
        ).map(tuple),
        inputs=st.dictionaries(names, st.fixed_dictionaries({"sha256": sha}), max_size=3),
    )
)
def test_run_info_round_trip(info: RunInfo) -> None:
    _round_trip(info.to_dict, RunInfo.from_dict)
    assert RunInfo.from_dict(_json(info.to_dict())) == info


def test_run_dir_writes_run_info(tmp_path: Path) -> None:
    RunDir.create(tmp_path, "validate", ["edgecal", "validate"], {"a": {"sha256": "0"}})
    run = RunDir.create(tmp_path, "tune", ["edgecal", "tune"], {"b": {"sha256": "1"}})
    info = RunInfo.from_dict(run.read_json(RUN_JSON))
    assert [c.kind for c in info.commands] == ["validate", "tune"]
    assert info.kind == "tune" and set(info.inputs) == {"a", "b"}
    assert run.read_json(RUN_JSON) == _json(info.to_dict())
