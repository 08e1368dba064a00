"""edgecal as a user installs it: the built wheel in a fresh venv outside the checkout.

The wheel is built from this checkout (``pip wheel --no-deps``) and installed with its
dependencies into a new venv in a temporary folder; every command then runs from a folder
that is not the checkout, with no ``PYTHONPATH``, so nothing of the checkout can be imported
by accident.  What a checkout reads from its own folders (board profiles, the agent's files)
must come from the installed package, and the wheel may install no generic top-level name.

The board run uses ``emu1`` of ``EDGECAL_BOARDS`` (an emulated board, see
``tests/boards/test_board_calibrate.py``): skipped on a developer's machine without it, a
failure under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.boards.test_board_calibrate import (
    REF,
    need,
)

pytestmark = [pytest.mark.board, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        cwd=out,
        capture_output=True,
    )
    (path,) = out.glob("edgecal-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (and its dependencies from the package index) installed."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    r = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        cwd=env_dir,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return env_dir


def run_installed(env_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "EDGECAL_PROFILES", "VIRTUAL_ENV")
    }
    return subprocess.run(
        [str(env_dir / "bin" / "edgecal"), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_wheel_installs_only_our_names(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"edgecal", "edgecal_agent"}
    assert any(n.startswith("edgecal/boards/profiles/") and n.endswith(".toml") for n in names)
    assert "edgecal/py.typed" in names
    templates = Path(ROOT, "edgecal", "report", "templates")  # the report page's
    shipped = {p.relative_to(ROOT).as_posix() for p in templates.rglob("*") if p.is_file()}
    assert len(shipped) >= 3 and shipped <= set(names)


def test_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import edgecal, edgecal_agent, edgecal.boards.config as b; "
            "print(edgecal.__file__); print(edgecal_agent.__file__); "
            "print(sorted(p.stem for p in b.profiles_dir().glob('*.toml')))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for line in lines[:2]:
        assert str(installed) in line and str(ROOT) not in line
    assert "raspberry-pi-4" in lines[2] and "emulated-pi4" in lines[2]


def test_installed_wheel_calibrates_on_a_board(
    installed: Path,
    boards_file: Path,
    tmp_path: Path,
) -> None:
    """The deployed runtime reads the board's profile (emulated-pi4) from the package."""
    need(boards_file, "emu1")
    images = tmp_path / "images.txt"
    images.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(4)))
    out = tmp_path / "emu1.table"
    r = run_installed(
        installed,
        tmp_path,
        "-q",
        "calibrate",
        str(REF / "model.param"),
        str(REF / "model.bin"),
        "--images",
        str(images),
        "--pixel",
        "GRAY",
        "--mean",
        "0",
        "--norm",
        "0.00392157",
        "--shape",
        "32,32",
        "--device",
        "emu1",
        "--boards",
        str(boards_file),
        "--runtime",
        "deployed",
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["n_samples"] == 4 and doc["device"]
    assert out.read_text().count("\n") > 5
    r = run_installed(
        installed, tmp_path, "board", "check", "emu1", "--boards", str(boards_file), "--json"
    )
    assert r.returncode == 0, r.stderr
    (report,) = json.loads(r.stdout)
    assert report["ok"], report


def test_installed_wheel_writes_a_report(installed: Path, tmp_path: Path) -> None:
    """The report page's templates come from the package (package data), not the checkout."""
    from tests.unit.test_report import make_run

    run = make_run(tmp_path / "run")
    r = run_installed(installed, tmp_path, "report", str(run.path))
    assert r.returncode == 0, r.stderr
    page = (run.path / "report.html").read_text(encoding="utf-8")
    assert page.count("<section id=") == 7 and page.count("data:image/png;base64,") == 6
    assert "&lt;script&gt;" in page and "<script" not in page


def test_user_profiles_from_edgecal_profiles(installed: Path, tmp_path: Path) -> None:
    """``EDGECAL_PROFILES`` points at a user's own profiles instead of the shipped ones."""
    mine = tmp_path / "profiles"
    mine.mkdir()
    shipped = ROOT / "edgecal" / "boards" / "profiles" / "raspberry-pi-4.toml"
    (mine / "my-board.toml").write_text(
        shipped.read_text().replace('name = "raspberry-pi-4"', 'name = "my-board"')
    )
    code = (
        "from edgecal.boards.config import load_profile; p = load_profile('my-board'); "
        "print(p.name, p.source)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["EDGECAL_PROFILES"] = str(mine)
    r = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["my-board", str(mine / "my-board.toml")]
