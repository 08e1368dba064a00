"""Fixtures of the labgrid tests: a real farm (coordinator + one exporter per board, on
127.0.0.1) over the running emulated boards ($EDGECAL_BOARDS), and places ``lab-BOARD``; the
emulated phones' places ``ph-phone1`` and ``ph-phone2`` and two places edgecal refuses.

Without labgrid, the boards file or a board these tests skip on a developer's machine and FAIL
under ``CI=true``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecal.boards.config import Board, load_boards
from edgecal.device.adb.link import find_adb
from tests.boards.test_board_calibrate import need, unavailable
from tests.labgrid.farm import AdbServer, Farm, boards_text, labgrid_installed

#: the boards the farm exports (aarch64, one profile: a fleet of them makes one table)
FARM_BOARDS = ("emu1", "emu4")
PHONES = ("phone1", "phone2")


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


def export_phone1(farm: Farm, phone: Board) -> None:
    """``exp-phone1``: phone1 as adb over TCP (NetworkADBDevice without serialno)."""
    assert phone.serial is not None
    host, port = phone.serial.rsplit(":", 1)
    farm.export("exp-phone1", "phone1", "NetworkADBDevice", {"host": host, "port": int(port)})


@pytest.fixture(scope="session")
def phone_places(farm: Farm, emulated_boards: dict[str, Board]) -> Iterator[AdbServer]:
    """The phones' places, with the ``edgecal_profile`` tag of each phone's profile:

    * ``ph-phone1``: ``NetworkADBDevice {host, port}`` -- phone1 over TCP, ``adb connect``-ed;
    * ``ph-phone2``: ``RemoteUSBADBDevice {host: 127.0.0.1, port, serialno}`` -- phone2 "on
      USB" at the exporter host's adb server (:class:`AdbServer`, the fixture's value);
    * ``bad-both`` (emu1's NetworkService and phone1's ADB resource) and ``bad-none``."""
    source = next(iter(emulated_boards.values())).source
    assert source is not None
    need(source, *PHONES)
    phone1, phone2 = emulated_boards["phone1"], emulated_boards["phone2"]
    export_phone1(farm, phone1)
    assert phone2.serial is not None
    server = AdbServer(find_adb())
    try:
        serial = server.plug(int(phone2.serial.rsplit(":", 1)[1]))
        params = {"host": "127.0.0.1", "port": server.port, "serialno": serial}
        farm.export("exp-phone2", "phone2", "RemoteUSBADBDevice", params)
        for place, phone, cls in [
            ("ph-phone1", phone1, "NetworkADBDevice"),
            ("ph-phone2", phone2, "RemoteUSBADBDevice"),
        ]:
            match = f"exp-{phone.name}/{phone.name}/{cls}"
            farm.add_place_matching(place, [match], edgecal_profile=str(phone.profile))
        both = ["exp-emu1/emu1/NetworkService", "exp-phone1/phone1/NetworkADBDevice"]
        farm.add_place_matching("bad-both", both)
        farm.add_place_matching("bad-none", [])
        yield server
    finally:
        server.close()
