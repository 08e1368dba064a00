"""The task metrics on hand-made arrays: top-1, fidelity, CTC, IoU, the user's; the drop in
points; the Score the tuner gets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecal.errors import UsageError
from edgecal.quality.metrics import score_outputs
from edgecal.quality.taskmetrics import (
    Ctc,
    Fidelity,
    Iou,
    MetricError,
    MetricFigures,
    Top1,
    UserMetric,
    builtin_metric,
    ctc_greedy,
    ctc_text,
    dense_mask,
    edit_distance,
    mask_iou,
    score_metric,
)


def one(x: np.ndarray, name: str = "out0") -> dict[str, np.ndarray]:
    return {name: np.asarray(x, dtype=np.float32)}


# ----------------------------------------------------------------------------- drop


def test_drop_points_ground_truth_and_agreement_forms() -> None:
    assert MetricFigures("m", 0.8, 0.9).drop_points == pytest.approx(10.0)
    assert MetricFigures("m", 0.8, None).drop_points == pytest.approx(20.0)
    assert MetricFigures("m", 0.95, 0.9).drop_points == pytest.approx(-5.0)  # int8 better


def test_figures_round_trip() -> None:
    m = MetricFigures("ctc", 0.75, 0.8, {"exact_agreement": 0.9, "x": math.inf})
    back = MetricFigures.from_dict(m.to_dict())
    assert back == m and m.to_dict()["drop_points"] == pytest.approx(5.0)


# ----------------------------------------------------------------------------- top-1


def test_top1_matches_todays_score() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(40, 10)).astype(np.float32)
    got = ref + rng.normal(scale=0.6, size=ref.shape).astype(np.float32)
    labels = rng.integers(0, 10, 40)
    acc_fp32 = float(np.mean(np.argmax(ref, 1) == labels))
    want = score_outputs(ref, got, labels, acc_fp32, 1.5)
    fp32, int8 = [one(r) for r in ref], [one(g) for g in got]
    score, figs = score_metric(Top1(), fp32, int8, list(labels), 1.5)
    assert score.drop_points == pytest.approx(want.drop_points)
    assert score.accuracy == pytest.approx(want.accuracy)
    assert score.agreement == pytest.approx(want.agreement)
    assert score.cosine_mean == pytest.approx(want.cosine_mean, abs=1e-6)
    assert score.cosine_min == pytest.approx(want.cosine_min, abs=1e-6)
    assert figs.primary_fp32 == pytest.approx(acc_fp32)
    assert 0.0 < want.agreement < 1.0  # the noise flipped some, not all
    no_labels, _ = score_metric(Top1(), fp32, int8, None)
    unlabelled = score_outputs(ref, got, None, None, 0.0)
    assert no_labels.drop_points == pytest.approx(unlabelled.drop_points)
    assert no_labels.accuracy is None


def test_top1_hand_made() -> None:
    fp32 = [one([0, 1, 0]), one([1, 0, 0]), one([0, 0, 1]), one([0, 0, 1])]
    int8 = [one([0, 1, 0]), one([0, 1, 0]), one([0, 0, 1]), one([1, 0, 0])]
    f = Top1()(fp32, int8, None)
    assert f.primary == 0.5 and f.primary_fp32 is None and f.drop_points == 50.0
    g = Top1()(fp32, int8, [1, 0, 2, 2])
    assert (g.primary, g.primary_fp32) == (0.5, 1.0)
    assert g.drop_points == pytest.approx(50.0)
    with pytest.raises(MetricError, match="3 labels for 4 samples"):
        Top1()(fp32, int8, [1, 0, 2])


# ----------------------------------------------------------------------------- fidelity


def test_fidelity_every_output_primary_is_the_least_cosine() -> None:
    a = [{"p": np.array([1.0, 2.0, 3.0]), "q": np.ones((2, 2))} for _ in range(3)]
    b = [{"p": np.array([1.0, 2.0, 3.0]), "q": np.array([[1.0, 0.0], [1.0, 1.0]])} for _ in a]
    f = Fidelity()(a, b, None)
    cos_q = 3.0 / (2.0 * math.sqrt(3.0))
    assert f.figures["p.cosine_mean"] == pytest.approx(1.0)
    assert f.figures["p.sqnr_db"] == math.inf
    assert f.figures["q.cosine_mean"] == pytest.approx(cos_q)
    assert f.figures["q.sqnr_db"] == pytest.approx(10 * math.log10(4.0 / 1.0))
    assert f.primary == pytest.approx(cos_q)
    assert f.drop_points == pytest.approx(100 * (1 - cos_q))


def test_fidelity_shapes_may_differ_between_samples_not_between_models() -> None:
    a = [one(np.ones(3)), one(np.ones(5))]  # a dynamic model: another size per sample
    assert Fidelity()(a, a, None).primary == pytest.approx(1.0)
    with pytest.raises(MetricError, match="output out0 of sample 1"):
        Fidelity()(a, [one(np.ones(3)), one(np.ones(4))], None)
    with pytest.raises(MetricError, match="outputs"):
        Fidelity()(a, [one(np.ones(3)), one(np.ones(5), "other")], None)


def test_fidelity_negative_cosine_clips_to_zero() -> None:
    f = Fidelity()([one([1.0, 0.0])], [one([-1.0, 0.0])], None)
    assert f.primary == 0.0 and f.figures["cosine_mean_least"] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- CTC


def scores(path: list[int], classes: int = 4) -> np.ndarray:
    """(T, classes) scores whose argmax per step is ``path``."""
    x = np.zeros((len(path), classes), np.float32)
    x[np.arange(len(path)), path] = 1.0
    return x


def test_ctc_greedy_collapses_repeats_and_drops_blanks() -> None:
    assert ctc_greedy(scores([1, 1, 0, 1, 2, 2, 0, 0, 3])) == [1, 1, 2, 3]
    assert ctc_greedy(scores([0, 0, 0])) == []
    assert ctc_greedy(scores([2, 2, 2])[None]) == [2]  # a leading (1, T, C) axis
    assert ctc_greedy(scores([1, 3, 3]), blank=3) == [1]


def test_ctc_text_with_a_character_list() -> None:
    chars = ("a", "b")
    assert ctc_text([1, 2, 1], chars) == "aba"
    assert ctc_text([1, 3, 2], chars) == "a b"  # PaddleOCR's use_space_char: the last class
    assert ctc_text([1, 2], None) == "1 2"
    with pytest.raises(MetricError, match="class 4 is beyond the character list"):
        ctc_text([4], chars)
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "ab") == 2


def test_ctc_metric_exact_rate_and_labels() -> None:
    m = Ctc(("a", "b", "c"))
    fp32 = [one(scores([1, 0, 2])), one(scores([3, 3, 0])), one(scores([1, 1, 1]))]
    int8 = [one(scores([1, 0, 2])), one(scores([3, 0, 3])), one(scores([2, 2, 1]))]
    f = m(fp32, int8, None)  # "ab"="ab", "c" vs "cc", "a" vs "ba"
    assert f.primary == pytest.approx(1 / 3) and f.primary_fp32 is None
    assert f.figures["char_error_vs_fp32"] == pytest.approx((0 + 1 + 1) / 4)
    g = m(fp32, int8, ["ab", "c", "ba"])
    assert g.figures["accuracy_fp32"] == pytest.approx(2 / 3)
    assert g.primary == pytest.approx(2 / 3)  # int8: "ab" and "ba" right
    assert g.drop_points == pytest.approx(0.0)
    with pytest.raises(MetricError, match="10 classes"):
        m([one(np.zeros((3, 10)))], [one(np.zeros((3, 10)))], None)


# ----------------------------------------------------------------------------- IoU


def test_mask_iou_probability_map_and_segmentation() -> None:
    a = np.array([[0.9, 0.1], [0.5, 0.2]])
    b = np.array([[0.8, 0.4], [0.1, 0.2]])
    ma, seg = dense_mask(a[None], 0.3)  # ncnn (1, h, w)
    mb, _ = dense_mask(b, 0.3)
    assert not seg
    assert mask_iou(ma, mb, False) == pytest.approx(1 / 3)
    empty = np.zeros((2, 2), bool)
    assert mask_iou(empty, empty, False) == 1.0
    s1 = np.array([[0, 0], [1, 2]])
    s2 = np.array([[0, 1], [1, 2]])
    # class 0: 1/2, class 1: 1/2, class 2: 1
    assert mask_iou(s1, s2, True) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    three = np.zeros((3, 2, 2), np.float32)
    three[2] = 1.0
    m, seg = dense_mask(three, 0.3)
    assert seg and (m == 2).all()


def test_iou_metric_threshold_and_mean_over_samples() -> None:
    a = [one(np.array([[[0.9, 0.1], [0.5, 0.2]]])), one(np.full((1, 2, 2), 0.9))]
    b = [one(np.array([[[0.8, 0.4], [0.1, 0.2]]])), one(np.full((1, 2, 2), 0.9))]
    f = Iou()(a, b, None)
    assert f.primary == pytest.approx((1 / 3 + 1.0) / 2)
    assert f.figures["iou_min"] == pytest.approx(1 / 3)
    assert f.drop_points == pytest.approx(100 * (1 - f.primary))
    g = Iou(0.45)(a, b, None)  # 0.4 no longer counts: {0.9, 0.5} vs {0.8}
    assert g.figures["iou_min"] == pytest.approx(1 / 2)
    with pytest.raises(MetricError, match="not a dense map"):
        Iou()([one(np.ones(4))], [one(np.ones(4))], None)


# ----------------------------------------------------------------------------- the user's


def test_user_metric_return_forms() -> None:
    a = [one([1.0])]
    assert UserMetric(lambda f, i, y: 0.25, "u")(a, a, None).drop_points == pytest.approx(75.0)
    d = UserMetric(lambda f, i, y: {"primary": 0.5, "primary_fp32": 0.6, "wer": 3}, "u")
    got = d(a, a, None)
    assert got.drop_points == pytest.approx(10.0) and got.figures == {"wer": 3.0}
    same = MetricFigures("u", 0.9)
    assert UserMetric(lambda f, i, y: same, "u")(a, a, None) is same


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (1.5, "outside"),
        ("x", "not a number"),
        ({"acc": 0.5}, "without 'primary'"),
        ({"primary": 0.5, "n": "many"}, "not a number"),
        ({"primary": 0.5, "primary_fp32": -1}, "outside"),
    ],
)
def test_user_metric_bad_returns_are_errors(value: object, why: str) -> None:
    with pytest.raises(MetricError, match=why):
        UserMetric(lambda f, i, y: value, "u")([one([1.0])], [one([1.0])], None)


def test_user_metric_that_raises_is_an_edgecal_error() -> None:
    def broken(fp32: object, int8: object, labels: object) -> float:
        raise KeyError("logits")

    with pytest.raises(MetricError, match="metric mine failed: KeyError") as e:
        UserMetric(broken, "mine")([one([1.0])], [one([1.0])], None)
    assert e.value.hint and "fn(fp32_outputs, int8_outputs, labels)" in e.value.hint


def test_builtin_names_and_options() -> None:
    assert builtin_metric("iou", iou_threshold=0.5) == Iou(0.5)
    assert builtin_metric("ctc", charset=["x"]) == Ctc(("x",))
    with pytest.raises(UsageError, match="not a metric"):
        builtin_metric("map")
    with pytest.raises(UsageError, match="--iou-threshold"):
        builtin_metric("iou", iou_threshold=1.5)


def test_score_metric_of_an_agreement_metric() -> None:
    a = [one(np.array([[[0.9, 0.1]]]))]
    b = [one(np.array([[[0.9, 0.9]]]))]
    score, figs = score_metric(Iou(), a, b, None, 2.0)
    assert score.agreement == figs.primary == pytest.approx(0.5)
    assert score.accuracy is None and score.drop_points == pytest.approx(50.0)
    assert score.latency_ms == 2.0 and score.cosine_mean < 1.0
    better, _ = score_metric(Iou(), a, a, None, 2.0)
    assert better.better_than(score)
