"""The extra threshold rules end to end on the reference digits model: ``calibrate --method mse``
and ``--method p99.99`` write tables whose blob scales are the rules' thresholds, ``--json``
lists every rule's threshold per blob, ``table`` takes them from saved histograms, and the
ncnn2table drop-in refuses them as ncnn does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecal.calib.candidates import candidate_thresholds
from edgecal.calib.scales import scale_from_threshold
from edgecal.calib.table import format_value, is_weight_key, parse_table
from edgecal.cli.main import main
from edgecal.runs.histfile import load_histograms

DIGITS = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"
INPUTS = ["--images", "images.txt", "--pixel", "GRAY", "--mean", "0", "--norm", "0.00392157"]
INPUTS += ["--shape", "32,32"]


@pytest.fixture
def digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "digits"
    shutil.copytree(DIGITS, d)
    monkeypatch.chdir(d)
    return d


def _calibrate(method: str) -> list[str]:
    return ["-q", "calibrate", "model.param", "model.bin", *INPUTS, "--method", method]


def test_mse_and_percentile_tables_from_calibrate_and_from_histograms(
    digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _calibrate("kl")
    assert main([*argv, "--out", "kl.table", "--histograms-out", "h.npz", "--json"]) == 0
    kl_doc = json.loads(capsys.readouterr().out)
    hs = load_histograms(digits / "h.npz")
    want = {name: candidate_thresholds(h) for name, h in hs.stats.items()}
    assert len(kl_doc["layers"]) == 5
    for layer in kl_doc["layers"]:
        got = layer["candidates"]
        assert sorted(got) == sorted(["kl", "aciq", "mse", "p99.9", "p99.99", "p99.999"])
        assert got == {k: float(v) for k, v in want[layer["name"]].items()}
        assert got["kl"] == layer["threshold"]
        assert got["p99.9"] <= got["p99.99"] <= got["p99.999"] <= layer["absmax"]
    kl = parse_table((digits / "kl.table").read_text())
    for method in ("mse", "p99.99"):
        out = f"{method}.table"
        assert main([*_calibrate(method), "--out", out, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["method"] == method
        table = parse_table((digits / out).read_text())
        assert list(table) == list(kl)  # the same lines in ncnn2table's order
        for key in kl:
            if is_weight_key(key):  # weight scales as for KL
                assert np.array_equal(table.records[key], kl.records[key]), key
            else:  # the blob scale is 127 / the rule's threshold
                threshold = want[key][method]
                written = format_value(scale_from_threshold(threshold))  # as the table has it
                assert format_value(table.records[key][0]) == written, key
        assert [x["threshold"] for x in doc["layers"]] == [
            float(want[x["name"]][method]) for x in doc["layers"]
        ]
        # the same table offline, from the saved histograms
        assert main(["-q", "table", "--histograms", "h.npz", "--method", method, "-o", "o.t"]) == 0
        assert f"wrote o.t ({method}, from h.npz)" in capsys.readouterr().out
        assert (digits / "o.t").read_text() == (digits / out).read_text()
    assert (
        main(
            [
                "-q",
                "quantize",
                "model.param",
                "model.bin",
                "q.param",
                "q.bin",
                "--table",
                "mse.table",
            ]
        )
        == 0
    )


def test_ncnn2table_refuses_the_extra_rules_as_ncnn_does(
    digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = "model.param model.bin images.txt t.table mean=[0] norm=[0.00392157] shape=[32,32] "
    argv += "pixel=GRAY thread=1 method=mse"
    code = main(["ncnn2table", *argv.split()])
    err = capsys.readouterr().err
    print(code, err)
    assert code != 0 and "method=mse not implemented yet !" in err
    assert not (digits / "t.table").exists()


@pytest.mark.parametrize(
    ("method", "says", "hint"),
    [
        ("kl", "abs-max values only, KL needs the histograms", "--method kl"),
        ("mse", "abs-max values only, MSE needs the histograms", "--method mse"),
        ("p99.9", "abs-max values only, p99.9 needs the histograms", "--method p99.9"),
    ],
)
def test_absmax_only_statistics_are_refused_by_every_histogram_rule(
    method: str, says: str, hint: str
) -> None:
    from edgecal.calib.histogram import BlobHistogram
    from edgecal.errors import CalibrationError
    from edgecal.inputs.model import load_model
    from edgecal.runs.histfile import HistogramSet
    from edgecal.workflows.calibrate import table_from_histograms

    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    names = [x.name for x in model.calibrated_layers]
    empty = BlobHistogram(np.zeros(2048, np.uint64), np.float32(1.0), 10)
    hs = HistogramSet({n: n for n in names}, {n: empty for n in names}, {"histograms": False})
    with pytest.raises(CalibrationError) as info:
        table_from_histograms(model, hs, method)
    assert str(info.value).startswith(f"these statistics hold {says}")
    assert hint in (info.value.hint or "")
    assert table_from_histograms(model, hs, "aciq").table.records  # ACIQ needs abs-max only
