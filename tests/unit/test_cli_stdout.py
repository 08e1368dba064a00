"""Standard output that cannot be written: one line naming it and exit 2, never a traceback;
a reader that went away (``| head -1``) ends nothing: the command exits as it would have."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecal.cli.stdout import GuardedStdout
from edgecal.errors import UsageError
from tests.unit.test_gate import board, doc

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
TABLE = str(REF / "digits" / "kl.table")
FULL = "/dev/full"


def _edgecal(args: list[str], stdout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecal", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )


def _results(tmp_path: Path) -> str:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc(board())))
    return str(path)


def _commands(tmp_path: Path) -> list[list[str]]:
    r = _results(tmp_path)
    return [
        ["compare", TABLE, TABLE],
        ["-q", "compare", "--json", TABLE, TABLE],
        ["-q", "check", "--results", r, "--min-accuracy", "0.99"],  # a regression
        ["-q", "check", "--results", r, "--min-accuracy", "0.5", "--json"],  # a pass
        ["--version"],
        ["compare", "--help"],
    ]


@pytest.mark.skipif(not os.path.exists(FULL), reason="no /dev/full")
def test_a_full_standard_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in _commands(tmp_path):
        with open(FULL, "w") as full:
            got = _edgecal(args, full.fileno())
        assert got.returncode == 2, (args, got.stderr)
        assert "Traceback" not in got.stderr and "Exception ignored" not in got.stderr, args
        assert got.stderr.strip().splitlines()[-1] == (
            "edgecal: error: cannot write standard output: No space left on device (fix: free "
            "disk space, or redirect the output to another file)"
        ), args


def test_a_reader_gone_ends_nothing(tmp_path: Path) -> None:
    r = _results(tmp_path)
    for args, code in [
        (["compare", TABLE, TABLE], 0),
        (["-q", "check", "--results", r, "--min-accuracy", "0.99"], 3),  # the verdict stays
        (["-q", "check", "--results", r, "--min-accuracy", "0.5"], 0),
    ]:
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first write: EPIPE
        try:
            got = _edgecal(args, write)
        finally:
            os.close(write)
        assert got.returncode == code, (args, got.stderr)
        assert "Traceback" not in got.stderr and "Broken pipe" not in got.stderr, args
        assert "Exception ignored" not in got.stderr, args


class _Failing(io.StringIO):
    def __init__(self, exc: OSError) -> None:
        super().__init__()
        self.exc = exc

    def write(self, text: str) -> int:
        raise self.exc


def test_the_guard_names_standard_output() -> None:
    out = GuardedStdout(_Failing(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(UsageError) as exc:
        out.write("x")
    assert exc.value.message == "cannot write standard output: Input/output error"
    assert out.gone and out.write("more") == 4  # nothing more is tried


def test_the_guard_drops_the_output_of_a_reader_gone() -> None:
    out = GuardedStdout(_Failing(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    assert out.write("x") == 1 and out.gone
    out.flush()
