"""A phone at an adb server reached over IPv6 (``adb_server = "[::1]:PORT"``, what a labgrid
place with an IPv6 exporter host gives): the emulated phone, given to an adb server of the
test's own that listens on ``[::1]`` only (``adb -L tcp:[::1]:PORT server nodaemon``),
answers hello through ``adb -H [::1] -P PORT`` on every call.  This host's own adb server
does not know that serial, so a call that dropped ``-H``/``-P`` (or the brackets, which adb 29
needs) fails."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgecal.api.boards import open_device
from edgecal.device.adb.link import find_adb

pytestmark = pytest.mark.phone


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def v6_server(phone_board: Any) -> Iterator[tuple[int, str]]:
    """An adb server on ``[::1]:PORT`` that has the emulated phone, ``adb connect``-ed as
    ``localhost:PHONE_PORT`` (a serial this host's own adb server does not know):
    ``(port, serial)``."""
    if not _ipv6_loopback():
        pytest.fail("this host has no IPv6 loopback (::1)")
    adb, port = find_adb(), _free_port()
    server = subprocess.Popen(
        [adb, "-L", f"tcp:[::1]:{port}", "server", "nodaemon"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    via = [adb, "-H", "[::1]", "-P", str(port)]
    serial = "localhost:" + str(phone_board.serial).rsplit(":", 1)[1]
    try:
        said = ""
        for _ in range(50):  # the server listens within a moment
            r = subprocess.run(
                [*via, "connect", serial], capture_output=True, text=True, timeout=30
            )
            said = r.stdout + r.stderr
            if "connected to" in said:
                break
            time.sleep(0.1)
        assert "connected to" in said, said
        yield port, serial
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_phone_at_an_ipv6_adb_server_answers(
    v6_server: tuple[int, str], phone_board: Any, tmp_path: Path
) -> None:
    port, serial = v6_server
    boards = tmp_path / "boards.toml"
    boards.write_text(
        'schema = 1\n[boards.v6]\ntransport = "adb"\n'
        f'serial = "{serial}"\nadb_server = "[::1]:{port}"\nprofile = "{phone_board.profile}"\n'
    )
    with open_device("v6", boards=boards) as device:
        assert device.target.server_args == ["-H", "[::1]", "-P", str(port)]  # type: ignore[attr-defined]
        facts = device.hello()
    assert facts["agent_kind"] == "native"
