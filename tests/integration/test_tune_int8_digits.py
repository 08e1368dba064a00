"""``edgecal tune``'s int8-first objective on the reference digits model (issue 12): tuned on
its 200 held-out test images with their labels to ``--max-drop 0``, starting from the KL
table of the real ncnn2table, which loses points there.  The plain fallback (``--try-methods
none``: fp32 for the most harmful layers, today's behaviour without other scales) gives layers
up; the int8-first tuner meets the same target keeping more layers int8.  Prints the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
PRE = ["--pixel", "GRAY", "--mean", "0", "--norm", "0.00392157", "--shape", "32,32"]


def run_tune(held_out: tuple[Path, Path], out: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    images, labels = held_out
    code = main(
        [
            "-q",
            "tune",
            str(DIGITS / "model.param"),
            str(DIGITS / "model.bin"),
            "--images",
            str(DIGITS / "images.txt"),
            *PRE,
            "--threads",
            "1",
            "--val-images",
            str(images),
            "--labels",
            str(labels),
            "--table",
            str(DIGITS / "kl.table"),
            "--max-drop",
            "0",
            "--out-dir",
            str(out),
            "--no-report",
            *extra,
        ]
    )
    doc = json.loads((out / "tune.json").read_text())
    assert code == (0 if doc["target_met"] else 1)
    return doc  # type: ignore[no-any-return]


def figures(doc: dict) -> str:  # type: ignore[type-arg]
    lat = doc["latency"]
    return (
        f"layers int8 {doc['int8_layers']}/{doc['quantizable_layers']}, drop "
        f"{doc['initial']['drop_points']:.2f} -> {doc['final']['drop_points']:.2f} points, "
        f"latency int8 {lat['int8']['median_ms']:.4f} ms "
        f"(p10-p90 {lat['int8']['p10_ms']:.4f}-{lat['int8']['p90_ms']:.4f}) / fp32 "
        f"{lat['fp32']['median_ms']:.4f} ms "
        f"(p10-p90 {lat['fp32']['p10_ms']:.4f}-{lat['fp32']['p90_ms']:.4f}), "
        f"{doc['evaluations']} variants, start {doc.get('start_method')}"
    )


def test_int8_first_keeps_more_layers_int8_than_the_plain_fallback(
    held_out: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = run_tune(held_out, tmp_path / "plain", "--try-methods", "none")
    first = run_tune(held_out, tmp_path / "first", "--try-methods", "kl,aciq")
    capsys.readouterr()
    with capsys.disabled():
        print(f"\ndigits, plain fallback: {figures(plain)}")
        print(f"digits, int8 first:     {figures(first)}")
    assert plain["initial"]["drop_points"] > 0  # the KL table loses points on these images
    assert first["target_met"] and first["final"]["drop_points"] <= 0
    assert first["int8_layers"] > plain["int8_layers"]
    assert first["quantizable_layers"] == plain["quantizable_layers"]
    assert first["disk_bytes"]["run_dir"] > 0 and first["ranking"]["of"] == 200
    for doc in (plain, first):
        assert set(doc["latency"]) == {"int8", "fp32"} and doc["latency"]["int8"]["runs"] == 200


def test_time_budget_bounds_the_ranking(held_out: tuple[Path, Path], tmp_path: Path) -> None:
    """--time-budget 0: the start tables are scored, then nothing more (no ranking); the
    best model found is still validated and written, and tune says why it stopped."""
    doc = run_tune(held_out, tmp_path / "b", "--try-methods", "none", "--time-budget", "0")
    assert not doc["target_met"] and "time budget of 0 s is spent" in doc["reason"]
    assert doc["evaluations"] == 1 and doc["steps"] == []
    assert doc["ranking"]["variants"] == 0
    assert not (tmp_path / "b" / "sensitivity.json").exists()  # nothing was ranked
    assert main(["-q", "report", str(tmp_path / "b")]) == 0  # the report says it is missing
