"""The labgrid side of boards files and places, without a farm: the ``[labgrid]`` table, place
patterns and tags, and the board a place's NetworkService makes (edgecal/boards/labgrid.py).
The farm itself is tested in tests/labgrid/."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.boards.config import load_boards
from edgecal.boards.labgrid import (
    DEFAULT_COORDINATOR,
    Connection,
    board_connection,
    farm_settings,
    is_pattern,
    match_places,
    place_board,
)
from edgecal.errors import ConfigError, DeviceError, UsageError

PLACES = {
    "shelf-a-1": {"tags": {"shelf": "a", "edgecal_profile": "emulated-pi4"}},
    "shelf-a-2": {"tags": {"shelf": "a", "edgecal_profile": "emulated-pi5"}},
    "shelf-b-1": {"tags": {"shelf": "b"}},
}


def ssh(**params: object) -> Connection:
    """A place's NetworkService."""
    return Connection("exp/g/NetworkService/NetworkService", "NetworkService", params)


def boards(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "boards.toml"
    path.write_text("schema = 1\n" + text)
    return path


def test_patterns_globs_and_tags() -> None:
    assert match_places(PLACES, "shelf-a-*") == ["shelf-a-1", "shelf-a-2"]
    assert match_places(PLACES, "shelf=a") == ["shelf-a-1", "shelf-a-2"]
    assert match_places(PLACES, "shelf=a,edgecal_profile=emulated-pi5") == ["shelf-a-2"]
    assert match_places(PLACES, "shelf=c") == []
    assert match_places(PLACES, "shelf-?-1") == ["shelf-a-1", "shelf-b-1"]
    assert [is_pattern(p) for p in ("shelf-a-1", "shelf-*", "shelf=a", "x[12]")] == [
        False,
        True,
        True,
        True,
    ]


def test_settings_from_the_boards_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    path = boards(
        tmp_path,
        '[boards.pi]\nhost = "10.0.0.9"\n'
        '[labgrid]\ncoordinator = "farm:20408"\nwait_s = 30\nidentity_file = "ssh/key"\n'
        'known_hosts = "ssh/kh"\nprofile = "emulated-pi5"\n'
        '[labgrid.places.shelf-a-2]\nprofile = "emulated-armv7"\nworkdir = "/data/ec"\n',
    )
    assert list(load_boards(path)) == ["pi"]  # [labgrid] is no board
    s = farm_settings(path)
    assert (s.coordinator, s.wait_s) == ("farm:20408", 30.0)
    assert farm_settings(path, wait_s=5).wait_s == 5.0  # --labgrid-wait over the file
    params = ssh(address="10.200.1.2", username="pi", port=2222)
    b = place_board("labgrid:shelf-a-1", PLACES["shelf-a-1"], params, s)
    assert (b.name, b.host, b.user, b.port) == ("labgrid:shelf-a-1", "10.200.1.2", "pi", 2222)
    assert b.identity_file == str(tmp_path / "ssh/key") and b.known_hosts == str(
        tmp_path / "ssh/kh"
    )
    assert b.profile == "emulated-pi4"  # the place's tag is over the file's default
    b1 = place_board("labgrid:shelf-b-1", PLACES["shelf-b-1"], params, s)
    assert b1.profile == "emulated-pi5"  # no tag: the file's default
    b2 = place_board("labgrid:shelf-a-2", PLACES["shelf-a-2"], params, s)
    assert (b2.profile, b2.workdir) == ("emulated-armv7", "/data/ec")  # the place's own table


def test_profile_tag_and_coordinator_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    assert farm_settings(None).coordinator == DEFAULT_COORDINATOR
    monkeypatch.setenv("LG_COORDINATOR", "lab:1234")
    s = farm_settings(boards(tmp_path, '[labgrid]\nidentity_file = "k"\n'))
    assert s.coordinator == "lab:1234" and s.wait_s == 0.0
    b = place_board("labgrid:shelf-a-2", PLACES["shelf-a-2"], ssh(address="h", username="u"), s)
    assert (b.profile, b.port) == ("emulated-pi5", 22)  # the place's edgecal_profile tag


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[labgrid]\nwait_s = -1\n", "key 'wait_s' must be a number >= 0"),
        ("[labgrid]\ncoordinator = 5\n", "key 'coordinator' must be a str"),
        ("labgrid = 3\n", "key 'labgrid' must be a table"),
        ("[labgrid]\nplaces = 1\n", "key 'places' must be a table"),
    ],
)
def test_bad_labgrid_tables(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        farm_settings(boards(tmp_path, text))


def test_bad_keys_of_a_place_name_the_place(tmp_path: Path) -> None:
    s = farm_settings(boards(tmp_path, '[labgrid]\nidentity = "k"\n'))
    with pytest.raises(ConfigError, match=r"\[labgrid\] for place p1: unknown key 'identity'"):
        place_board("labgrid:p1", {"tags": {}}, ssh(address="h", username="u"), s)
    with pytest.raises(UsageError, match="--labgrid-wait -1"):
        farm_settings(None, wait_s=-1)


def test_a_board_that_is_a_place(tmp_path: Path) -> None:
    path = boards(
        tmp_path,
        '[boards.shelf-a]\nplace = "shelf-a-1"\n[boards.pi]\nhost = "h"\n'
        '[groups]\nfarm = ["shelf-a", "pi"]\n',
    )
    b = load_boards(path)["shelf-a"]
    assert (b.name, b.place, b.source) == ("shelf-a", "shelf-a-1", path)
    assert load_boards(path)["pi"].place is None
    bad = boards(tmp_path, '[boards.shelf-a]\nplace = "shelf-a-1"\nhost = "h"\n')
    with pytest.raises(ConfigError, match=r"\[boards.shelf-a\]: key 'host' beside 'place'") as e:
        load_boards(bad)
    assert "[labgrid.places.shelf-a-1]" in (e.value.hint or "")
    with pytest.raises(ConfigError, match="is not a place name"):
        load_boards(boards(tmp_path, '[boards.x]\nplace = "a b"\n'))


@pytest.mark.parametrize(
    ("cls", "params", "serial", "server"),
    [
        ("USBADBDevice", {"serialno": "R5CT12"}, "R5CT12", None),
        ("ADBDevice", {"serialno": "R5CT12"}, "R5CT12", None),
        ("RemoteUSBADBDevice", {"host": "lab7", "serialno": "R5CT12"}, "R5CT12", "lab7:5037"),
        ("RemoteUSBADBDevice", {"host": "lab7", "port": 5038, "serialno": "X"}, "X", "lab7:5038"),
        ("NetworkADBDevice", {"host": "lab7", "port": 5037, "serialno": "X"}, "X", "lab7:5037"),
        ("NetworkADBDevice", {"host": "10.0.0.7", "port": 7101}, "10.0.0.7:7101", None),
        ("NetworkADBDevice", {"host": "10.0.0.7"}, "10.0.0.7:5555", None),
        ("RemoteADBDevice", {"host": "10.0.0.7", "port": 5556}, "10.0.0.7:5556", None),
        # an IPv6 exporter host: in brackets, as adb reads HOST:PORT
        ("NetworkADBDevice", {"host": "fd00::7"}, "[fd00::7]:5555", None),
        ("RemoteUSBADBDevice", {"host": "fd00::7", "serialno": "X"}, "X", "[fd00::7]:5037"),
    ],
)
def test_a_phone_place_is_an_adb_board(
    tmp_path: Path, cls: str, params: dict[str, object], serial: str, server: str | None
) -> None:
    """Each of labgrid's ADB resources (both names upstream used) gives the phone's serial and
    the adb server that has it; of ``[labgrid]`` a phone takes only what fits a phone."""
    s = farm_settings(
        boards(
            tmp_path,
            '[labgrid]\nidentity_file = "k"\nworkdir = ".cache/ec"\nagent = "python"\n'
            'profile = "emulated-pi4"\ncommand_timeout_s = 60\n'
            '[labgrid.places.ph]\nworkdir = "/data/local/tmp/ec2"\n',
        )
    )
    conn = Connection(f"exp/g/{cls}/{cls}", cls, params)
    b = place_board("labgrid:ph", {"tags": {"edgecal_profile": "emulated-phone-a76"}}, conn, s)
    assert (b.transport, b.serial, b.adb_server) == ("adb", serial, server)
    assert (b.profile, b.agent, b.command_timeout_s) == ("emulated-phone-a76", "native", 60.0)
    assert b.workdir == "/data/local/tmp/ec2" and b.identity_file is None
    b2 = place_board("labgrid:other", {"tags": {}}, conn, s)
    assert (b2.profile, b2.workdir) == ("emulated-pi4", "/data/local/tmp/edgecal")


def test_an_adb_resource_without_its_params_names_them(tmp_path: Path) -> None:
    s = farm_settings(None)
    for cls, params, missing in [
        ("RemoteUSBADBDevice", {"host": "lab7"}, "serialno"),
        ("NetworkADBDevice", {"port": 5555}, "host"),
        ("USBADBDevice", {}, "serialno"),
    ]:
        with pytest.raises(DeviceError) as e:
            place_board("labgrid:ph", {"tags": {}}, Connection(f"e/g/{cls}/r", cls, params), s)
        assert e.value.message == f"labgrid:ph: the place's {cls} (e/g/{cls}/r) has no '{missing}'"


def test_a_place_has_exactly_one_board_connection() -> None:
    ns = {"cls": "NetworkService", "params": {"address": "h"}}
    adb = {"cls": "NetworkADBDevice", "params": {"host": "h", "port": 5555}}
    other = {"cls": "USBSerialPort", "params": {}}
    conn = board_connection("labgrid:p", {"e/g/NetworkADBDevice/a": adb, "e/g/USB/s": other}, "c:1")
    assert (conn.path, conn.cls, conn.params) == (
        "e/g/NetworkADBDevice/a",
        "NetworkADBDevice",
        adb["params"],
    )
    with pytest.raises(DeviceError) as e:
        board_connection("labgrid:p", {"e/g/a": adb, "e/g/n": ns}, "c:1")
    assert e.value.message.startswith(
        "labgrid:p: the place has 2 board connections (NetworkADBDevice, NetworkService) at the "
        "labgrid coordinator c:1; edgecal needs exactly one: a NetworkService (a board over SSH) "
        "or an ADB resource (a phone: USBADBDevice, "
    )
    assert "delete-match" in (e.value.hint or "")
    with pytest.raises(DeviceError, match="the place has no board connection at") as e:
        board_connection("labgrid:p", {"e/g/USB/s": other}, "c:1")
    assert "add-match" in (e.value.hint or "")
