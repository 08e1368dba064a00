"""Task metrics on real models of each kind, on the local device: a CTC text recogniser, a
probability-map model, a two-output model (tests/data/tasks, made by its make/make_tasks.py),
the reference digits classifier, and the README's own-metric example."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgecal
from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "data" / "tasks"
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
SHAPES = {"ctc": (64, 16, 1), "seg": (32, 32, 1), "two": (16, 16, 3)}


def run(name: str, **kw: Any) -> dict[str, Any]:
    """``edgecal.validate`` of ``name``'s model and its KL table over its samples: the board's
    document."""
    d = TASKS / name
    v = edgecal.validate(
        (d / "model.param", d / "model.bin"),
        table=d / "kl.table",
        inputs=[edgecal.TensorInput(d / "samples.txt", shape=SHAPES[name])],
        **kw,
    )
    return v.results[0].to_dict()


def cli(name: str, *extra: str) -> list[str]:
    d = TASKS / name
    shape = ",".join(map(str, SHAPES[name]))
    files = [str(d / "model.param"), str(d / "model.bin"), "--table", str(d / "kl.table")]
    return [*files, "--npy", str(d / "samples.txt"), "--shape", shape, *extra]


def test_ctc_recogniser_reads_its_labels(capsys: pytest.CaptureFixture[str]) -> None:
    d = TASKS / "ctc"
    doc = run("ctc", metric="ctc", charset=d / "charset.txt", labels=d / "labels.csv")
    m = doc["metric"]
    f = m["figures"]
    print("ctc:", json.dumps(m))
    assert m["name"] == "ctc" and doc["top1_fp32"] is None  # text labels: no class top-1
    # the decoding is right: fp32 reads (nearly) every line's text
    assert f["accuracy_fp32"] >= 0.75 and m["primary_fp32"] == f["accuracy_fp32"]
    assert m["primary"] == f["accuracy_int8"]
    assert m["drop_points"] == pytest.approx(100 * (f["accuracy_fp32"] - f["accuracy_int8"]))
    assert 0.0 <= f["exact_agreement"] <= 1.0 and doc["cosine_mean"] < 1.0
    # without labels: agreement-style
    plain = run("ctc", metric="ctc", charset=d / "charset.txt")["metric"]
    assert plain["primary_fp32"] is None
    assert plain["primary"] == f["exact_agreement"]
    assert plain["drop_points"] == pytest.approx(100 * (1 - f["exact_agreement"]))


def test_ctc_through_the_command_line_and_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = TASKS / "ctc"
    opts = ["--metric", "ctc", "--charset", str(d / "charset.txt")]
    opts += ["--labels", str(d / "labels.csv")]
    base = tmp_path / "base.json"
    assert main(["-q", "validate", *cli("ctc", *opts), "--save-baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"metric ctc: int8 \d\.\d{4} \(fp32 \d\.\d{4}\), drop -?\d+\.\d\d points", out)
    saved = json.loads(base.read_text())["results"][0]["metric"]
    gate = ["-q", "check", *cli("ctc", *opts), "--baseline", str(base), "--json"]
    assert main([*gate, "--max-metric-drop", "100"]) == 0
    report = json.loads(capsys.readouterr().out)
    checks = {r["check"]: r for r in report["rows"]}
    assert checks["metric_drop"]["value"] == pytest.approx(saved["drop_points"])
    assert checks["metric ctc"]["baseline"] == pytest.approx(saved["primary"])
    # a drop the model exceeds fails the gate (exit 3) when int8 lost points
    if saved["drop_points"] > 0:
        assert main([*gate, "--max-metric-drop", "0"]) == 3
        capsys.readouterr()


def test_probability_map_iou() -> None:
    doc = run("seg", metric="iou")
    m = doc["metric"]
    print("seg:", json.dumps(m))
    f = m["figures"]
    assert m["primary"] == f["iou_mean"] and f["threshold"] == 0.3
    assert 0.5 < f["iou_min"] <= f["iou_mean"] <= 1.0
    assert m["drop_points"] == pytest.approx(100 * (1 - f["iou_mean"]))
    strict = run("seg", metric="iou", iou_threshold=0.9)["metric"]["figures"]
    assert strict["threshold"] == 0.9 and 0.0 <= strict["iou_mean"] <= 1.0


def test_two_outputs_fidelity_sees_both() -> None:
    doc = run("two", metric="fidelity")
    m = doc["metric"]
    print("two:", json.dumps(m))
    f = m["figures"]
    assert {"out0.cosine_mean", "out1.cosine_mean", "out0.sqnr_db", "out1.sqnr_db"} <= set(f)
    assert m["primary"] == pytest.approx(min(f["out0.cosine_mean"], f["out1.cosine_mean"]))
    # out0 is the output validate always compared: the same figure
    assert f["out0.cosine_mean"] == pytest.approx(doc["cosine_mean"], abs=1e-9)
    assert f["out1.cosine_mean"] < 1.0  # the second output came back, int8 changed it


def test_top1_on_a_classifier_and_the_default_document(tmp_path: Path) -> None:
    y = np.load(DIGITS / "calib_labels.npz")["y"]
    names = sorted(p.name for p in (DIGITS / "images").iterdir())
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,label\n" + "".join(f"{n},{int(v)}\n" for n, v in zip(names, y, strict=True))
    )
    image = edgecal.ImageInput(DIGITS / "images.txt", pixel="GRAY", norm=(0.00392157,))
    model = (DIGITS / "model.param", DIGITS / "model.bin")
    plain = edgecal.validate(model, table=DIGITS / "kl.table", inputs=image, labels=labels)
    top1 = edgecal.validate(
        model, table=DIGITS / "kl.table", inputs=image, labels=labels, metric="top1"
    )
    a, b = plain.results[0].to_dict(), top1.results[0].to_dict()
    assert "metric" not in a
    m = b.pop("metric")
    assert m["primary"] == b["top1_int8"] and m["primary_fp32"] == b["top1_fp32"]
    assert m["figures"]["agreement"] == b["agreement"]
    assert m["drop_points"] == pytest.approx(plain.top1_drop)
    assert top1.metric_drop == pytest.approx(plain.top1_drop) and plain.metric_drop is None
    for doc in (a, b):  # the rest is the same document (latency aside)
        for key in ("latency_fp32_ms", "latency_int8_ms", "latency_fp32", "latency_int8"):
            doc.pop(key)
    assert a == b


def readme_metric() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(# my_metrics\.py.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one own-metric example"
    return blocks[0]


def test_the_readme_own_metric_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my_metrics.py").write_text(readme_metric(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert (
        main(["-q", "validate", *cli("ctc", "--metric", "my_metrics.py:same_path", "--json")]) == 0
    )
    m = json.loads(capsys.readouterr().out)["results"][0]["metric"]
    print("readme metric:", json.dumps(m))
    assert m["name"] == "my_metrics.py:same_path" and m["figures"] == {"samples": 12.0}
    assert 0.0 <= m["primary"] <= 1.0 and m["primary_fp32"] is None
    # the same function through the API, imported from sys.path
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_metrics  # type: ignore[import-not-found]

    api = run("ctc", metric=my_metrics.same_path)["metric"]
    assert api["primary"] == m["primary"] and api["name"].endswith("same_path")
    assert run("ctc", metric="my_metrics:same_path")["metric"]["primary"] == m["primary"]


def test_a_dynamic_model_whose_outputs_change_size(tmp_path: Path) -> None:
    """A fully convolutional model fed samples of two sizes: the metric gets each sample's own
    shapes (validate used to fail stacking them)."""
    src = TASKS / "seg" / "samples"
    np.save(tmp_path / "a.npy", np.load(src / "s00.npy"))
    np.save(tmp_path / "b.npy", np.load(src / "s01.npy")[:, :24, :20])
    (tmp_path / "list.txt").write_text("a.npy\nb.npy\n")
    d = TASKS / "seg"
    v = edgecal.validate(
        (d / "model.param", d / "model.bin"),
        table=d / "kl.table",
        inputs=[edgecal.TensorInput(tmp_path / "list.txt")],
        metric="fidelity",
    )
    r = v.results[0]
    assert r.n_samples == 2 and r.int8_outputs is not None
    assert r.int8_outputs.shape == (2, 32 * 32)  # the smaller one padded with zeros
    assert r.metric is not None
    assert r.metric.figures["out0.cosine_mean"] == pytest.approx(r.cosine_mean, abs=1e-9)
