"""tune's scoring on this machine: the ranking subset (``RankingScorer``) is a true subset of
the scorer's images -- its fp32 outputs are the full run's rows, its scores those of a scorer
run on those images alone -- and a variant's files stay neither on the host nor on the device
once scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecal.calib.table import CalibrationTable, parse_table, weight_key
from edgecal.device.local import LocalDevice
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source
from edgecal.inputs.spec import InputSpec
from edgecal.quality.sensitivity import quantized_layer_names
from edgecal.quality.tuning import Variant, with_records
from edgecal.workflows.scoring import BATCH, RankingScorer, Scorer
from edgecal.workflows.validate import Reference

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
SPEC = InputSpec(
    blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,), shape=(32, 32)
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[int]]:
    d = tmp_path_factory.mktemp("digits-test")
    data = np.load(DIGITS / "test.npz")
    paths = []
    for i, x in enumerate(data["x"][:160]):
        paths.append(d / f"t{i:03d}.png")
        Image.fromarray(x).save(paths[-1])
    return paths, [int(y) for y in data["y"][:160]]


def test_ranking_subset_is_a_subset_of_the_full_scoring(
    images: tuple[list[Path], list[int]], tmp_path: Path
) -> None:
    paths, labels = images
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    source = make_sample_source([SPEC], [paths])
    table = parse_table((DIGITS / "kl.table").read_text())
    with LocalDevice() as device:
        ref = Reference(device, model, source, labels, "calibration", 1)
        full = Scorer(ref, tmp_path / "full")
        on_device = sorted((device.workdir / "files").iterdir())  # fp32 model and shards
        full.score(table)
        pushed = full.device_bytes
        full.score(table, keep_fp32=["convrelu_1"])
        assert not list((tmp_path / "full" / "variants").iterdir())  # removed once scored
        assert sorted((device.workdir / "files").iterdir()) == on_device  # on the device too
        full.score(table)  # pushed again when scored again
        assert full.device_bytes > pushed
        disagreed = set(np.flatnonzero(full.disagreed).tolist())
        ranking = RankingScorer(full, tmp_path / "ranking", 64)
        s_sub = ranking.score(table)
        idx = ranking.indices
        assert len(idx) == 64 and disagreed <= set(idx) and idx == sorted(idx)
        sub = ranking.scorer()
        assert np.array_equal(sub.ref, full.ref[idx]) and sub.n_samples == 64
        # the same as a scorer run on those images alone
        alone = Scorer(
            Reference(device, model, source.subset(idx), [labels[i] for i in idx], "calibration"),
            tmp_path / "alone",
        )
        s_alone = alone.score(table)
        assert np.array_equal(alone.ref, sub.ref)
        assert (s_sub.drop_points, s_sub.cosine_mean) == (s_alone.drop_points, s_alone.cosine_mean)
        assert full.bytes_written > 0 and full.device_bytes > 0


def records(table: CalibrationTable, layer: str) -> dict[str, np.ndarray]:
    return {k: table.records[k] for k in (layer, weight_key(layer))}


@pytest.mark.parametrize("runtime", ["calibration", "deployed"])
def test_incremental_scores_are_the_whole_forwards_scores(
    images: tuple[list[Path], list[int]], tmp_path: Path, runtime: str
) -> None:
    """``score_many`` (each variant computes on the device only the layers it changes, from
    the base's blobs) scores every variant as ``score`` (whole forwards) does -- a layer in
    fp32, only one layer in int8, a layer with another method's scale -- runs fewer layers
    than whole forwards would, and leaves no variant's files behind."""
    paths, labels = images
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    source = make_sample_source([SPEC], [paths])
    table = parse_table((DIGITS / "kl.table").read_text())
    aciq = parse_table((DIGITS / "aciq.table").read_text())
    layers = quantized_layer_names(model, table)
    with LocalDevice() as device:
        scorer = Scorer(Reference(device, model, source, labels, runtime, 1), tmp_path)
        on_device = sorted((device.workdir / "files").iterdir())
        for base, variants in (
            (Variant(table), [Variant(table, (x,)) for x in layers]),
            (
                Variant(table, tuple(layers)),
                [Variant(table, tuple(y for y in layers if y != x)) for x in layers],
            ),
            (Variant(table), [Variant(with_records(table, x, records(aciq, x))) for x in layers]),
        ):
            many = scorer.score_many(variants, base)
            whole = [scorer.score(v.table, v.keep_fp32) for v in variants]
            for a, b in zip(many, whole, strict=True):
                assert (a.agreement, a.accuracy, a.cosine_mean, a.cosine_min, a.drop_points) == (
                    b.agreement,
                    b.accuracy,
                    b.cosine_mean,
                    b.cosine_min,
                    b.drop_points,
                )
        assert scorer.incremental_evaluations == 3 * len(layers)
        assert 0 < scorer.layers_recomputed < scorer.layers_whole
        assert not list((tmp_path / "variants").iterdir())
        assert sorted((device.workdir / "files").iterdir()) == on_device


def test_score_many_stops_between_batches(
    images: tuple[list[Path], list[int]], tmp_path: Path
) -> None:
    """A time budget spent after the first batch: the scores of that batch, in order, the
    others not run; nothing left behind."""
    paths, labels = images
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    table = parse_table((DIGITS / "kl.table").read_text())
    layers = quantized_layer_names(model, table)
    variants = [Variant(table, (x,)) for x in layers * 2]
    asked: list[int] = []

    def stop() -> bool:
        asked.append(len(asked))
        return len(asked) > 1

    with LocalDevice() as device:
        source = make_sample_source([SPEC], [paths[:20]])
        scorer = Scorer(Reference(device, model, source, labels[:20], "calibration"), tmp_path)
        got = scorer.score_many(variants, Variant(table), stop)
        assert len(variants) > BATCH and len(got) == BATCH and len(asked) == 2
        assert [s.cosine_mean for s in got] == [
            scorer.score(v.table, v.keep_fp32).cosine_mean for v in variants[:BATCH]
        ]
    assert not list((tmp_path / "variants").iterdir())
