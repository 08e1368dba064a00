"""The calibration run directory: shard plans, manifests, shard results and their accounting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecal.errors import CalibrationError, InputFileError
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.runs.calibrun import (
    CalibRun,
    Manifest,
    Part,
    build_manifest,
    check_accounting,
    check_unchanged,
    first_shard_size,
    part_bytes,
    plan_shards,
    read_part,
    source_of,
)

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"


@given(st.integers(0, 5000), st.integers(1, 64), st.integers(1, 512))
def test_plan_covers_every_sample_once(n: int, first: int, largest: int) -> None:
    plan = plan_shards(n, first, largest)
    assert sum(c for _, c in plan) == n
    assert [s for s, _ in plan] == [sum(c for _, c in plan[:k]) for k in range(len(plan))]
    assert all(1 <= c <= max(first, largest) for _, c in plan)


@given(st.integers(0, 5000), st.integers(1, 64), st.integers(1, 512), st.integers(2, 8))
def test_fleet_plan_shrinks_towards_the_end(n: int, first: int, largest: int, workers: int) -> None:
    plan = plan_shards(n, first, largest, workers)
    assert sum(c for _, c in plan) == n
    assert [s for s, _ in plan] == [sum(c for _, c in plan[:k]) for k in range(len(plan))]
    for start, count in plan:  # never more than a 2 x workers share of what is left
        assert 1 <= count <= max(max(1, first // 4), -(-(n - start) // (2 * workers)))
    if n >= 8 * first * workers:  # a long pass ends in small shards
        assert plan[-1][1] <= max(1, first // 4) or plan[-2][1] <= max(1, first // 4)


def test_first_shard_size_feeds_every_worker() -> None:
    assert first_shard_size(1000, 1) == 32
    assert first_shard_size(40, 2) == 5  # 8 shards to start with for two boards
    assert first_shard_size(3, 4) == 1


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    d = tmp_path_factory.mktemp("imgs")
    for i, p in enumerate(sorted((DIGITS / "images").iterdir())[:20]):
        (d / f"img_{i:02d}.png").write_bytes(p.read_bytes())
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    spec = InputSpec(blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,))
    source = make_sample_source([spec], [read_list(d)])
    return build_manifest(
        model,
        source,
        method="kl",
        runtime="calibration",
        threads=1,
        histograms=True,
        options={"out": "x.table"},
        workers=2,
    )


def test_manifest_round_trip_and_source(manifest: Manifest) -> None:
    assert manifest.n_samples == 20 and sum(s.count for s in manifest.shards) == 20
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())), "m.json")
    assert again == manifest
    src = source_of(again)
    assert src.n_samples == 20 and src.specs[0].pixel == "GRAY"


@pytest.mark.parametrize("breaks", ["schema", "gap", "length", "type"])
def test_bad_manifests_are_named(manifest: Manifest, breaks: str) -> None:
    d = manifest.to_dict()
    if breaks == "schema":
        d["schema"] = 99
    elif breaks == "gap":
        d["shards"][1]["start"] += 1
    elif breaks == "length":
        d["samples"][0]["sha256"].pop()
    else:
        d["shards"] = "all"
    with pytest.raises(InputFileError, match=r"m\.json"):
        Manifest.from_dict(d, "m.json")


def test_changed_image_or_model_is_refused(manifest: Manifest, tmp_path: Path) -> None:
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    check_unchanged(manifest, model, "run")
    victim = Path(manifest.samples[0][3])
    old = victim.read_bytes()
    try:
        victim.write_bytes(old + b"\0")
        with pytest.raises(CalibrationError, match="changed since the run started"):
            check_unchanged(manifest, model, "run")
    finally:
        victim.write_bytes(old)
    other = load_model(
        ROOT / "tests/data/reference/npy/model.param", ROOT / "tests/data/reference/npy/model.bin"
    )
    with pytest.raises(CalibrationError, match="the model changed"):
        check_unchanged(manifest, other, "run")


def _parts(manifest: Manifest, blobs: list[str]) -> list[Part]:
    return [
        Part(
            "histogram",
            s.index,
            s.count,
            s.digest,
            "b",
            f"j{s.index}",
            blobs,
            {b: np.full(2048, s.index, np.uint64) for b in blobs},
        )
        for s in manifest.shards
    ]


def test_parts_round_trip_and_accounting(manifest: Manifest, tmp_path: Path) -> None:
    run = CalibRun.create(tmp_path / "run", manifest, ["edgecal", "calibrate"])
    blobs = ["a", "b"]
    for p in _parts(manifest, blobs):
        run.write(p)
    back = run.parts("histogram")
    check_accounting(manifest, back, "histogram", blobs, "run")
    assert [p.index for p in back] == [s.index for s in manifest.shards]
    assert int(back[-1].values["b"][0]) == back[-1].index
    absmax = Part(
        "absmax",
        0,
        manifest.shards[0].count,
        manifest.shards[0].digest,
        "b",
        "j",
        blobs,
        {"a": (np.float32(1.5), 7), "b": (np.float32(0.25), 9)},
    )
    (tmp_path / "p.npz").write_bytes(part_bytes(absmax))
    got = read_part(tmp_path / "p.npz")
    assert got.values == {"a": (np.float32(1.5), 7), "b": (np.float32(0.25), 9)}
    with pytest.raises(CalibrationError, match=r"in use by another edgecal calibrate \(pid"):
        CalibRun.create(tmp_path / "run", manifest, ["edgecal"])  # the first one holds it
    run.close()
    with pytest.raises(CalibrationError, match="already holds"):
        CalibRun.create(tmp_path / "run", manifest, ["edgecal"])


def test_accounting_catches_missing_foreign_and_miscounted_shards(manifest: Manifest) -> None:
    blobs = ["a"]
    parts = _parts(manifest, blobs)
    with pytest.raises(CalibrationError, match="missing for shards"):
        check_accounting(manifest, parts[:-1], "histogram", blobs, "run")
    with pytest.raises(CalibrationError, match="answered twice"):
        check_accounting(manifest, [*parts, parts[0]], "histogram", blobs, "run")
    forged = [
        *parts[:-1],
        Part(
            "histogram",
            parts[-1].index,
            parts[-1].count,
            "0" * 64,
            "b",
            "j",
            blobs,
            parts[-1].values,
        ),
    ]
    with pytest.raises(CalibrationError, match="for other images"):
        check_accounting(manifest, forged, "histogram", blobs, "run")
    with pytest.raises(CalibrationError, match="covers blobs"):
        check_accounting(manifest, parts, "histogram", ["a", "z"], "run")


def test_torn_part_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "00000.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(InputFileError, match="delete it"):
        read_part(tmp_path / "00000.npz")
