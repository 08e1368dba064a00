"""What the API takes besides its plain forms, on the sample model (8 images): one results path
for ``check`` (not a list), any iterable of inputs (read once), ``bytes`` paths, a progress
factory that gives None; and every result an exported function returns has ``to_dict()``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import edgecal
from edgecal.quality.gate import to_json

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
MODEL = (str(SAMPLE / "model.param"), str(SAMPLE / "model.bin"))
PREP: dict[str, Any] = dict(pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("accepted")
    calib, test = d / "calib.txt", d / "test.txt"
    calib.write_text("".join(f"{SAMPLE / 'calib' / f'calib_00{i}.png'}\n" for i in range(8)))
    test.write_text("".join(f"{SAMPLE / 'test' / f'test_00{i}.png'}\n" for i in range(8)))
    table, hist, saved = d / "kl.table", d / "kl.npz", d / "b.json"
    edgecal.calibrate(MODEL, edgecal.ImageInput(calib, **PREP), out=table, histograms_out=hist)
    edgecal.validate(
        MODEL, table=table, inputs=edgecal.ImageInput(test, **PREP), save_baseline=saved
    )
    return {"dir": d, "calib": calib, "test": test, "table": table, "hist": hist, "saved": saved}


@pytest.mark.parametrize("as_given", [str, Path], ids=["str", "Path"])
def test_check_takes_one_results_path(files: dict[str, Path], as_given: Any) -> None:
    report = edgecal.check(
        as_given(files["saved"]), thresholds=edgecal.Thresholds(min_agreement=0.5)
    )
    assert report.passed
    assert report.current_source == str(files["saved"])


def test_check_report_to_dict_is_the_json_out_document(files: dict[str, Path]) -> None:
    report = edgecal.check([files["saved"]], thresholds=edgecal.Thresholds(min_agreement=0.5))
    doc = report.to_dict()
    assert doc == to_json(report)
    assert doc["passed"] is True and doc["n_checks"] == len(report.rows)
    json.dumps(doc)


def test_table_from_histograms_to_dict(files: dict[str, Path]) -> None:
    out = files["dir"] / "aciq.table"
    made = edgecal.table_from_histograms(files["hist"], method="aciq", out=out)
    doc = made.to_dict()
    json.dumps(doc)
    assert doc["method"] == "aciq" and doc["table"] == str(out)
    assert doc["warnings"] == made.warnings
    assert [d["name"] for d in doc["layers"]] == [i.name for i in made.build.per_layer]
    first = made.build.per_layer[0]
    assert doc["layers"][0]["scale"] == pytest.approx(float(first.scale))
    assert set(doc["layers"][0]["candidates"]) >= {"kl", "aciq"}


def test_any_iterable_of_inputs_is_read_once(files: dict[str, Path]) -> None:
    image = edgecal.ImageInput(files["calib"], **PREP)
    out = files["dir"] / "gen.table"
    edgecal.calibrate(MODEL, (i for i in [image]), out=out)
    assert out.read_bytes() == files["table"].read_bytes()


def test_bytes_paths_are_taken_as_the_file_system_decodes_them(files: dict[str, Path]) -> None:
    out = files["dir"] / "bytes.table"
    edgecal.calibrate(
        tuple(os.fsencode(p) for p in MODEL),  # type: ignore[arg-type]
        edgecal.ImageInput(os.fsencode(files["calib"]), **PREP),  # type: ignore[arg-type]
        out=os.fsencode(out),  # type: ignore[arg-type]
    )
    assert out.read_bytes() == files["table"].read_bytes()


def test_a_progress_factory_giving_none_shows_no_progress(files: dict[str, Path]) -> None:
    tasks: list[tuple[str, int]] = []

    def factory(description: str, total: int) -> None:
        tasks.append((description, total))

    out = files["dir"] / "quiet.table"
    edgecal.calibrate(
        MODEL,
        edgecal.ImageInput(files["calib"], **PREP),
        out=out,
        progress=factory,  # type: ignore[arg-type]
    )
    assert tasks and out.read_bytes() == files["table"].read_bytes()
