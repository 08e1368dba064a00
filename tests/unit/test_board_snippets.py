"""The programs the host runs on a board (edgecal/device/board_snippets/), run here the way the
host runs them there -- same argv, local interpreters -- and answered through the host's parsers.
The oldest Python a board may have for the agent (3.9) and, for the probe, Pythons older still
(which it must report, not fail on) are used when this machine has them."""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecal.device.probe import MIN_PYTHON, parse_probe, probe_argv, probe_code, problems
from edgecal.device.snippets import board_snippet
from edgecal.device.ssh.device import hash_argv, parse_hashes
from edgecal.errors import ProtocolError

FOLDER = Path(__file__).resolve().parents[2] / "edgecal" / "device" / "board_snippets"
SNIPPETS = sorted(p.name for p in FOLDER.glob("*.py"))


def interpreter(version: str) -> str | None:
    """Python ``version`` from pyenv's versions or ``python<version>`` on PATH (not a pyenv
    shim: it answers only for the versions selected), if this machine has it."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for d in sorted(root.glob(f"{version}.*")) if root.is_dir() else []:
        if (d / "bin" / "python").is_file():
            return str(d / "bin" / "python")
    found = shutil.which(f"python{version}")
    return found if found and "/shims/" not in found else None


def pythons(*versions: str) -> list[object]:
    """``python3`` (what the boards file names by default) and the versions asked for."""
    out: list[object] = [pytest.param("python3", id="python3")]
    for v in versions:
        exe = interpreter(v)
        out.append(
            pytest.param(
                exe,
                id=f"python{v}",
                marks=pytest.mark.skipif(exe is None, reason=f"no Python {v} on this machine"),
            )
        )
    return out


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]}
    )


def test_the_snippets_are_read_from_the_package() -> None:
    assert SNIPPETS == ["probe.py", "sha256_files.py"]
    for name in SNIPPETS:
        assert board_snippet(name) == (FOLDER / name).read_text(encoding="utf-8")
    assert probe_argv("python3", "/w", "/w/site")[4] == board_snippet("probe.py")
    assert hash_argv("python3", "/w", ["a"])[4] == board_snippet("sha256_files.py")


@pytest.mark.parametrize("name", SNIPPETS)
def test_a_snippet_imports_only_the_standard_library(name: str) -> None:
    tree = ast.parse((FOLDER / name).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        for n in names:
            assert n.split(".")[0] in sys.stdlib_module_names, f"{name} imports {n}"


@pytest.mark.parametrize("python", pythons("3.9", "3.6", "2.7"))
def test_the_probe_answers_the_hosts_parser(python: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    res = run(probe_argv(python, str(workdir), str(workdir / "site")))
    facts = parse_probe(python, res.returncode, res.stdout, res.stderr)
    assert facts.python is not None, res.stderr
    version = run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
    assert facts.python == version.stdout.strip()
    assert facts.get("workdir_exists") is True and facts.get("workdir_writable") is True
    assert isinstance(facts.get("disk_free"), int) and facts.get("mem_total")
    assert list(workdir.iterdir()) == []  # its test file is gone
    found = problems(facts, board="b", python=python)
    if facts.python_version < MIN_PYTHON:
        assert len(found) == 1 and "too old" in found[0].what
    else:
        assert not any("Python" in p.what or "work directory" in p.what for p in found)


def test_the_probe_reports_a_missing_work_directory(tmp_path: Path) -> None:
    res = run([sys.executable, "-c", probe_code(), str(tmp_path / "a" / "b")])
    facts = parse_probe("python3", res.returncode, res.stdout, res.stderr)
    assert facts.get("workdir_exists") is False
    assert facts.get("workdir_error") == "does not exist"
    assert isinstance(facts.get("disk_free"), int)  # of the nearest existing parent


@pytest.mark.parametrize("python", pythons("3.9"))
def test_the_hashing_program_answers_the_hosts_parser(python: str, tmp_path: Path) -> None:
    root = tmp_path.resolve() / "work"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.bin").write_bytes(b"\x00edgecal\n" * 1000)
    (root / "link.bin").symlink_to(root / "sub" / "a.bin")
    (tmp_path / "outside.bin").write_bytes(b"x")
    rels = ["sub/a.bin", "link.bin", "sub", "absent.bin", "../outside.bin"]
    res = run(hash_argv(python, str(root), rels))
    assert res.returncode == 0, res.stderr
    assert parse_hashes(res.stdout, "b") == {
        "sub/a.bin": hashlib.sha256(b"\x00edgecal\n" * 1000).hexdigest(),
        "link.bin": None,
        "sub": None,
        "absent.bin": None,
        "../outside.bin": None,
    }


def test_a_garbled_hash_answer_names_the_board() -> None:
    with pytest.raises(ProtocolError, match=r"^emu1: unexpected answer of the hashing helper"):
        parse_hashes("Traceback (most recent call last):\n", "emu1")
