"""Fixtures of the labgrid tests: a real farm (coordinator + one exporter per board, on
127.0.0.1) over the running emulated boards ($EDGECAL_BOARDS), and places ``lab-BOARD``.

Without labgrid, the boards file or a board these tests skip on a developer's machine and FAIL
under ``CI=true``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecal.boards.config import Board, load_boards
from tests.boards.test_board_calibrate import need, unavailable
from tests.labgrid.farm import Farm, boards_text, labgrid_installed

#: the boards the farm exports (aarch64, one profile: a fleet of them makes one table)
FARM_BOARDS = ("emu1", "emu4")


@pytest.fixture(scope="session")
def emulated_boards() -> dict[str, Board]:
    value = os.environ.get("EDGECAL_BOARDS")
    if not value:
        unavailable("EDGECAL_BOARDS is not set (run `make boards-up` as root and export it)")
    why = labgrid_installed()
    if why:
        unavailable(why)
    need(Path(str(value)), *FARM_BOARDS)
    return load_boards(Path(str(value)))


@pytest.fixture(scope="session")
def farm(
    emulated_boards: dict[str, Board], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    """The coordinator, one exporter per farm board and the places ``lab-emu1`` (shelf a)
    and ``lab-emu4`` (shelf b)."""
    farm = Farm(tmp_path_factory.mktemp("labgrid"))
    try:
        farm.start_coordinator()
        for i, name in enumerate(FARM_BOARDS):
            farm.start_exporter(emulated_boards[name])
            farm.add_place(f"lab-{name}", emulated_boards[name], shelf="ab"[i])
        yield farm
    except BaseException:
        print(farm.log("coordinator"))
        raise
    finally:
        farm.close()


@pytest.fixture(scope="session")
def farm_boards(
    farm: Farm, emulated_boards: dict[str, Board], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A boards file with only a ``[labgrid]`` table (the places give the addresses)."""
    path = tmp_path_factory.mktemp("farmboards") / "boards.toml"
    path.write_text(boards_text(farm, emulated_boards[FARM_BOARDS[0]]))
    return path
