"""The application layer called from Python (no command line) on the sample model: validate,
check, tune, report and open_device give what the CLI gives for the same inputs (its ``--json``
documents, or the run directory's files), timings aside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgecal.api.boards import open_device, resolve_boards
from edgecal.api.check import check
from edgecal.api.report import write_report
from edgecal.api.tune import tune
from edgecal.api.validate import validate
from edgecal.cli.main import main
from edgecal.errors import UsageError
from edgecal.inputs.spec import ImageInput
from edgecal.quality.gate import Thresholds, to_json

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
MODEL = (str(SAMPLE / "model.param"), str(SAMPLE / "model.bin"))
PRE = [
    "--pixel",
    "RGB",
    "--mean",
    "127.5,127.5,127.5",
    "--norm",
    "0.00784314,0.00784314,0.00784314",
    "--shape",
    "48,48",
]
N_CALIB = 40
N_TEST = 60
# disk_bytes: the documents hold timings, so their sizes vary too
VOLATILE = ("latency", "_ms", "seconds", "timings", "disk_bytes")


def image_input(samples: Path) -> ImageInput:
    """The sample model's preprocessing (the Makefile's demo target)."""
    return ImageInput(
        samples, pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48)
    )


def stable(doc: Any) -> Any:
    """``doc`` without its timings (they differ from run to run)."""
    if isinstance(doc, dict):
        return {k: stable(v) for k, v in doc.items() if not any(s in k for s in VOLATILE)}
    if isinstance(doc, list):
        return [stable(v) for v in doc]
    return doc


def short_list(folder: Path, source: Path, n: int) -> Path:
    lines = (
        source.read_text().splitlines()[:n]
        if source.is_file()
        else sorted(str(p) for p in source.iterdir())[:n]
    )
    out = folder / f"{source.stem}.txt"
    out.write_text("".join(f"{p if Path(p).is_absolute() else SAMPLE / p}\n" for p in lines))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("api")
    calib = short_list(d, SAMPLE / "calib.txt", N_CALIB)
    test = short_list(d, SAMPLE / "test", N_TEST)
    table = d / "kl.table"
    assert main(["-q", "calibrate", *MODEL, "--images", str(calib), *PRE, "--out", str(table)]) == 0
    return {"dir": d, "calib": calib, "test": test, "table": table, "labels": SAMPLE / "labels.csv"}


@pytest.fixture(scope="module")
def cli_validation(files: dict[str, Path]) -> dict[str, Any]:
    out = files["dir"] / "cli-validate.json"
    code = main(
        [
            "-q",
            "validate",
            *MODEL,
            "--table",
            str(files["table"]),
            "--images",
            str(files["test"]),
            *PRE,
            "--labels",
            str(files["labels"]),
            "--threads",
            "1",
            "--save-baseline",
            str(out),
        ]
    )
    assert code == 0
    return {"baseline": out, "doc": json.loads(out.read_text())}


def test_validate_from_python_is_the_cli_document(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes: list[str] = []
    base = tmp_path / "baseline.json"
    run = validate(
        MODEL,
        table=files["table"],
        inputs=image_input(files["test"]),
        labels=files["labels"],
        threads=1,
        sensitivity=True,
        save_baseline=base,
        run_dir=tmp_path / "run",
        say=notes.append,
    )
    assert notes == []  # every preprocessing value given
    assert (
        main(
            [
                "-q",
                "validate",
                *MODEL,
                "--table",
                str(files["table"]),
                "--images",
                str(files["test"]),
                *PRE,
                "--labels",
                str(files["labels"]),
                "--threads",
                "1",
                "--sensitivity",
                "--json",
            ]
        )
        == 0
    )
    cli = json.loads(capsys.readouterr().out)
    assert stable(run.to_dict()) == stable(cli)
    assert run.sensitivity is not None and "sensitivity" in cli
    # the baseline and the run directory hold the validation document (no sensitivity)
    assert json.loads(base.read_text()) == json.loads(json.dumps(run.document()))
    assert "sensitivity" not in run.document()
    assert json.loads((tmp_path / "run" / "validation.json").read_text())["results"]
    assert (tmp_path / "run" / "sensitivity.json").is_file()
    r = cli["results"][0]
    assert run.top1_drop == pytest.approx(100 * (r["top1_fp32"] - r["top1_int8"]))
    assert run.agreement == r["agreement"] and run.diverging == []
    assert r["fp32"]["param"] == MODEL[0] and r["int8"]["table"] == str(files["table"])


def test_validate_says_the_preprocessing_defaults(files: dict[str, Path]) -> None:
    notes: list[str] = []
    with pytest.raises(UsageError, match=r"give either INT8\.param INT8\.bin or --table"):
        validate(MODEL, inputs=ImageInput(files["test"]), say=notes.append)
    assert len(notes) == 1 and "no --pixel/--mean/--norm for image input" in notes[0]


def test_check_from_python_is_the_cli_report(
    files: dict[str, Path],
    cli_validation: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    base = cli_validation["baseline"]
    junit = tmp_path / "junit.xml"
    report = check([base], baseline=base, thresholds=Thresholds(min_agreement=0.9), junit=junit)
    assert report.passed and junit.is_file()
    assert (
        main(
            [
                "check",
                "--results",
                str(base),
                "--baseline",
                str(base),
                "--min-agreement",
                "0.9",
                "--json",
            ]
        )
        == 0
    )
    assert to_json(report) == json.loads(capsys.readouterr().out)
    # a fresh validation, gated against the saved one
    fresh = check(
        baseline=base,
        validation=lambda: validate(
            MODEL,
            table=files["table"],
            inputs=image_input(files["test"]),
            labels=files["labels"],
            threads=1,
        ),
    )
    assert fresh.passed, to_json(fresh)
    with pytest.raises(UsageError, match="nothing to gate"):
        check(baseline=base)


def test_tune_from_python_writes_what_the_cli_writes(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps: list[str] = []
    tuned = tune(
        MODEL,
        image_input(files["calib"]),
        max_drop=100,
        out_dir=tmp_path / "api",
        try_methods="none",
        threads=1,
        report=True,
        steps=steps.append,
    )
    assert tuned.target_met and steps and steps[0].startswith("int8 model: drop")
    assert (
        main(
            [
                "-q",
                "tune",
                *MODEL,
                "--images",
                str(files["calib"]),
                *PRE,
                "--threads",
                "1",
                "--max-drop",
                "100",
                "--try-methods",
                "none",
                "--out-dir",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    cli = tmp_path / "cli"
    api = tuned.to_dict()
    assert stable(api["tune"]) == stable(json.loads((cli / "tune.json").read_text()))
    assert stable(api["validation"]) == stable(json.loads((cli / "validation.json").read_text()))
    assert stable(api["sensitivity"]) == stable(json.loads((cli / "sensitivity.json").read_text()))
    for name in ("calibration.table", "int8.param", "int8.bin"):
        assert (tmp_path / "api" / name).read_bytes() == (cli / name).read_bytes(), name
    assert tuned.report == str(tmp_path / "api" / "report.html")
    # report: the page of a run directory, as `edgecal report --json` says it
    page = write_report(tmp_path / "api", tmp_path / "page.html")
    assert main(["report", str(tmp_path / "api"), "-o", str(tmp_path / "page.html"), "--json"]) == 0
    assert page.to_dict() == json.loads(capsys.readouterr().out)


def test_open_device_by_name() -> None:
    with open_device("local", threads=1) as device:
        assert device.hello()["agent_version"]
    with pytest.raises(UsageError, match="not the local machine"):
        resolve_boards(["local"])
