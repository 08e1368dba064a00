"""Fleet health on the emulated boards: `edgecal board check --golden` in parallel, and a board
whose ncnn computes wrong results left out.

The misbehaving board is real, not mocked: ``emu1`` with its own work directory (a copy of the
boards file with another ``workdir``, so other users of ``emu1`` are untouched) whose ``site/``
(on the agent's ``PYTHONPATH``) holds a ``sitecustomize.py`` that patches the board's ncnn so
``Net.load_model`` reads every 50th weight 25 % too large -- what a corrupted or mis-built ncnn
does.  The ordinary check cannot see it; the golden check must.  The work directory is removed
at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecal.boards.config import Board, load_boards
from edgecal.boards.golden import TOLERANCES
from edgecal.fleet.health import healthy_boards
from tests.boards.test_board_calibrate import cli, need, report

pytestmark = pytest.mark.board
BROKEN_WORKDIR = ".cache/edgecal-test-broken-ncnn"

#: Installed as <workdir>/site/sitecustomize.py on the board: a broken ncnn.
BROKEN_NCNN = '''\
"""edgecal tests/boards/test_board_health.py: simulates a broken ncnn (remove this file)."""
try:
    import ncnn as _ncnn
except ImportError:
    _ncnn = None

if _ncnn is not None:
    import os as _os
    import tempfile as _tempfile

    import numpy as _np

    _load_model = _ncnn.Net.load_model

    def _corrupted_load_model(self, *args):
        if len(args) != 1 or not isinstance(args[0], str):
            return _load_model(self, *args)
        words = _np.fromfile(args[0], dtype="<f4")
        idx = _np.arange(0, words.size, 50)
        idx = idx[words[idx] != 0]  # never a float32 storage tag (0)
        words[idx] *= _np.float32(1.25)
        fd, tmp = _tempfile.mkstemp(suffix=".bin")
        _os.close(fd)
        try:
            words.tofile(tmp)
            return _load_model(self, tmp)
        finally:
            _os.unlink(tmp)

    _ncnn.Net.load_model = _corrupted_load_model
'''


def overlap(reports: list[dict]) -> bool:
    """Every check started before any one finished: they ran at the same time."""
    return max(r["started"] for r in reports) < min(r["finished"] for r in reports)


def test_parallel_golden_check_emu1_emu2(
    boards_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need(boards_file, "emu1", "emu2")
    code, out, err = cli(
        capsys, "board", "check", "emu1", "emu2", "--golden", "--boards", str(boards_file), "--json"
    )
    assert code == 0, err
    reports = json.loads(out)
    assert [r["board"] for r in reports] == ["emu1", "emu2"]  # the order given
    tol = TOLERANCES["calibration"]
    for r in reports:
        g = r["golden"]
        assert r["ok"] and g["ok"], r
        assert g["runtime"] == "calibration" and len(g["figures"]) == 4
        for f in g["figures"]:
            assert f["max_rel_err"] <= tol.max_rel_err and f["cosine"] >= tol.min_cosine
        report(
            capsys,
            f"{r['board']} golden: {r['seconds']:.1f} s check ({g['seconds']:.1f} s "
            f"golden), "
            + ", ".join(
                f"{f['blob']} 1-cos {1 - f['cosine']:.1e} rel {f['max_rel_err']:.1e}"
                for f in g["figures"]
            ),
        )
    assert overlap(reports), [(r["started"], r["finished"]) for r in reports]
    total = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    report(
        capsys,
        f"parallel check of emu1+emu2: {total:.1f} s wall, sum of checks "
        f"{sum(r['seconds'] for r in reports):.1f} s",
    )


def with_workdir(text: str, name: str, workdir: str) -> str:
    """A boards file's text with board ``name``'s ``workdir`` set to ``workdir``."""
    head, rest = text.split(f"[boards.{name}]\n", 1)
    section, sep, tail = rest.partition("\n[")
    lines = [ln for ln in section.splitlines() if not ln.replace(" ", "").startswith("workdir=")]
    return (
        f"{head}[boards.{name}]\n"
        + "\n".join([*lines, f'workdir = "{workdir}"'])
        + "\n"
        + (f"\n[{tail}" if sep else "")
    )


@pytest.fixture
def broken_emu1(boards_file: Path, tmp_path: Path) -> Iterator[tuple[Board, Path]]:
    """emu1 with its own work directory and a broken ncnn there; a boards file naming it."""
    need(boards_file, "emu1", "emu2")
    from edgecal.boards.open import open_board

    path = tmp_path / "boards.toml"
    path.write_text(with_workdir(boards_file.read_text(), "emu1", BROKEN_WORKDIR))
    board = load_boards(path)["emu1"]
    assert board.workdir == BROKEN_WORKDIR
    assert dataclasses.replace(load_boards(path)["emu2"], source=None) == dataclasses.replace(
        load_boards(boards_file)["emu2"], source=None
    )
    with open_board(board) as dev:
        workdir = str(dev.workdir)
        assert workdir.endswith(BROKEN_WORKDIR)
        dev.link.run(["mkdir", "-p", "--", dev.site_dir], timeout_s=60)
        with dev.link.sftp().open(f"{dev.site_dir}/sitecustomize.py", "w") as fh:
            fh.write(BROKEN_NCNN)
    try:
        yield board, path
    finally:
        with open_board(board) as dev:
            dev.link.run(["rm", "-rf", "--", workdir], timeout_s=120)


def test_misbehaving_board_is_left_out(
    boards_file: Path, broken_emu1: tuple[Board, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    board, broken_file = broken_emu1
    emu2 = load_boards(boards_file)["emu2"]
    ok, reports = healthy_boards([board, emu2], golden=True)
    assert [b.name for b in ok] == ["emu2"], [r.problems for r in reports]
    bad = reports[0]
    # the ordinary check sees nothing wrong (Python, numpy, ncnn, the agent): only the golden
    # check leaves emu1 out, with the fix
    assert bad.agent is not None and bad.agent["ncnn_ok"]
    assert bad.golden is not None and not bad.golden.ok
    assert bad.golden.message.startswith("emu1: the board's ncnn computes wrong results")
    assert bad.golden.message.endswith(
        ": reinstall ncnn (`edgecal board provision emu1 --force`) or leave the board out"
    )
    assert [p.fix for p in bad.problems] == [bad.golden.fix]
    assert reports[1].golden is not None and reports[1].golden.ok
    report(capsys, f"broken emu1: {bad.golden.summary()}")
    assert bad.golden.worst_rel_err > 10 * TOLERANCES["calibration"].max_rel_err
    # the command: exit 1, both reports (emu2 OK), one error line naming emu1 and the fix
    code, out, err = cli(
        capsys, "board", "check", "emu1", "emu2", "--golden", "--boards", str(broken_file)
    )
    assert code == 1
    assert "  golden   WRONG (4 outputs vs the host's" in out
    assert "  golden   ok (4 outputs vs the host's" in out  # emu2
    assert "  OK (" in out and "  NOT READY (" in out
    assert out.index("emu1 (") < out.index("emu2 (")
    errors = [ln for ln in err.splitlines() if ln.startswith("edgecal: error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("edgecal: error: emu1: the board's ncnn computes wrong results")
    assert (
        "(fix: reinstall ncnn (`edgecal board provision emu1 --force`) or leave the board "
        "out)" in errors[0]
    )
