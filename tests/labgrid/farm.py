"""A real labgrid farm on 127.0.0.1 for the tests: ``labgrid-coordinator`` and
``labgrid-exporter`` processes (free ports, temporary folders) exporting the emulated boards'
``NetworkService`` resources, and places made with ``labgrid-client``.

Each exporter publishes one board (group = the board's name, exporter ``exp-BOARD``), so a test
can take one board's exporter away.  Place ``lab-BOARD`` matches ``exp-BOARD/BOARD/NetworkService``
and has the tags ``shelf`` and ``edgecal_profile`` (the board's profile); the boards file the
tests use has a ``[labgrid]`` table naming the coordinator and the emulated boards' key and
known hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecal.boards.config import Board

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def labgrid_installed() -> str | None:
    """Why the farm cannot start (None: it can)."""
    for tool in ("labgrid-coordinator", "labgrid-exporter", "labgrid-client"):
        if not (BIN / tool).exists() and shutil.which(tool) is None:
            return f"{tool} is not installed (pip install 'edgecal[labgrid]')"
    return None


def tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


@dataclass
class Farm:
    folder: Path
    address: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    exported: dict[str, str] = field(default_factory=dict)  # exporter -> its resource

    def env(self, user: str | None = None) -> dict[str, str]:
        env = dict(os.environ, LG_COORDINATOR=self.address)
        if user is not None:
            env["LG_USERNAME"] = user
        return env

    def client(self, *argv: str, user: str | None = None, check: bool = True) -> str:
        """``labgrid-client ARGV`` (as ``user``: another client than this process)."""
        r = subprocess.run(
            [tool("labgrid-client"), *argv],
            env=self.env(user),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"labgrid-client {' '.join(argv)}: {r.stdout}{r.stderr}")
        return r.stdout + r.stderr

    def _start(self, key: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{key}.log", "wb")  # noqa: SIM115 -- the process's
        proc = subprocess.Popen(
            argv, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=self.env()
        )
        log.close()
        self.procs[key] = proc
        return proc

    def start_coordinator(self) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self._start("coordinator", [tool("labgrid-coordinator"), "-l", self.address])
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if self.procs["coordinator"].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"labgrid-coordinator did not start: {self.log('coordinator')}"
                )
            time.sleep(0.1)

    def start_exporter(self, board: Board) -> None:
        """An exporter ``exp-BOARD`` publishing the board's NetworkService; back when the
        coordinator lists it."""
        params = {"address": board.host, "username": board.user, "port": board.port or 22}
        self.export(f"exp-{board.name}", board.name, "NetworkService", params)

    def export(self, name: str, group: str, cls: str, params: dict[str, Any]) -> None:
        """An exporter ``name`` publishing one resource ``group/cls`` (a class labgrid 26.0.1
        does not know -- the ADB ones -- goes out as a generic entry with its params); back
        when the coordinator lists it."""
        config = self.folder / f"{name}.yaml"
        lines = [
            f"{group}:",
            f"  {cls}:",
            *(f"    {k}: {json.dumps(v)}" for k, v in params.items()),
        ]
        config.write_text("\n".join(lines) + "\n")
        self._start(
            name,
            [
                tool("labgrid-exporter"),
                "-c",
                self.address,
                "-n",
                name,
                "--hostname",
                "127.0.0.1",
                str(config),
            ],
        )
        self.exported[name] = f"{name}/{group}/{cls}"
        self.wait_for(self.exported[name], present=True)

    def wait_for(self, resource: str, *, present: bool) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (resource in self.client("resources")) != present:
            if time.monotonic() > deadline:
                raise AssertionError(f"{resource} not {'up' if present else 'gone'}")
            time.sleep(0.2)

    def stop(self, key: str) -> None:
        proc = self.procs.pop(key, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop_exporter(self, board: str) -> None:
        """Stop exporter ``exp-BOARD``; back when its resource is gone from the coordinator."""
        self.stop(f"exp-{board}")
        self.wait_for(self.exported[f"exp-{board}"], present=False)

    def add_place(self, place: str, board: Board, shelf: str) -> None:
        self.add_place_matching(
            place,
            [f"exp-{board.name}/{board.name}/NetworkService"],
            shelf=shelf,
            edgecal_profile=str(board.profile),
        )

    def add_place_matching(self, place: str, matches: list[str], **tags: str) -> None:
        """Place ``place`` matching each of ``matches`` (``exporter/group/cls``), with ``tags``."""
        self.client("-p", place, "create")
        for match in matches:
            self.client("-p", place, "add-match", match)
        if tags:
            self.client("-p", place, "set-tags", *(f"{k}={v}" for k, v in tags.items()))

    def log(self, key: str) -> str:
        path = self.folder / f"{key}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self) -> None:
        for key in [k for k in self.procs if k != "coordinator"]:
            self.stop(key)
        self.stop("coordinator")


def boards_text(farm: Farm, board: Board) -> str:
    """A boards file whose ``[labgrid]`` table gives every place the emulated boards' key and
    known hosts (``board``'s)."""
    return (
        "schema = 1\n\n[labgrid]\n"
        f'coordinator = "{farm.address}"\n'
        f'identity_file = "{board.identity_file}"\n'
        f'known_hosts = "{board.known_hosts}"\n'
        f'workdir = "{board.workdir}"\n'
        "connect_timeout_s = 10\n"
    )


@dataclass
class AdbServer:
    """An adb server of its own on 127.0.0.1 (the exporter host's): a phone "on USB" there is
    an emulated phone it ``adb connect``-ed as ``localhost:PORT``, a serial this host's adb
    server does not know -- a call without ``-H``/``-P`` does not find it."""

    adb: str
    port: int = field(default_factory=free_port)
    serial: str = ""  # the phone's serial there (plug())

    def run(self, *argv: str) -> str:
        r = subprocess.run(
            [self.adb, "-P", str(self.port), *argv], capture_output=True, text=True, timeout=60
        )
        return r.stdout + r.stderr

    def plug(self, phone_port: int) -> str:
        """Start the server and give it the emulated phone at 127.0.0.1:``phone_port``: its
        serial there."""
        self.serial = f"localhost:{phone_port}"
        self.run("start-server")
        said = self.run("connect", self.serial)
        if "connected to" not in said:
            raise AssertionError(f"adb -P {self.port} connect {self.serial}: {said}")
        return self.serial

    def close(self) -> None:
        self.run("kill-server")
