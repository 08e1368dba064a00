"""Blob scales (KL, ACIQ), EQ helpers, histogram reductions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgecal.calib import eq
from edgecal.calib.aciq import aciq_clip
from edgecal.calib.histogram import BlobHistogram, merge_counts, merge_histograms, reduce_absmax
from edgecal.calib.scales import blob_scale
from edgecal.calib.table import parse_table
from edgecal.errors import CalibrationError

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
CROSS = json.loads((REF / "crosscheck.json").read_text())
BLOBS = [(case, name) for case in ("digits", "npy", "multi") for name in CROSS[case]]


def hist_of(case: str, name: str) -> BlobHistogram:
    b = CROSS[case][name]
    c = np.zeros(2048, dtype=np.uint64)
    c[b["histogram_bins"]] = b["histogram_counts"]
    absmax = np.uint32(int(b["absmax_float32_hex"], 16)).view(np.float32)
    return BlobHistogram(c, absmax, b["elements_per_sample"])


@pytest.mark.parametrize("method", ["kl", "aciq"])
@pytest.mark.parametrize(("case", "name"), BLOBS)
def test_blob_scale_matches_reference_table(case: str, name: str, method: str) -> None:
    text = (REF / case / f"{method}.table").read_text()
    want = text.split(f"\n{name} ", 1)[1].split(" ", 1)[0]
    bs = blob_scale(method, hist_of(case, name), name)
    assert f"{float(bs.scale):f}" == want
    assert parse_table(text).blob_scale(name) == np.float32(float(want))
    assert bs.warnings == []


def test_eq_starts_from_kl() -> None:
    h = hist_of("npy", "fcrelu_0")
    assert blob_scale("eq", h, "x").scale == blob_scale("kl", h, "x").scale


@pytest.mark.parametrize("method", ["kl", "aciq"])
def test_all_zero_blob_is_finite_with_warning(method: str) -> None:
    h = BlobHistogram(np.zeros(2048, dtype=np.uint64), np.float32(0), 100)
    bs = blob_scale(method, h, "conv7")
    assert np.isfinite(bs.scale) and np.isfinite(bs.threshold) and bs.scale > 0
    assert len(bs.warnings) == 1 and "conv7" in bs.warnings[0]


def test_unknown_method() -> None:
    with pytest.raises(CalibrationError):
        blob_scale("minmax", hist_of("npy", "fcrelu_0"), "x")


def test_aciq_clip_formula_and_edges() -> None:
    g = (0.5 * 0.35) * (1 + math.sqrt(math.pi * math.log(4)))
    a = np.float32(2.5)
    want = np.float32(
        float(np.float32(3.92403714)) * (float(a) * 2 * g) / math.sqrt(2 * math.log(77))
    )
    assert aciq_clip(a, 77, 8) == want
    assert np.isinf(aciq_clip(1.0, 1, 8))  # N = 1: std = inf, scale 127/inf = 0
    assert aciq_clip(0.0, 10, 8) == 0
    assert aciq_clip(1.0, 9, 6) < aciq_clip(1.0, 9, 8)


def test_reductions_exact() -> None:
    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 2**40, 2048, dtype=np.uint64) for _ in range(5)]
    assert np.array_equal(merge_counts(shards), sum(shards))
    assert reduce_absmax([np.float32(1.5), np.float32(np.nan), np.float32(2.25)]) == 2.25
    assert reduce_absmax([]) == 0
    h1 = BlobHistogram(shards[0], np.float32(2), 10)
    h2 = BlobHistogram(shards[1], np.float32(2), 12)
    m = merge_histograms([h1, h2])
    assert np.array_equal(m.counts, shards[0] + shards[1]) and m.elements_per_sample == 12
    with pytest.raises(CalibrationError):
        merge_histograms([h1, BlobHistogram(shards[1], np.float32(3), 12)])
    with pytest.raises(CalibrationError):
        merge_counts([np.ones(2048, dtype=np.float32)])


def test_eq_candidates_float32_like_c() -> None:
    s = np.float32(154.378113)
    cand = eq.eq_candidates(s)
    lo = s * np.float32(0.5)
    step = (s * np.float32(2.0) - lo) / np.float32(100)
    assert cand.dtype == np.float32 and cand.size == 100
    for k in (0, 1, 37, 99):
        assert cand[k] == np.float32(lo + np.float32(k) * step)
    assert cand[-1] < s * 2


def test_pick_best() -> None:
    assert eq.pick_best(np.array([0.0, -1.0, np.nan])) is None
    assert eq.pick_best(np.array([0.5, 0.9, 0.9, 0.1])) == 1
    assert eq.pick_best(np.array([np.nan, 0.2])) == 1


def test_cosine_similarity_float_accumulators() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 4, 5)).astype(np.float32)
    b = a + rng.normal(scale=0.01, size=a.shape).astype(np.float32)
    sa = sb = s = np.float32(0)
    for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True):
        sa = np.float32(sa + x * x)
        sb = np.float32(sb + y * y)
        s = np.float32(s + x * y)
    want = np.float32(np.float32(s / np.sqrt(sa)) / np.sqrt(sb))
    assert eq.cosine_similarity(a, b) == want
    assert np.isnan(eq.cosine_similarity(np.zeros(4), np.zeros(4)))
