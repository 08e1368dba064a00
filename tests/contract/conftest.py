"""Device kinds for the contract suite, and the reference cases as shards.

Add a kind by extending ``DEVICE_KINDS`` and ``make_device``: every test in
``test_device_contract.py`` then runs against it too.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from refcases import Case, load_case

from edgecal.device.base import Device
from edgecal.device.capture import write_shards
from edgecal.device.local import LocalDevice
from edgecal.device.ssh.device import SshDevice
from edgecal.device.ssh.link import SshTarget

#: the emulated boards (``make boards-up``, ``EDGECAL_BOARDS``) running the native agent: the bare
#: aarch64 board told to use it, and the armv7 board (no Python: ``auto`` gives native)
BOARD_KINDS = {"ssh-native-aarch64": "emu3", "ssh-native-armv7": "emuv7"}
DEVICE_KINDS = [
    "local",
    "local-native",
    pytest.param("ssh", marks=pytest.mark.ssh),
    *(pytest.param(kind, marks=pytest.mark.board) for kind in BOARD_KINDS),
    pytest.param("adb", marks=pytest.mark.phone),
]


def is_board(device: Device) -> bool:
    """Whether the device is an emulated board (its work directory is not on this machine)."""
    return device.name in BOARD_KINDS.values()


def board_device(kind: str) -> Device:
    """The kind's board from ``$EDGECAL_BOARDS``, with the native agent (skips without the
    boards file or when the board cannot be reached, fails so under ``CI=true``)."""
    from edgecal.boards.config import load_boards
    from edgecal.boards.open import open_board
    from tests.boards.test_board_calibrate import need, unavailable

    value = os.environ.get("EDGECAL_BOARDS")
    if not value:
        unavailable("EDGECAL_BOARDS is not set (run `make boards-up` as root and export it)")
    boards_file = Path(str(value))
    name = BOARD_KINDS[kind]
    need(boards_file, name)
    board = dataclasses.replace(load_boards(boards_file)[name], agent="native")
    return open_board(board)


def make_device(kind: str, request: pytest.FixtureRequest) -> Device:
    if kind == "local":
        return LocalDevice()
    if kind == "local-native":
        # the native agent (edgecal_agent/native) built for this host, same protocol
        binary = request.getfixturevalue("native_agent_binary")
        return LocalDevice(agent="native", native_binary=binary, name="local-native")
    if kind == "ssh":
        # the loopback sshd's "board" is this host: the agent runs on this venv's python, in a
        # work directory the tests can also see locally
        sshd = request.getfixturevalue("loopback_sshd")
        workdir = tempfile.mkdtemp(prefix="edgecal-sshwd-")
        target = SshTarget(
            name="loopback",
            host=sshd.host,
            port=sshd.port,
            user=sshd.user,
            identity_file=str(sshd.client_key),
            known_hosts=str(sshd.known_hosts),
            ssh_config=str(sshd.ssh_config),
            connect_timeout_s=10,
        )
        return SshDevice(target, workdir=workdir, python=sys.executable)
    if kind in BOARD_KINDS:
        return board_device(kind)
    if kind == "adb":
        return make_phone(request)
    raise ValueError(f"unknown device kind {kind!r}")


def make_phone(request: pytest.FixtureRequest) -> Device:
    """The emulated phone of the boards file (toolchains/emuphone.sh), over the real adb, with
    the aarch64 native agent; its work directory is also seen from this host (the phone's
    root folder) as ``host_view``, for the tests that damage or plant files there."""
    from edgecal.boards.open import adb_target
    from edgecal.device.adb.device import AdbDevice

    board = request.getfixturevalue("phone_board")
    agent = request.getfixturevalue("native_agent_aarch64")
    dev = AdbDevice(adb_target(board), workdir=board.workdir, native_agent=lambda target: agent)
    state = Path(os.environ.get("EMUPHONE_STATE", "/srv/edgecal-phones"))
    view = state / "phones" / board.name / "root" / str(dev.workdir).lstrip("/")
    if view.is_dir():
        dev.host_view = view  # type: ignore[attr-defined]
    return dev


@pytest.fixture(scope="module", params=DEVICE_KINDS)
def device_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def device(device_kind: str, request: pytest.FixtureRequest) -> Iterator[Device]:
    """One device (and one agent) shared by a module's tests."""
    with make_device(device_kind, request) as dev:
        yield dev


@pytest.fixture
def fresh_device(
    device_kind: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Device]]:
    """A factory of new devices (new agent process), all closed at teardown."""
    made: list[Device] = []

    def factory() -> Device:
        made.append(make_device(device_kind, request))
        return made[-1]

    yield factory
    for dev in made:
        dev.close()


@pytest.fixture(scope="session")
def cases() -> dict[str, Case]:
    return {name: load_case(name) for name in ("digits", "npy", "multi")}


@pytest.fixture(scope="session")
def case_shards(
    cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[Path]]:
    """Each case's samples as shards of 16 (so several shards per case)."""
    out = {}
    for name, case in cases.items():
        out[name] = write_shards(
            case.samples, case.specs, tmp_path_factory.mktemp(f"shards-{name}"), shard_size=16
        )
    return out
