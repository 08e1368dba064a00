"""Temporary folders off the critical path: removed by a detached ``rm`` once renamed, and no
fsync for a local device's temporary work folder (host requests and the agent's answers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecal.files.cleanup import REMOVING_MARK, remove_tree_soon, temporary_folder

ROOT = Path(__file__).resolve().parents[2]


def _tree(folder: Path) -> Path:
    (folder / "a" / "b").mkdir(parents=True)
    for i in range(20):
        (folder / "a" / "b" / f"f{i}").write_bytes(b"x" * 4096)
    (folder / "top").write_text("t")
    return folder


def _removing(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if REMOVING_MARK in p.name]


def test_the_path_is_free_at_once_and_the_files_go(tmp_path: Path) -> None:
    folder = _tree(tmp_path / "work")
    remove_tree_soon(folder)
    assert not folder.exists()
    deadline = time.monotonic() + 60.0
    while _removing(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _removing(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_without_rm_the_folder_is_removed_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("rm") is None
    folder = _tree(tmp_path / "work")
    remove_tree_soon(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_a_missing_folder_is_no_error(tmp_path: Path) -> None:
    remove_tree_soon(tmp_path / "never")
    assert list(tmp_path.iterdir()) == []


def test_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR read again
    with temporary_folder("edgecal-x-") as path:
        assert path.parent == tmp_path and path.name.startswith("edgecal-x-")
        _tree(path)
    assert not path.exists()


_HELLO = """
import sys
from pathlib import Path
from edgecal.device.local import LocalDevice
with LocalDevice(workdir=Path(sys.argv[1]) if len(sys.argv) > 1 else None, agent="module") as d:
    d.hello()
"""


def _fsyncs(tmp_path: Path, *args: str) -> int:
    log = tmp_path / "strace.txt"
    trace = ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(log)]
    subprocess.run(
        [*trace, sys.executable, "-c", _HELLO, *args],
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    return sum("fsync" in line for line in log.read_text().splitlines())


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_temporary_local_work_folder_is_not_fsynced(tmp_path: Path) -> None:
    """A hello job writes a request (host) and a response (agent): fsynced in a work folder
    the caller gave, not in the device's own temporary one."""
    assert _fsyncs(tmp_path) == 0
    assert _fsyncs(tmp_path, str(tmp_path / "given")) >= 2
