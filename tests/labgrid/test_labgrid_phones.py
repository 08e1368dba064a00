"""Phones from labgrid places (the farm of tests/labgrid/conftest.py and the emulated phones):
``ph-phone1`` is phone1 as adb over TCP (``NetworkADBDevice``), ``ph-phone2`` phone2 "on USB"
at the exporter host's adb server (``RemoteUSBADBDevice``: ``adb -H -P`` on every call).
calibrate and validate through them, a fleet of a phone place and a board place, a place held
by another client, places without exactly one board connection, a phone place whose exporter
leaves, between jobs and in the middle of a fleet run.  Model: the reference digits, 10 images
(40 for the fleet run cut mid-way); the reference table is phone1's from the boards file
(``--device phone1``); validate: the sample model, as tests/labgrid's boards."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from edgecal.boards.labgrid import PlaceBusyError
from edgecal.boards.open import open_device
from edgecal.boards.placedevices import PlacePhone
from edgecal.cli.main import main
from edgecal.errors import DeviceError, TransportError
from edgecal.fleet.prepare import Devices
from tests.boards.test_board_calibrate import REF, calibrate_args, cli, report
from tests.boards.test_board_calibrate import image_list as image_list  # the fixture: 10 images
from tests.labgrid.conftest import export_phone1
from tests.labgrid.farm import AdbServer, Farm
from tests.labgrid.test_labgrid_places import OTHER, holder
from tests.labgrid.test_labgrid_runs import calibrate_cut, validate_sample

pytestmark = [pytest.mark.board, pytest.mark.labgrid]


def calibrate_on(
    capsys: pytest.CaptureFixture[str], image_list: Path, out: Path, boards: Path, *devices: str
) -> str:
    """``edgecal calibrate`` of the reference model on ``devices``: its stdout."""
    device_args = [a for d in devices for a in ("--device", d)]
    code, stdout, err = cli(
        capsys, *calibrate_args(image_list, out, *device_args), "--boards", str(boards)
    )
    assert code == 0, err
    return stdout


@pytest.fixture(scope="module")
def phone1_table(
    phone_places: AdbServer,
    image_list: Path,
    emulated_boards: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """``--device phone1`` of the boards file, without labgrid."""
    out = tmp_path_factory.mktemp("phone1") / "phone1.table"
    source = emulated_boards["phone1"].source
    assert (
        main([*calibrate_args(image_list, out, "--device", "phone1"), "--boards", str(source)]) == 0
    )
    return out


def test_calibrate_and_validate_through_a_phone_place(
    farm: Farm,
    farm_boards: Path,
    image_list: Path,
    phone1_table: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "place.table"
    calibrate_on(capsys, image_list, out, farm_boards, "labgrid:ph-phone1")
    assert out.read_bytes() == phone1_table.read_bytes()
    assert holder(farm, "ph-phone1") == "None"  # released

    validate_sample(farm, farm_boards, "ph-phone1", "emulated-phone-a76", tmp_path)


def test_a_phone_at_the_exporter_hosts_adb_server(
    farm: Farm,
    farm_boards: Path,
    phone_places: AdbServer,
    image_list: Path,
    phone1_table: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """RemoteUSBADBDevice: every adb call goes to that server (``-H 127.0.0.1 -P PORT``);
    this host's server does not know the serial, so a call without them fails."""
    server = phone_places
    with open_device("labgrid:ph-phone2", boards=farm_boards) as device:
        assert isinstance(device, PlacePhone)
        assert holder(farm, "ph-phone2").startswith(f"{socket.gethostname()}/")
        assert device.link.address == f"adb:{server.serial}@127.0.0.1:{server.port}"
        assert device.target.server_args == ["-H", "127.0.0.1", "-P", str(server.port)]
        facts = device.hello()
        assert (facts["agent_kind"], facts["machine"]) == ("native", "aarch64")
    assert holder(farm, "ph-phone2") == "None"
    out = tmp_path / "usb.table"
    calibrate_on(capsys, image_list, out, farm_boards, "labgrid:ph-phone2")
    assert out.read_bytes() == phone1_table.read_bytes()


