"""The extra threshold rules' documented edge cases (edgecal/calib/rules.py), the method
registry's two name lists, candidate_thresholds, and where the rules' thresholds are shown:
thresholds.json and the report's thresholds table and plots."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from edgecal.calib import rules as R
from edgecal.calib.candidates import candidate_scales, candidate_thresholds
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.kl import kl_best_bin, threshold_from_bin
from edgecal.calib.methods import (
    CALIBRATE_NAMES,
    METHOD_NAMES,
    OFFLINE_NAMES,
    RULE_NAMES,
    Method,
    parse_method,
)
from edgecal.calib.scales import blob_scale
from edgecal.cli.ncnnargs import parse_ncnn2table
from edgecal.errors import UsageError
from edgecal.quality.thresholds import CHOSEN_METHODS, LayerThresholds, ThresholdsDoc
from edgecal.report.html import LayerHistogram, histogram_plot
from edgecal.report.page import render_report
from tests.unit.test_report import colour_pixels, make_run, thresholds_doc

RULE_KEYS = ["kl", "aciq", "mse", "p99.9", "p99.99", "p99.999"]


def counts(**bins: int) -> np.ndarray:
    c = np.zeros(2048, dtype=np.uint64)
    for k, v in bins.items():
        c[int(k[1:])] = v
    return c


# ----------------------------------------------------------------------------- the registry


def test_ncnn_names_and_the_extra_rules_are_distinct_lists() -> None:
    assert METHOD_NAMES == ("kl", "aciq", "eq") and OFFLINE_NAMES == ("kl", "aciq")
    assert RULE_NAMES == ("mse", "p99.9", "p99.99", "p99.999")
    assert CALIBRATE_NAMES == METHOD_NAMES + RULE_NAMES
    assert parse_method("p99.99") is Method.P99_99
    assert (*METHOD_NAMES, *RULE_NAMES, "table", "fp32") == CHOSEN_METHODS
    with pytest.raises(UsageError, match="method=mse not implemented yet !"):
        parse_ncnn2table("m.param m.bin l.txt t.table method=mse".split())


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("rule", [Method.MSE, Method.P99_9, Method.P99_99, Method.P99_999])
def test_empty_histogram_is_the_whole_range_and_the_table_guards_it(rule: Method) -> None:
    empty = np.zeros(2048, dtype=np.uint64)
    assert R.rule_edge(rule, empty) == 2048
    # the table builder's zero-blob guard: threshold 127, scale 1, a warning naming the layer
    s = blob_scale(rule, BlobHistogram(empty, np.float32(0), 10), "conv9")
    assert s.threshold == 127 and s.scale == 1 and "conv9" in s.warnings[0]


@pytest.mark.parametrize("rule", [Method.MSE, Method.P99_9, Method.P99_99, Method.P99_999])
def test_all_mass_in_bin_0_is_the_first_edge(rule: Method) -> None:
    c = counts(b0=12345)
    assert R.rule_edge(rule, c) == 1
    s = blob_scale(rule, BlobHistogram(c, np.float32(2.0), 10))
    assert s.threshold == np.float32(2.0 / 2048) and s.scale == np.float32(127 * 1024)


def test_one_nonempty_bin() -> None:
    c = counts(b700=5)
    # percentiles: the edge right after the bin; MSE: clipping half a bin (5 * (1/2)**2) costs
    # less than the rounding noise of a range of 701 bins (5 * (701/127)**2/12)
    for q in R.PERCENTILES.values():
        assert R.percentile_edge(c, q) == 701
    assert R.mse_edge(c) == 700
    assert R.mse_error_exact(c, 700) == 12 * 127**2 * 5  # 4*D * 5 * (1/2)**2
    assert R.mse_error_exact(c, 701) == 4 * 5 * 701**2


def test_a_bin_far_enough_down_is_not_clipped() -> None:
    """Bin i alone: edge i+1 costs ((i+1)/127)**2/12 per element, edge i costs (1/2)**2;
    the first is less while (i+1)**2 < 3 * 127**2, i.e. i+1 <= 219."""
    assert R.mse_edge(counts(b100=3)) == 101
    assert R.mse_edge(counts(b218=3)) == 219 and R.mse_edge(counts(b219=3)) == 219


def test_percentile_ties_take_the_first_edge_that_reaches_the_fraction() -> None:
    c = counts(b0=999, b5=1)  # 999/1000 reached exactly at edge 1
    assert R.percentile_edge(c, Fraction(999, 1000)) == 1
    assert R.percentile_edge(c, Fraction(9999, 10000)) == 6
    c = counts(b0=998, b3=1, b9=1)  # 999/1000 reached at edge 4 (bins 4..8 add nothing)
    assert R.percentile_edge(c, Fraction(999, 1000)) == 4


def test_counts_beyond_uint64_are_summed_exactly() -> None:
    c = counts(b0=2**63, b10=2**63, b20=2**63)  # total 1.5 * 2**64
    assert R.percentile_edge(c, Fraction(1, 3)) == 1
    assert R.percentile_edge(c, Fraction(2, 3)) == 11
    assert R.percentile_edge(c, Fraction(999, 1000)) == 21


def test_a_bad_fraction_or_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        R.percentile_edge(counts(b0=1), Fraction(3, 2))
    with pytest.raises(ValueError):
        R.mse_edge(np.zeros(10))
    with pytest.raises(ValueError):
        R.rule_edge(Method.KL, counts(b0=1))


def test_mse_of_a_gaussian_is_near_the_known_optimum() -> None:
    """Banner et al.: the MSE-optimal 8-bit clip of a unit Gaussian is ~3.92 sigma (ACIQ's
    alpha for 8 bits); the percentiles of |N(0,1)| are 3.29, 3.89, 4.42."""
    x = np.abs(np.random.default_rng(1).standard_normal(2_000_000))
    absmax = np.float32(x.max())
    idx = np.minimum((x.astype(np.float32) / absmax * 2048).astype(int), 2047)
    got = candidate_thresholds(BlobHistogram(np.bincount(idx, minlength=2048), absmax, 1000))
    assert got["mse"] == pytest.approx(3.92, abs=0.08)
    assert got["p99.9"] == pytest.approx(3.29, abs=0.02)
    assert got["p99.99"] == pytest.approx(3.89, abs=0.05)
    assert got["p99.999"] == pytest.approx(4.42, abs=0.15)


# ----------------------------------------------------------------------------- candidates


def test_candidate_thresholds_are_each_rules_table_threshold() -> None:
    rng = np.random.default_rng(3)
    c = np.bincount(rng.integers(0, 900, 5000), minlength=2048).astype(np.uint64)
    hist = BlobHistogram(c, np.float32(6.5), 784)
    got = candidate_thresholds(hist)
    assert list(got) == RULE_KEYS
    assert all(isinstance(v, np.float32) for v in got.values())
    assert got["kl"] == threshold_from_bin(kl_best_bin(c), np.float32(6.5))
    for name, value in got.items():
        assert value == blob_scale(name, hist).threshold
    assert got["p99.999"] <= np.float32(900 * 6.5 / 2048)
    scales = candidate_scales(hist, "c1")
    assert {k: s.threshold for k, s in scales.items()} == got


# ----------------------------------------------------------------------------- thresholds.json


def layer(**rules: float) -> LayerThresholds:
    return LayerThresholds(
        layer="conv1",
        blob="in",
        absmax=8.0,
        kl=3.2,
        aciq=4.8,
        eq=None,
        chosen_method="mse",
        chosen=3.5,
        rules=dict(rules),
    )


def test_thresholds_doc_carries_the_rules_beside_kl() -> None:
    t = layer(**{"mse": 3.5, "p99.99": 4.0})
    entry = t.to_dict()
    ncnn = ["blob", "absmax", "kl", "aciq", "eq"]
    assert list(entry) == [*ncnn, "mse", "p99.99", "chosen_method", "chosen"]
    doc = ThresholdsDoc({"conv1": t})
    back = ThresholdsDoc.from_dict(json.loads(json.dumps(doc.to_dict())))
    assert back == doc
    assert back.layers["conv1"].by_method() == {
        "kl": 3.2,
        "aciq": 4.8,
        "eq": None,
        "mse": 3.5,
        "p99.99": 4.0,
    }
    # a layer without rules writes exactly what it wrote before them
    assert list(layer().to_dict()) == [*ncnn, "chosen_method", "chosen"]


# ----------------------------------------------------------------------------- the report


def test_report_shows_the_rules_columns_and_lines(tmp_path: Path) -> None:
    plain = render_report(make_run(tmp_path / "plain"))
    head = re.search(r"<tr><th>layer</th>(.*?)</tr>", plain)
    assert head is not None and "MSE" not in head.group(1) and "p99" not in head.group(1)

    doc = thresholds_doc()
    first = next(iter(doc["layers"].values()))
    first.update({"mse": 3.5, "p99.99": 4.25, "chosen_method": "mse", "chosen": 3.5})
    page = render_report(make_run(tmp_path / "rules", thresholds=doc))
    head = re.search(r"<tr><th>layer</th>(.*?)</tr>", page)
    assert head is not None
    titles = re.findall(r"<th>(.*?)</th>", head.group(1))
    assert titles == ["input blob", "abs-max", "KL", "ACIQ", "EQ", "MSE", "p99.99", "chosen"]
    row = re.search(r"<tr><td>conv1</td>(.*?)</tr>", page)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert "3.5" in cells[5] and "chosen" in cells[5] and "4.25" in cells[6]
    assert cells[7].startswith("MSE 3.5")
    other = re.search(r"<tr><td>conv\$3\$_x</td>(.*?)</tr>", page)
    assert other is not None and re.findall(r"<td>(.*?)</td>", other.group(1))[5] == "—"

    h = BlobHistogram(np.bincount(np.arange(2000), minlength=2048), np.float32(8.0), 10)
    hist = LayerHistogram("conv1", "in", 8.0, h.counts)
    mse_rgb = (0x1F, 0x77, 0xB4)
    with_rules = LayerThresholds.from_dict("conv1", {**first, "chosen_method": "kl"})
    without = LayerThresholds.from_dict("conv1", {k: v for k, v in first.items() if k != "mse"})
    assert colour_pixels(histogram_plot(hist, with_rules), mse_rgb) > 0
    assert colour_pixels(histogram_plot(hist, without), mse_rgb) == 0


def test_kl_is_searched_once_per_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rule's table from one set of histograms (tune builds them all) costs one KL search
    per blob, not one per rule."""
    import edgecal.calib.candidates as C

    calls: list[int] = []

    def counting(counts: np.ndarray) -> int:
        calls.append(1)
        return kl_best_bin(counts)

    monkeypatch.setattr(C, "kl_best_bin", counting)
    C._kl_bin.cache_clear()
    rng = np.random.default_rng(4)
    hists = [
        BlobHistogram(np.bincount(rng.integers(0, n, 3000), minlength=2048), np.float32(3), 9)
        for n in (300, 900, 2048)
    ]
    first = [candidate_scales(h, "x") for h in hists]
    for _ in range(5):
        assert [candidate_scales(h, "x") for h in hists] == first
    assert len(calls) == 3
    assert [s["kl"].kl_bin for s in first] == [kl_best_bin(h.counts) for h in hists]
