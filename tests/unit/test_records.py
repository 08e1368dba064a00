"""One declaration per record: what the owner's ``to_dict`` writes, its ``from_dict`` reads back
(through JSON, as the report reads a run directory); the method registry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecal.calib.methods import METHOD_NAMES, METHODS, OFFLINE_NAMES, Method, parse_method
from edgecal.errors import CalibrationError
from edgecal.quality.consistency import BoardVerdict, Consistency, PairFigures
from edgecal.quality.jsondoc import Malformed
from edgecal.quality.metrics import Score
from edgecal.quality.sensitivity import LayerSensitivity, Sensitivity
from edgecal.quality.tuning import TuneStep
from edgecal.quality.validation import LayerFigures


def _json(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


def score(drop: float) -> Score:
    return Score(agreement=0.9, accuracy=None, cosine_mean=0.99, cosine_min=0.9,
                 drop_points=drop, latency_ms=1.5)


def test_score_and_tune_step_round_trip() -> None:
    assert Score.from_dict(_json(score(2.0).to_dict())) == score(2.0)
    step = TuneStep(action="method", layer="conv1", method=Method.ACIQ, score=score(1.0),
                    kept=True)
    back = TuneStep.from_dict(_json(step.to_dict()))
    assert back == step and back.method == "aciq"


def test_sensitivity_round_trip_keeps_the_ranking() -> None:
    layers = [LayerSensitivity(layer=f"l{i}", type="Convolution", keep_fp32=score(i),
                               only_int8=score(2 * i), gain_points=3.0 - i, harm_cosine=0.01)
              for i in range(3)]
    sens = Sensitivity(board="emu1", metric="accuracy", n_samples=20, all_int8=score(4.0),
                       layers=layers)
    doc = _json(sens.to_dict())
    assert [x["rank"] for x in doc["layers"]] == [1, 2, 3]
    doc["layers"].reverse()  # the ranks order the layers, not the list
    assert Sensitivity.from_dict(doc) == sens


def test_consistency_and_layer_figures_round_trip() -> None:
    c = Consistency(tolerance_cosine=0.999, tolerance_disagree=0.01,
                    pairs=[PairFigures("a", "b", 0.9999, 0.998, 0.0)],
                    boards=[BoardVerdict("a", 0.998, False, None),
                            BoardVerdict("b", 0.9, True, "cosine 0.9")])
    back = Consistency.from_dict(_json(c.to_dict()))
    assert back == c and back.diverging == ["b"]
    f = LayerFigures(name="conv1", type="Convolution", top="conv1_out", requantized=True,
                     top_scale=10.0, cosine_mean=0.999, cosine_min=0.99, sqnr_db=30.0)
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
