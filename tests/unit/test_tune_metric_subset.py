"""tune with a task metric other than top-1, without a device: the ranking images
(``metric_ranking_subset`` from each image's harm, ``per_sample_harm``), the choice
``RankingScorer`` makes by metric, and tune.json's metric figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecal.calib.table import CalibrationTable
from edgecal.quality.metrics import Score
from edgecal.quality.taskmetrics import Ctc, Fidelity, MetricFigures, Top1, UserMetric
from edgecal.quality.tuning import (
    TuneDoc,
    TuneResult,
    metric_ranking_subset,
    per_sample_harm,
    ranking_subset,
)
from edgecal.workflows.scoring import RankingScorer


def test_the_worst_images_first_up_to_half_then_a_seeded_sample() -> None:
    harm = np.zeros(200)
    harm[[5, 50, 150]] = [10.0, 30.0, 20.0]  # three images a variant broke
    got = metric_ranking_subset(harm, size=64)
    assert len(got) == 64 and got == sorted(got) and {5, 50, 150} <= set(got)
    assert got == metric_ranking_subset(harm, size=64)  # fixed seed: the same images
    assert got != metric_ranking_subset(harm, size=64, seed=13)  # the seed picks the rest
    # more harmed images than half the subset: the worst half, the rest a random sample
    many = np.arange(200, dtype=float)  # image i lost i points: 199 the worst
    got = metric_ranking_subset(many, size=64)
    assert set(range(168, 200)) <= set(got)  # the 32 worst
    assert len(got) == 64 and len([i for i in got if i < 168]) == 32
    # nothing harmed yet: a random sample, not the first images
    calm = metric_ranking_subset(np.zeros(200), size=64)
    assert len(calm) == 64 and calm != list(range(64))
    # a small set: every image
    assert metric_ranking_subset(harm[:50], size=64) == list(range(50))


def test_negative_harm_is_not_a_disagreement() -> None:
    """int8 right where fp32 was wrong (a negative per-image drop) is not picked first."""
    harm = np.zeros(100)
    harm[7] = -100.0
    harm[9] = 100.0
    assert 9 in metric_ranking_subset(harm, size=2, share=1.0)
    assert metric_ranking_subset(harm, size=1, share=1.0) == [9]


def out(x: Any) -> dict[str, np.ndarray]:
    return {"out0": np.asarray(x, dtype=np.float32)}


def steps(*classes: int, n: int = 4) -> dict[str, np.ndarray]:
    """A (T, n) CTC output whose argmax per step is ``classes``."""
    x = np.zeros((len(classes), n), dtype=np.float32)
    x[np.arange(len(classes)), classes] = 1.0
    return out(x)


def test_per_image_harm_of_ctc_and_fidelity() -> None:
    fp32 = [steps(1, 0, 2), steps(3, 3, 0), steps(2, 0, 2)]
    int8 = [steps(1, 0, 2), steps(3, 0, 3), steps(2, 2, 2)]  # 2nd reads "33", 3rd "2"
    harm = per_sample_harm(Ctc(), fp32, int8, None)
    assert harm.tolist() == [0.0, 100.0, 100.0]
    # with labels: the points of exact-text accuracy on that image
    labels = ["1 2", "3", "2"]  # ctc_text without a charset: the classes joined by spaces
    # 2nd: fp32 right, int8 wrong; 3rd: fp32 wrong ("2 2"), int8 right
    assert per_sample_harm(Ctc(), fp32, int8, labels).tolist() == [0.0, 100.0, -100.0]
    a = [out([1.0, 0.0]), out([0.0, 1.0])]
    b = [out([1.0, 0.0]), out([1.0, 1.0])]
    h = per_sample_harm(Fidelity(), a, b, None)
    assert h[0] == pytest.approx(0.0) and h[1] == pytest.approx(100 * (1 - 1 / math.sqrt(2)))


def test_a_user_metric_that_cannot_score_one_image_falls_back_to_cosine() -> None:
    calls: list[int] = []

    def needs_two(fp32: Any, int8: Any, labels: Any) -> float:
        calls.append(len(fp32))
        if len(fp32) < 2:
            raise ValueError("needs two samples at least")
        return 1.0

    a = [{"x": np.array([1.0, 0.0]), "y": np.array([1.0])}] * 2
    b = [
        {"x": np.array([1.0, 0.0]), "y": np.array([1.0])},
        {"x": np.array([1.0, 1.0]), "y": np.array([-1.0])},  # y opposite: cosine -1
    ]
    h = per_sample_harm(UserMetric(needs_two, "needs_two"), a, b, None)
    assert calls == [1] and h[0] == pytest.approx(0.0) and h[1] == pytest.approx(200.0)


class FullScorer:
    """What RankingScorer reads of a Scorer."""

    def __init__(self, metric: Any) -> None:
        n = 200
        self.metric = metric
        self.classes = np.arange(n) % 10
        self.disagreed = np.zeros(n, dtype=bool)
        self.disagreed[[1, 2]] = True
        self.harm = np.zeros(n)
        self.harm[[150, 160]] = [5.0, 9.0]
        self.track_harm = False
        self.taken: list[int] = []

    def subset(self, indices: list[int], work_dir: Path) -> Any:
        self.taken = indices
        return self


@pytest.mark.parametrize("metric", [Ctc(), Fidelity(), UserMetric(lambda a, b, c: 1.0, "u")])
def test_ranking_scorer_chooses_by_harm_for_a_metric(metric: Any, tmp_path: Path) -> None:
    full = FullScorer(metric)
    r = RankingScorer(full, tmp_path, 64)  # type: ignore[arg-type]
    assert full.track_harm  # harm is measured until the subset is chosen
    r.scorer()
    assert r.indices == metric_ranking_subset(full.harm, size=64) and {150, 160} <= set(r.indices)
    assert not full.track_harm and full.taken == r.indices


@pytest.mark.parametrize("metric", [None, Top1()])
def test_ranking_scorer_keeps_top1_disagreements_for_top1(metric: Any, tmp_path: Path) -> None:
    full = FullScorer(metric)
    r = RankingScorer(full, tmp_path, 64)  # type: ignore[arg-type]
    r.scorer()
    assert r.indices == ranking_subset(full.classes, full.disagreed, size=64)
    assert {1, 2} <= set(r.indices)


def score(drop: float) -> Score:
    return Score(1 - drop / 100, None, 0.999, 0.99, drop, 0.5)


def test_tune_json_records_the_metric_figures_and_reads_them_back() -> None:
    result = TuneResult(CalibrationTable(), [], {}, score(8.3), score(0.0), True, "met")
    start = MetricFigures("ctc", 0.83, 0.92, {"exact_agreement": 0.9})
    end = MetricFigures("ctc", 0.92, 0.92, {"exact_agreement": 1.0})
    doc = TuneDoc.of(
        result, "kl", 1.0, "ctc", metric_figures={"initial": start, "final": end}
    ).to_dict()
    assert doc["metric"] == "ctc"
    assert doc["metric_figures"]["initial"]["drop_points"] == pytest.approx(9.0)
    assert doc["metric_figures"]["final"]["figures"] == {"exact_agreement": 1.0}
    back = TuneDoc.from_dict(doc)
    assert back.metric_figures == {"initial": start, "final": end}
    # without a metric: no new key (tune.json as it always was)
    plain = TuneDoc.of(result, "kl", 1.0, "agreement").to_dict()
    assert "metric_figures" not in plain and TuneDoc.from_dict(plain).metric_figures is None