def test_a_fleet_of_a_phone_place_and_a_board_place(
    farm: Farm,
    farm_boards: Path,
    image_list: Path,
    phone1_table: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ph-phone1 (adb) and lab-emu4 (SSH) told it is the phone's kind of device (its
    ``[labgrid.places.lab-emu4]`` table: the phone's profile, the native agent)."""
    boards = tmp_path / "boards.toml"
    boards.write_text(
        farm_boards.read_text()
        + '[labgrid.places.lab-emu4]\nprofile = "emulated-phone-a76"\nagent = "native"\n'
    )
    out = tmp_path / "fleet.table"
    stdout = calibrate_on(capsys, image_list, out, boards, "labgrid:ph-phone1", "labgrid:lab-emu4")
    shares = {a["board"]: a["samples"] for a in json.loads(stdout)["fleet"]}
    report(capsys, f"fleet ph-phone1 + lab-emu4: samples per place {shares}")
    assert set(shares) == {"labgrid:ph-phone1", "labgrid:lab-emu4"}
    assert all(n > 0 for n in shares.values())
    assert out.read_bytes() == phone1_table.read_bytes()  # one kind of device, one agent
    assert holder(farm, "ph-phone1") == holder(farm, "lab-emu4") == "None"


def test_a_phone_place_lost_mid_fleet_run_gives_its_shards_to_the_other(
    farm: Farm,
    farm_boards: Path,
    phone_places: AdbServer,
    emulated_boards: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """exp-phone1 stops after the first shard result of a fleet run over ph-phone1 and
    lab-emu4 (told it is the phone's kind of device, 40 images: 7 shards a pass): the phone
    place's next job fails as a lost link, the place is given up and back, its shards go to
    lab-emu4, and the table is phone1's alone."""
    images = tmp_path / "images.txt"
    images.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(40)))
    alone = tmp_path / "phone1.table"
    source = emulated_boards["phone1"].source
    assert (
        main([*calibrate_args(images, alone, "--device", "phone1"), "--boards", str(source)]) == 0
    )
    boards = tmp_path / "boards.toml"
    boards.write_text(
        farm_boards.read_text()
        + '[labgrid.places.lab-emu4]\nprofile = "emulated-phone-a76"\nagent = "native"\n'
    )
    out = tmp_path / "cut.table"
    said = calibrate_cut(
        farm,
        "phone1",
        "ph-phone1",
        images,
        out,
        Devices.of(["labgrid:ph-phone1", "labgrid:lab-emu4"], boards=boards),
        lambda: export_phone1(farm, emulated_boards["phone1"]),
    )
    report(capsys, "[phone place gone mid-run] " + " | ".join(said))
    assert out.read_bytes() == alone.read_bytes()
    assert holder(farm, "ph-phone1") == holder(farm, "lab-emu4") == "None"


def test_a_phone_place_held_by_another_client_is_refused_with_its_name(
    farm: Farm, farm_boards: Path, phone_places: AdbServer
) -> None:
    farm.client("-p", "ph-phone1", "acquire", user=OTHER)
    try:
        with pytest.raises(PlaceBusyError) as e:
            open_device("labgrid:ph-phone1", boards=farm_boards)
        assert e.value.message == (
            f"labgrid:ph-phone1: the place is held by {socket.gethostname()}/{OTHER}"
        )
        assert holder(farm, "ph-phone1").endswith(f"/{OTHER}")
    finally:
        farm.client("-p", "ph-phone1", "release", user=OTHER)


@pytest.mark.parametrize(
    ("place", "what"),
    [
        ("bad-both", "2 board connections (NetworkADBDevice, NetworkService)"),
        ("bad-none", "no board connection"),
    ],
)
def test_a_place_needs_exactly_one_board_connection(
    farm: Farm, farm_boards: Path, phone_places: AdbServer, place: str, what: str
) -> None:
    message = (
        f"labgrid:{place}: the place has {what} at the labgrid coordinator {farm.address}; "
        "edgecal needs exactly one: a NetworkService (a board over SSH) or an ADB resource (a "
        "phone: USBADBDevice, ADBDevice, RemoteUSBADBDevice, NetworkADBDevice, RemoteADBDevice)"
    )
    with pytest.raises(DeviceError) as e:
        open_device(f"labgrid:{place}", boards=farm_boards)
    assert e.value.message == message
    assert holder(farm, place) == "None"  # given back
    with pytest.raises(DeviceError) as e:  # read without acquiring: the same line
        Devices.of(f"labgrid:{place}", boards=farm_boards).board(f"labgrid:{place}")
    assert e.value.message == message


def test_a_phone_place_whose_exporter_left_fails_its_jobs_as_a_lost_link(
    farm: Farm, farm_boards: Path, phone_places: AdbServer, emulated_boards: dict[str, Any]
) -> None:
    try:
        with open_device("labgrid:ph-phone1", boards=farm_boards) as device:
            assert device.hello()["machine"] == "aarch64"  # a job through the place
            farm.stop_exporter("phone1")
            for step in (device.hello, device.recover):
                with pytest.raises(TransportError) as e:
                    step()
                assert "its labgrid exporter exp-phone1 is gone" in e.value.message
        assert holder(farm, "ph-phone1") == "None"
    finally:
        if "exp-phone1" not in farm.procs:
            export_phone1(farm, emulated_boards["phone1"])  # back for the other tests
