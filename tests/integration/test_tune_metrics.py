"""``edgecal tune --metric`` on real models of each kind, on the local device
(tests/data/tasks): the CTC recogniser tuned for its text (``--metric ctc``), the two-output
model for the fidelity of both outputs, and the user's own callable through the API.  The drop
tune decides on and reports is the metric's; the final validation carries the metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgecal
from edgecal.cli.main import main
from edgecal.quality.tuning import metric_ranking_subset

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "data" / "tasks"
SHAPES = {"ctc": (64, 16, 1), "two": (16, 16, 3)}


def files(name: str) -> list[str]:
    d = TASKS / name
    shape = ",".join(map(str, SHAPES[name]))
    return [
        str(d / "model.param"),
        str(d / "model.bin"),
        "--table",
        str(d / "kl.table"),
        "--npy",
        str(d / "samples.txt"),
        "--shape",
        shape,
        "--threads",
        "1",
    ]


def docs(out: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """tune.json, the final model's validation and sensitivity.json of a run directory."""
    tune = json.loads((out / "tune.json").read_text())
    val = json.loads((out / "validation.json").read_text())["results"][0]
    sens = json.loads((out / "sensitivity.json").read_text())
    return tune, val, sens


def kl_validation(name: str, **kw: Any) -> dict[str, Any]:
    d = TASKS / name
    v = edgecal.validate(
        (d / "model.param", d / "model.bin"),
        table=d / "kl.table",
        inputs=[edgecal.TensorInput(d / "samples.txt", shape=SHAPES[name])],
        threads=1,
        **kw,
    )
    return v.results[0].to_dict()


def test_tune_a_ctc_recogniser_for_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = TASKS / "ctc"
    ctc = [
        "--metric",
        "ctc",
        "--charset",
        str(d / "charset.txt"),
        "--labels",
        str(d / "labels.csv"),
    ]
    # the KL table reads one line wrong; top-1 of the flattened output sees nothing
    kl = kl_validation("ctc", metric="ctc", charset=d / "charset.txt", labels=d / "labels.csv")
    plain = kl_validation("ctc")
    assert kl["metric"]["drop_points"] > 0 and plain["agreement"] == 1.0
    shown: list[str] = []
    for try_methods in ("kl,aciq,mse,p99.9,p99.99,p99.999", "none"):
        out = tmp_path / try_methods.replace(",", "_")
        args = ["-q", "tune", *files("ctc"), *ctc, "--max-drop", "0", "--out-dir", str(out)]
        assert main([*args, "--try-methods", try_methods, "--no-report"]) == 0
        text = capsys.readouterr().out
        tune, val, sens = docs(out)
        figs = tune["metric_figures"]
        line = next(x for x in text.splitlines() if x.startswith("tune:"))
        shown.append(f"ctc, --try-methods {try_methods}: {line} {json.dumps(figs)}")
        assert tune["metric"] == "ctc" and sens["metric"] == "ctc"
        # the drop tune started from and reports is the ctc metric's, of exact-text accuracy
        assert tune["initial"]["drop_points"] == pytest.approx(kl["metric"]["drop_points"])
        assert figs["initial"] == kl["metric"]
        assert tune["final"]["drop_points"] == figs["final"]["drop_points"] <= 0.0
        f = figs["final"]["figures"]
        assert figs["final"]["drop_points"] == pytest.approx(
            100 * (f["accuracy_fp32"] - f["accuracy_int8"])
        )
        assert "tune: drop in metric ctc: " in text
        # the final model's validation document carries the metric, within the target
        assert val["metric"]["name"] == "ctc" and val["metric"]["drop_points"] <= 0.0
        assert tune["target_met"] is True
    print("\n".join(shown))
    # straight to fp32: a layer had to go (the metric made tune act where top-1 would not)
    assert tune["fp32_layers"] and tune["int8_layers"] < tune["quantizable_layers"]


def test_tune_two_outputs_for_the_fidelity_of_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = TASKS / "two"
    tuned = edgecal.tune(
        (d / "model.param", d / "model.bin"),
        [edgecal.TensorInput(d / "samples.txt", shape=SHAPES["two"])],
        table=d / "kl.table",
        metric="fidelity",
        max_drop=0.04,
        threads=1,
        out_dir=tmp_path / "out",
    )
    tune = tuned.tune
    figs = tune["metric_figures"]
    print("two, fidelity:", json.dumps(figs))
    start, end = figs["initial"]["figures"], figs["final"]["figures"]
    # the second output is what int8 hurt most: the drop is its cosine's, not the first's
    assert start["out1.cosine_mean"] < start["out0.cosine_mean"]
    assert tune["initial"]["drop_points"] == pytest.approx(100 * (1 - start["out1.cosine_mean"]))
    assert tune["initial"]["drop_points"] > 0.04
    assert tuned.target_met and tune["final"]["drop_points"] <= 0.04
    least = min(end["out0.cosine_mean"], end["out1.cosine_mean"])
    assert tune["final"]["drop_points"] == pytest.approx(100 * (1 - least))
    assert tuned.board.metric is not None and tuned.board.metric.name == "fidelity"
    assert set(tuned.board.metric.figures) == set(end)
    assert tuned.report is not None and "Metric fidelity" in Path(tuned.report).read_text()


