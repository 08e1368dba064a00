"""Boards from labgrid places, against a real coordinator and exporters (tests/labgrid/farm.py)
and the emulated boards: acquiring and releasing, a place held by another client (refused with
the holder's name, or waited for), place patterns and tags."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from edgecal.boards.labgrid import PlaceBusyError
from edgecal.boards.open import open_device
from edgecal.boards.placedevices import PlaceDevice
from edgecal.errors import UsageError
from edgecal.fleet.prepare import Devices
from tests.labgrid.farm import Farm

pytestmark = [pytest.mark.board, pytest.mark.labgrid]
OTHER = "other-ci"  # another pipeline's labgrid user


def holder(farm: Farm, place: str) -> str:
    line = next(ln for ln in farm.client("-p", place, "show").splitlines() if "acquired:" in ln)
    return line.split("acquired:", 1)[1].strip()


def test_place_acquired_while_open_and_released_after(farm: Farm, farm_boards: Path) -> None:
    me = f"{socket.gethostname()}/"
    with open_device("labgrid:lab-emu1", boards=farm_boards) as device:
        assert isinstance(device, PlaceDevice)
        assert holder(farm, "lab-emu1").startswith(me)
        assert device.link.address == "pi@10.200.1.2:22"  # the place's NetworkService
        facts = device.hello()
        assert facts["machine"] == "aarch64"
    assert holder(farm, "lab-emu1") == "None"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_place_released_on_error(farm: Farm, farm_boards: Path, error: type[BaseException]) -> None:
    with pytest.raises(error), open_device("labgrid:lab-emu1", boards=farm_boards):
        assert holder(farm, "lab-emu1") != "None"
        raise error("boom")
    assert holder(farm, "lab-emu1") == "None"


def test_one_place_shared_within_a_process(farm: Farm, farm_boards: Path) -> None:
    """Two devices of one process on one place (a fixture's and a validation's): one lease,
    given back with the last."""
    with open_device("labgrid:lab-emu1", boards=farm_boards) as a:
        with open_device("labgrid:lab-emu1", boards=farm_boards) as b:
            assert isinstance(a, PlaceDevice) and isinstance(b, PlaceDevice)
            assert a.lease is b.lease
        assert holder(farm, "lab-emu1") != "None"
        assert a.hello()["machine"] == "aarch64"
    assert holder(farm, "lab-emu1") == "None"


def test_place_held_by_another_client_is_refused_with_its_name(
    farm: Farm, farm_boards: Path
) -> None:
    farm.client("-p", "lab-emu4", "acquire", user=OTHER)
    try:
        with pytest.raises(PlaceBusyError) as e:
            open_device("labgrid:lab-emu4", boards=farm_boards, labgrid_wait_s=1.0)
        assert e.value.message == (
            f"labgrid:lab-emu4: the place is held by {socket.gethostname()}/{OTHER} "
            "after waiting 1 s"
        )
        assert "--labgrid-wait" in (e.value.hint or "")
        assert holder(farm, "lab-emu4").endswith(f"/{OTHER}")  # untouched
    finally:
        farm.client("-p", "lab-emu4", "release", user=OTHER)


def test_place_held_by_another_client_is_waited_for(farm: Farm, farm_boards: Path) -> None:
    farm.client("-p", "lab-emu4", "acquire", user=OTHER)
    released = threading.Event()

    def release_later() -> None:
        time.sleep(3.0)
        farm.client("-p", "lab-emu4", "release", user=OTHER)
        released.set()

    t = threading.Thread(target=release_later)
    t.start()
    try:
        with open_device("labgrid:lab-emu4", boards=farm_boards, labgrid_wait_s=120) as d:
            assert released.is_set()  # not before the other client let go
            assert holder(farm, "lab-emu4").startswith(f"{socket.gethostname()}/")
            assert d.hello()["machine"] == "aarch64"
    finally:
        t.join()
    assert holder(farm, "lab-emu4") == "None"


def test_patterns_and_tags_name_places(farm: Farm, farm_boards: Path) -> None:
    def names(spec: str) -> tuple[str | None, ...]:
        return Devices.of(spec, boards=farm_boards).all_names

    assert names("labgrid:lab-*") == ("labgrid:lab-emu1", "labgrid:lab-emu4")
    assert names("labgrid:shelf=b") == ("labgrid:lab-emu4",)
    assert names("labgrid:shelf=a,edgecal_profile=emulated-pi4") == ("labgrid:lab-emu1",)
    with pytest.raises(UsageError, match=r"no place .* matches"):
        names("labgrid:shelf-*")
    with pytest.raises(UsageError, match=r"has no place 'nope'") as e:
        open_device("labgrid:nope", boards=farm_boards)
    assert "lab-emu1, lab-emu4" in (e.value.hint or "")
    devs = Devices.of("labgrid:lab-emu4", boards=farm_boards)
    board = devs.board("labgrid:lab-emu4")  # read without acquiring
    assert board is not None and board.profile == "emulated-pi4" and board.host == "10.200.4.2"
    assert holder(farm, "lab-emu4") == "None"


def test_a_boards_file_entry_names_a_place(farm: Farm, farm_boards: Path, tmp_path: Path) -> None:
    """``[boards.shelf-b] place = "lab-emu4"``: ``--device shelf-b`` and groups are the place."""
    path = tmp_path / "boards.toml"
    path.write_text(
        farm_boards.read_text()
        + '\n[boards.shelf-b]\nplace = "lab-emu4"\n[groups]\nfarm = ["shelf-b"]\n'
    )
    devs = Devices.of(None, group="farm", boards=path)
    assert devs.all_names == ("shelf-b",)
    board = devs.board("shelf-b")
    assert board is not None and (board.host, board.profile) == ("10.200.4.2", "emulated-pi4")
    with open_device("shelf-b", boards=path) as device:
        assert device.name == "shelf-b" and isinstance(device, PlaceDevice)
        assert holder(farm, "lab-emu4").startswith(f"{socket.gethostname()}/")
        assert device.hello()["machine"] == "aarch64"
    assert holder(farm, "lab-emu4") == "None"
