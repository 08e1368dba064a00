"""The boards use cases called from Python on the emulated boards: a device opened by name, and
the boards' check as ``edgecal board check --json`` reports it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecal.api.boards import check_boards, open_device, resolve_boards
from edgecal.boards.config import load_boards
from tests.boards.test_board_calibrate import cli, need

pytestmark = pytest.mark.board
#: What a check report says that does not change from one check to the next.
STABLE = ("board", "address", "ok", "profile", "workdir", "problems", "agent")


def test_open_device_by_name(boards_file: Path) -> None:
    need(boards_file, "emu1")
    with open_device("emu1", boards=boards_file, threads=1) as device:
        assert device.name == "emu1"
        assert device.hello()["agent_version"]


def test_check_boards_is_the_cli_report(
    boards_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need(boards_file, "emu1", "emu2")
    board = load_boards(boards_file)["emu2"]
    # a name and a Board value, in the order given
    reports = list(check_boards(["emu1", board], boards_path=boards_file))
    assert [r.board for r in reports] == ["emu1", "emu2"] and all(r.ok for r in reports)
    code, out, _ = cli(
        capsys, "board", "check", "emu1", "emu2", "--boards", str(boards_file), "--json"
    )
    assert code == 0
    got = [{k: r.to_dict()[k] for k in STABLE} for r in reports]
    assert got == [{k: r[k] for k in STABLE} for r in json.loads(out)]
    assert resolve_boards([board]) == [board]
