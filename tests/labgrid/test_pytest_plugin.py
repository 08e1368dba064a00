"""The pytest plugin: README's example, as written, run by pytest in a folder of its own on an
emulated board through a labgrid place (the farm of tests/labgrid/conftest.py) -- it passes with
the sample model's good int8 model and fails, showing the figures, with a broken one (a table
whose ``convrelu_0`` scale is x40: agreement 0, measured).  Four test images, ~10 s a run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgecal
from tests.boards.test_board_calibrate import report
from tests.labgrid.farm import Farm
from tests.labgrid.test_labgrid_places import holder

pytestmark = [pytest.mark.board, pytest.mark.labgrid]
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
PREP = dict(pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48))
N_IMAGES = 4
BROKEN_LAYER, BROKEN_FACTOR = "convrelu_0", 40.0


def readme_example() -> tuple[str, str]:
    """(file name, code) of README's pytest example."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Board farms and pytest", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    m = re.match(r"# (test_\w+\.py) -- ", code)
    assert m, code
    return m[1], code


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """good: KL on this machine; broken: the same with convrelu_0's scale x40."""
    d = tmp_path_factory.mktemp("tables")
    model = (SAMPLE / "model.param", SAMPLE / "model.bin")
    good = d / "good.table"
    edgecal.calibrate(model, edgecal.ImageInput(SAMPLE / "calib.txt", **PREP), out=good)
    lines = []
    for line in good.read_text().splitlines(keepends=True):
        key, *values = line.split()
        if key == BROKEN_LAYER:
            line = f"{key} {float(values[0]) * BROKEN_FACTOR:f} \n"
        lines.append(line)
    broken = d / "broken.table"
    broken.write_text("".join(lines))
    return {"good": good, "broken": broken}


def project(folder: Path, table: Path) -> Path:
    """A user's folder for the example: the sample model, 4 test images, labels and the int8
    model quantized with ``table``; the test file copied from the README."""
    folder.mkdir()
    for name in ("model.param", "model.bin", "labels.csv"):
        (folder / name).symlink_to(SAMPLE / name)
    (folder / "test").mkdir()
    for p in sorted((SAMPLE / "test").glob("*.png"))[:N_IMAGES]:
        (folder / "test" / p.name).symlink_to(p)
    edgecal.quantize(
        (SAMPLE / "model.param", SAMPLE / "model.bin"),
        folder / "int8.param",
        folder / "int8.bin",
        table=table,
    )
    name, code = readme_example()
    (folder / name).write_text(code)
    (folder / "pytest.ini").write_text("[pytest]\n")  # a project of its own
    return folder / name


def run_pytest(test_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", test_file.name, *args],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_readme_example_passes_on_a_place(
    farm: Farm, farm_boards: Path, tables: dict[str, Path], tmp_path: Path
) -> None:
    test_file = project(tmp_path / "good", tables["good"])
    r = run_pytest(
        test_file, "--edgecal-device", "labgrid:lab-emu1", "--edgecal-boards", str(farm_boards)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    assert holder(farm, "lab-emu1") == "None"


def test_readme_example_fails_with_the_figures_when_int8_is_broken(
    farm: Farm,
    farm_boards: Path,
    tables: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    test_file = project(tmp_path / "broken", tables["broken"])
    r = run_pytest(
        test_file, "--edgecal-device", "labgrid:lab-emu1", "--edgecal-boards", str(farm_boards)
    )
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "1 failed" in out
    assert "assert val.top1_drop <= 0.3" in out  # pytest's own explanation
    figures = out.split("edgecal figures", 1)[1]
    report(capsys, "[pytest plugin, broken int8] " + figures.split("=====", 1)[0].strip())
    assert f"{N_IMAGES} images on labgrid:lab-emu1 (runtime deployed" in figures
    m = re.search(r"^int8 vs fp32 top-1 agreement: ([\d.]+)$", figures, re.M)
    assert m and float(m[1]) < 0.5, figures
    layer = re.search(rf"^{BROKEN_LAYER}\s+\S+\s+([\d.-]+)\s+([\d.-]+)\s+([\d.-]+)", figures, re.M)
    assert layer and float(layer[1]) < 0.9, figures  # its cosine, per layer as `validate`
    assert holder(farm, "lab-emu1") == "None"


def test_edgecal_check_fails_with_the_gate_table(
    farm: Farm, farm_boards: Path, tables: dict[str, Path], tmp_path: Path
) -> None:
    """The example's gate alone (no top-1 assert) on the broken model: the check's rows."""
    test_file = project(tmp_path / "gate", tables["broken"])
    test_file.write_text(test_file.read_text().replace("    assert val.top1_drop <= 0.3\n", ""))
    r = run_pytest(
        test_file, "--edgecal-device", "labgrid:lab-emu1", "--edgecal-boards", str(farm_boards)
    )
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "edgecal check failed:" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("labgrid:lab-emu1 ")]
    assert any("agreement" in ln and "FAIL" in ln for ln in rows), out
    assert any("cosine" in ln and "FAIL" in ln for ln in rows), out
    assert re.search(rf"^{BROKEN_LAYER}\s", out, re.M), out  # and the per-layer figures


@pytest.mark.parametrize("place", ["lab-emu4", "ph-phone1"])
def test_readme_example_on_labgrids_own_target(
    farm: Farm,
    farm_boards: Path,
    tables: dict[str, Path],
    tmp_path: Path,
    place: str,
    request: pytest.FixtureRequest,
) -> None:
    """With labgrid's pytest plugin (``--lg-env``: a target whose RemotePlace this user holds,
    as labgrid's workflow has it) and no ``--edgecal-device``: the device is that place, used
    as it is and left acquired -- a board place, and a phone place (adb over TCP)."""
    if place.startswith("ph-"):
        request.getfixturevalue("phone_places")  # the phones' places exported
    test_file = project(tmp_path / "target", tables["good"])
    env = tmp_path / "env.yaml"
    env.write_text(
        f"targets:\n  main:\n    resources:\n      RemotePlace:\n        name: {place}\n"
    )
    farm.client("-p", place, "acquire")  # this user, as the test run's
    try:
        r = run_pytest(
            test_file,
            "--lg-env",
            str(env),
            "--lg-coordinator",
            farm.address,
            "--edgecal-boards",
            str(farm_boards),
            "-v",
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 passed" in r.stdout
        assert holder(farm, place) != "None"  # the user's, still
    finally:
        farm.client("-p", place, "release")
    assert holder(farm, place) == "None"


def test_device_fixture_and_validate_share_the_place(
    farm: Farm, farm_boards: Path, tables: dict[str, Path], tmp_path: Path
) -> None:
    """``edgecal_device`` holds the place for the session; a validation in that session uses
    the same lease (one process, one place); the place is released at the end."""
    test_file = project(tmp_path / "device", tables["good"])
    test_file.write_text(
        test_file.read_text()
        + "\n\ndef test_the_device(edgecal_device, edgecal_device_name, edgecal_validate):\n"
        "    assert edgecal_device_name == 'labgrid:lab-emu4'\n"
        "    assert edgecal_device.hello()['machine'] == 'aarch64'\n"
        "    val = edgecal_validate(MODEL, INT8, inputs=IMAGES, labels='labels.csv')\n"
        "    assert val.results[0].device['name'] == 'labgrid:lab-emu4'\n"
    )
    r = run_pytest(
        test_file, "--edgecal-device", "labgrid:lab-emu4", "--edgecal-boards", str(farm_boards)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    assert holder(farm, "lab-emu4") == "None"
