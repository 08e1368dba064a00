"""``edgecal board clean`` on every transport: a board over SSH with the Python agent
(``emu1``), one without Python (``emuv7``, the native agent, only sh) and the emulated phone
(``phone1``, adb).  Three files pushed a second apart; ``--keep-mb`` keeps the newest that fit,
the rest go; the agent stays; a removed file is pushed again by the next push."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from edgecal.boards.config import load_boards
from edgecal.boards.open import open_board
from edgecal.device.remote import RemoteDevice
from tests.boards.test_board_calibrate import cli, need

pytestmark = pytest.mark.board

SIZE = 300 * 1024  # well above a file system block: du's figure is the size, rounded up


@pytest.mark.parametrize("name", ["emu1", "emuv7", "phone1"])
def test_clean_keeps_the_newest_within_the_budget(
    name: str, boards_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need(boards_file, name)
    board = load_boards(boards_file)[name]
    assert cli(capsys, "board", "clean", name, "--boards", str(boards_file))[0] == 0
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(os.urandom(SIZE))
    with open_board(board) as dev:
        assert isinstance(dev, RemoteDevice)
        dev.hello()  # the agent is in place before the clean
        rels = []
        for f in files:
            rels.append(dev.push(f))
            time.sleep(1.1)  # stored a second apart (stat -c %Y)
        stored = {s.rel: s for s in dev.stored_files()}
        assert sorted(stored) == sorted(r.rpartition("/")[0] for r in rels)
        assert all(SIZE <= s.size < 2 * SIZE for s in stored.values())

    keep_mb = 2.5 * SIZE / (1 << 20)  # the two newest fit, not the third
    code, out, err = cli(
        capsys,
        "board",
        "clean",
        name,
        "--boards",
        str(boards_file),
        "--keep-mb",
        str(keep_mb),
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)[0]
    assert (doc["board"], doc["removed"]["files"], doc["kept"]["files"]) == (name, 1, 2)

    with open_board(board) as dev:
        assert isinstance(dev, RemoteDevice)
        left = sorted(s.rel for s in dev.stored_files())
        assert left == sorted(r.rpartition("/")[0] for r in rels[1:])  # the oldest went
        dev.hello()
        assert dev.bytes_pushed == 0  # the agent stayed
        assert dev.push(files[0]) == rels[0]
        assert dev.bytes_pushed == SIZE  # pushed again
        assert dev.push(files[1]) == rels[1] and dev.bytes_pushed == SIZE  # kept: not pushed

    code, out, _ = cli(capsys, "board", "clean", name, "--boards", str(boards_file))
    assert code == 0 and out.startswith(f"{name}: removed 3 pushed file folder(s)")
    with open_board(board) as dev:
        assert isinstance(dev, RemoteDevice)
        assert dev.stored_files() == []


def test_clean_refuses_the_local_machine_and_a_budget_that_is_no_size(
    boards_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "board", "clean", "local")
    assert code != 0 and "is for boards, not the local machine" in err
    need(boards_file, "emu1")
    for bad in ("-1", "nan", "inf"):
        code, _, err = cli(
            capsys, "board", "clean", "emu1", "--boards", str(boards_file), "--keep-mb", bad
        )
        assert code == 2 and f"--keep-mb {bad}: give a number of MiB >= 0" in err, (bad, err)
