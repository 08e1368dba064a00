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

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
        name = f"exp-{board.name}"
        config = self.folder / f"{name}.yaml"
        config.write_text(
            f"{board.name}:\n"
            "  NetworkService:\n"
            f"    address: '{board.host}'\n"
            f"    username: '{board.user}'\n"
            f"    port: {board.port or 22}\n"
        )
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
        self.wait_for(f"{name}/{board.name}/NetworkService", present=True)

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
        self.stop(f"exp-{board}")
        self.wait_for(f"exp-{board}/{board}/NetworkService", present=False)

    def add_place(self, place: str, board: Board, shelf: str) -> None:
        self.client("-p", place, "create")
        self.client("-p", place, "add-match", f"exp-{board.name}/{board.name}/NetworkService")
        self.client("-p", place, "set-tags", f"shelf={shelf}", f"edgecal_profile={board.profile}")

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