def test_tune_for_the_users_own_callable(tmp_path: Path) -> None:
    """A Python function given to ``edgecal.tune``: it gets every output and the labels' text
    per sample; tune meets the target in its figure."""
    d = TASKS / "ctc"
    seen: list[tuple[int, tuple[str, ...], Any]] = []

    def same_text(fp32: Any, int8: Any, labels: Any) -> dict[str, float]:
        """The user's CTC check: the decoded class paths read the labels' text."""
        seen.append((len(fp32), tuple(fp32[0]), None if labels is None else list(labels)))
        chars = (d / "charset.txt").read_text().splitlines()

        def read(o: dict[str, np.ndarray]) -> str:
            best = np.argmax(o["out0"].reshape(-1, o["out0"].shape[-1]), axis=1)
            keep = np.r_[True, best[1:] != best[:-1]]
            return "".join(chars[c - 1] for c in best[keep] if c != 0)

        ok = [[read(o) == y for o, y in zip(side, labels, strict=True)] for side in (fp32, int8)]
        return {"primary": float(np.mean(ok[1])), "primary_fp32": float(np.mean(ok[0]))}

    tuned = edgecal.tune(
        (d / "model.param", d / "model.bin"),
        [edgecal.TensorInput(d / "samples.txt", shape=SHAPES["ctc"])],
        table=d / "kl.table",
        labels=d / "labels.csv",
        metric=same_text,
        max_drop=0.0,
        threads=1,
        out_dir=tmp_path / "out",
        report=False,
    )
    tune = tuned.tune
    print("user metric:", tune["metric"], json.dumps(tune["metric_figures"]))
    truth = [line.split(",", 1)[1] for line in (d / "labels.csv").read_text().splitlines()[1:]]
    assert seen and all(s[1] == ("out0",) for s in seen)  # every output (this model has one)
    assert seen[0][0] == 12 and seen[0][2] == truth
    assert tune["metric"].endswith("same_text")
    builtin = kl_validation("ctc", metric="ctc", charset=d / "charset.txt", labels=d / "labels.csv")
    assert tune["initial"]["drop_points"] == pytest.approx(builtin["metric"]["drop_points"])
    assert tuned.target_met and tune["final"]["drop_points"] <= 0.0
    assert tuned.board.metric is not None and tuned.board.metric.drop_points <= 0.0


def test_ranking_images_of_a_ctc_tune_start_from_the_lines_int8_misread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """132 images (the 12 samples, 11 times): candidates are ranked on 64 of them, chosen by the
    metric (the lines a variant misread first), and every reported figure is on all 132."""
    from edgecal.workflows import scoring

    chosen: list[tuple[np.ndarray, list[int]]] = []

    def spy(harm: np.ndarray, **kw: Any) -> list[int]:
        got = metric_ranking_subset(harm, **kw)
        chosen.append((harm.copy(), got))
        return got

    monkeypatch.setattr(scoring, "metric_ranking_subset", spy)
    d = TASKS / "ctc"
    lines = [str(d / x) for x in (d / "samples.txt").read_text().split()] * 11
    (tmp_path / "many.txt").write_text("\n".join(lines) + "\n")
    tuned = edgecal.tune(
        (d / "model.param", d / "model.bin"),
        [edgecal.TensorInput(tmp_path / "many.txt", shape=SHAPES["ctc"])],
        table=d / "kl.table",
        metric="ctc",
        charset=d / "charset.txt",
        try_methods="none",
        max_drop=0.0,
        threads=1,
        out_dir=tmp_path / "out",
        report=False,
    )
    tune = tuned.tune
    print("ctc, 132 images:", json.dumps(tune["ranking"]), json.dumps(tune["final"]))
    assert tune["ranking"]["images"] == 64 and tune["ranking"]["of"] == 132
    assert "lost the most of the metric" in tune["ranking"]["how"]
    assert tune["ranking"]["variants"] > 0
    # the KL table misreads one sample: 11 of the 132 images
    assert tune["initial"]["drop_points"] == pytest.approx(100 * 11 / 132)
    assert tuned.target_met and tuned.board.n_samples == 132
    assert tune["metric_figures"]["final"]["figures"]["exact_agreement"] == 1.0
    # the ranking images: the 11 copies of the misread line, then a sample of the others
    ((harm, idx),) = chosen
    misread = np.flatnonzero(harm > 0).tolist()
    assert len(misread) == 11 and len({i % 12 for i in misread}) == 1
    assert set(misread) <= set(idx) and len(idx) == 64
