"""edgecal.files.outputs: the output-path checks and the all-or-nothing writer; the run lock."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgecal.errors import CalibrationError, UsageError
from edgecal.files.outputs import (
    Input,
    Output,
    check_folder,
    check_outputs,
    write_files,
    write_outputs,
)
from edgecal.runs.lock import RunLock


def _leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.name.endswith((".edgecal-tmp", ".edgecal-old"))
    )


def test_a_failed_rename_puts_back_the_outputs_already_renamed(tmp_path: Path) -> None:
    a, b, new, blocker = (tmp_path / n for n in ("a.table", "b.npz", "new.txt", "dir"))
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    blocker.mkdir()  # renaming a file over a folder fails: the third output cannot be placed
    inode_a = a.stat().st_ino
    with pytest.raises(OSError) as exc:
        write_files([(a, b"new a"), (b, b"new b"), (new, b"new"), (blocker, b"x")])
    assert exc.value.filename == str(blocker)
    assert a.read_bytes() == b"old a" and a.stat().st_ino == inode_a  # the very same file
    assert b.read_bytes() == b"old b"
    assert not new.exists()
    assert _leftovers(tmp_path) == []


def test_a_written_set_leaves_no_temporary_or_backup_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"old")
    write_outputs([(a, b"1"), (b, b"2")])
    assert (a.read_bytes(), b.read_bytes()) == (b"1", b"2")
    assert _leftovers(tmp_path) == []


def test_a_symlinked_output_stays_a_symlink(tmp_path: Path) -> None:
    real, link = tmp_path / "real.table", tmp_path / "link.table"
    real.write_text("old")
    link.symlink_to(real)
    write_outputs([(link, b"new")])
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_a_fifo_without_reader_is_an_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="a FIFO with no reader"):
        write_outputs([(fifo, b"x")])
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_check_outputs_refusals(tmp_path: Path) -> None:
    param = tmp_path / "m.param"
    param.write_text("7767517\n")
    (tmp_path / "hard.param").hardlink_to(param)
    (tmp_path / "soft.param").symlink_to(param)
    (tmp_path / "d").mkdir()
    inputs = [Input("param", str(param))]
    for out in (
        str(param),
        str(tmp_path / "hard.param"),
        str(tmp_path / "soft.param"),
        str(tmp_path / "d" / ".." / "m.param"),
    ):
        with pytest.raises(UsageError, match="refusing to overwrite an input"):
            check_outputs([Output("--out", out)], inputs)
    with pytest.raises(UsageError, match="is a folder"):
        check_outputs([Output("--out", str(tmp_path / "d"))])
    with pytest.raises(UsageError, match="does not exist"):
        check_outputs([Output("--out", str(tmp_path / "nope" / "t.table"))])
    with pytest.raises(UsageError, match="are the same file"):
        check_outputs(
            [
                Output("--out", str(tmp_path / "t")),
                Output("--histograms-out", str(tmp_path / "d" / ".." / "t")),
            ]
        )
    with pytest.raises(UsageError, match="only for text or JSON"):
        check_outputs([Output("--histograms-out", "-")])
    with pytest.raises(UsageError, match="both name standard output"):
        check_outputs([Output("--out", "-", text=True), Output("--json", "-", text=True)])
    check_outputs([Output("--out", "-", text=True), Output("--h", str(tmp_path / "new"))], inputs)
    check_outputs([Output("--out", "/dev/null"), Output("--h", "/dev/null")], inputs)


def test_check_folder(tmp_path: Path) -> None:
    check_folder("--run-dir", tmp_path / "new" / "deeper")  # made with its parents
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_folder("--run-dir", tmp_path / "f")
    with pytest.raises(UsageError, match="is not a folder"):
        check_folder("--run-dir", tmp_path / "f" / "sub")


def test_run_lock_names_its_holder(tmp_path: Path) -> None:
    lock = RunLock.acquire(tmp_path)
    with pytest.raises(CalibrationError, match=rf"in use by .* \(pid {os.getpid()}\)"):
        RunLock.acquire(tmp_path)
    lock.release()
    RunLock.acquire(tmp_path).release()
