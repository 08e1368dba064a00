"""``AdbLink``: one phone through the user's ``adb`` client (a subprocess per call).

Why the ``adb`` command and not a client library (``adbutils``, ``adb-shell``): the ``adb``
server owns the USB devices (a library that talks USB itself fights it for the interface) and
the user's ``adb`` already has the phone's authorisation (``~/.android/adbkey``, accepted on
the phone once); it is the client every Android developer has, of the version that matches
their phones, and its failures read the same in edgecal's errors as in their terminal.
``adbutils`` speaks to the same server over its socket and would save a process start per
call (~10 ms, nothing next to the phone's work), at the cost of a dependency that follows
adb's private wire format.

Knows bytes and processes, nothing about calibration:

* every call has a deadline (a subprocess timeout; the whole process group is killed);
* a ``host:port`` serial is ``adb connect``-ed first, and again after the adb server
  restarted (``adb kill-server``, a reboot of the host): the new server knows no TCP phones;
* a phone at another host's adb server (``server_host``/``server_port``: a USB phone of a
  labgrid exporter) is reached with ``adb -H HOST -P PORT`` on every call, never connected;
* commands are one pre-quoted ``sh`` string (:mod:`edgecal.device.adb.shell`) whose exit status
  comes back in the output (shell protocol v1 carries none);
* adb's failures become :class:`~edgecal.errors.TransportError` naming the phone and the fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgecal.device.adb.shell import (
    EXIT_MARK,
    PID_MARK,
    agent_command,
    split_exit_status,
    with_exit_status,
)
from edgecal.device.session import describe_shell_exit
from edgecal.errors import BoardSetupError, TransportError
from edgecal_agent.messages import DONE_PREFIX, PROGRESS_PREFIX, READY_PREFIX

log = logging.getLogger(__name__)

_TCP_SERIAL = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$")
#: what adb prints when the server does not know (or lost) the phone
_GONE = ("not found", "offline", "no devices", "unauthorized", "closed", "protocol fault")
#: bytes per second assumed for a push or pull deadline (USB 2 does ~30 MB/s, Wi-Fi less)
_MIN_RATE = 256 << 10


@dataclass(frozen=True)
class AdbTarget:
    """A phone: its name (boards file or ``adb:SERIAL``), its serial (USB serial or
    ``host:port``), how long to wait for it and the adb server that has it (None: adb's
    default, this host's)."""

    name: str
    serial: str
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 3600.0
    server_host: str | None = None
    server_port: int | None = None

    @property
    def is_tcp(self) -> bool:
        """A phone this host's adb server ``adb connect``-s (another host's server owns its
        phones: they are there already)."""
        return self.server_host is None and bool(_TCP_SERIAL.match(self.serial))

    @property
    def server_args(self) -> list[str]:
        """``-H HOST -P PORT``: what every adb call starts with."""
        host = ["-H", self.server_host] if self.server_host else []
        return host + (["-P", str(self.server_port)] if self.server_port else [])


@dataclass(frozen=True)
class AdbResult:
    """A finished call: adb's exit status, what it printed (stdout, stderr) and, for a shell
    command, the command's own exit status (None: cut off)."""

    exit_code: int
    stdout: str
    stderr: str
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.status in (0, None)


def find_adb(env: Mapping[str, str] | None = None) -> str:
    """The ``adb`` to use: on PATH, else ``$ANDROID_HOME`` or ``$ANDROID_SDK_ROOT``'s
    ``platform-tools``."""
    env = os.environ if env is None else env
    found = shutil.which("adb", path=env.get("PATH"))
    if found:
        return found
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        root = env.get(var)
        if root:
            cand = Path(root) / "platform-tools" / "adb"
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    raise BoardSetupError(
        "no `adb` on PATH, in $ANDROID_HOME/platform-tools or $ANDROID_SDK_ROOT/platform-tools",
        hint="install Android's platform tools (`sudo apt install adb`, or the SDK's "
        "platform-tools) and put adb on PATH or set ANDROID_HOME",
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()


class AdbLink:
    """The ``adb`` client for one phone."""

    def __init__(
        self, target: AdbTarget, adb: str | None = None, *, shell_v1: bool = False
    ) -> None:
        self.target = target
        self.name = target.name
        self.adb = adb or find_adb()
        self._connected = False
        self._started: weakref.WeakSet[AdbProcess] = weakref.WeakSet()
        #: ``adb shell -x``: shell protocol v1 even where the phone offers v2 (as an old phone)
        self.shell = ["shell", "-x"] if shell_v1 else ["shell"]

    @property
    def address(self) -> str:
        t = self.target
        server = f"@{t.server_host or 'localhost'}:{t.server_port or 5037}" if t.server_args else ""
        return f"adb:{t.serial}{server}"

    # -- raw calls -------------------------------------------------------------------------------
    def _call(
        self, args: Sequence[str], timeout_s: float, what: str, *, serial: bool = True
    ) -> tuple[int, bytes, bytes]:
        argv = [
            self.adb,
            *self.target.server_args,
            *(("-s", self.target.serial) if serial else ()),
            *args,
        ]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C on the host terminal does not hit it; killpg
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise TransportError(
                f"{self.name}: {what} on {self.address} did not finish within {timeout_s:g} s "
                "(adb was stopped)",
                hint="check the phone (`adb devices`), its cable or network; raise "
                "command_timeout_s in the boards file for a slow link",
            ) from None
        return proc.returncode, out, err

    def connect(self) -> None:
        """``adb connect`` a ``host:port`` phone (nothing for a USB serial), then wait until
        the server has it online."""
        if self.target.is_tcp:
            code, out, err = self._call(
                ["connect", self.target.serial],
                self.target.connect_timeout_s,
                "connecting",
                serial=False,
            )
            text = (out + err).decode("utf-8", "replace").strip()
            if code != 0 or "connected to" not in text:
                raise TransportError(
                    f"{self.name}: `adb connect {self.target.serial}` failed: {text[:200]}",
                    hint="check that the phone is on and listens there (Developer options: "
                    "wireless debugging, or `adb tcpip 5555` once over USB)",
                )
        code, out, err = self._call(
            ["wait-for-device"], self.target.connect_timeout_s, "waiting for the phone"
        )
        if code != 0:
            self._gone(err.decode("utf-8", "replace"), "connecting")
        self._connected = True

    def _gone(self, text: str, what: str) -> None:
        text = text.strip().splitlines()[-1] if text.strip() else "adb failed"
        hint = (
            "run `adb devices`: a phone listed as unauthorized needs its RSA prompt accepted; "
            "check the cable"
            + (f" or `adb connect {self.target.serial}`" if self.target.is_tcp else "")
        )
        raise TransportError(f"{self.name}: lost {self.address} during {what}: {text}", hint=hint)

    def _retrying(
        self, args: Sequence[str], timeout_s: float, what: str
    ) -> tuple[int, bytes, bytes]:
        """One adb call; when adb no longer knows the phone (a restarted server, a dropped TCP
        link), connect once and call again."""
        if not self._connected:
            self.connect()
        code, out, err = self._call(args, timeout_s, what)
        text = err.decode("utf-8", "replace")
        if code != 0 and any(g in text for g in _GONE):
            log.info("%s: adb lost the phone (%s); connecting again", self.name, text.strip())
            self.connect()
            code, out, err = self._call(args, timeout_s, what)
        return code, out, err

    # -- commands --------------------------------------------------------------------------------
    def run(self, script: str, *, timeout_s: float | None = None) -> AdbResult:
        """Run ``script`` (a ``sh`` text whose words are already quoted) on the phone; its
        output (stdout and stderr as one stream) and its exit status.  A non-zero status is
        a result; a cut-off command or adb's failure raise ``TransportError``."""
        timeout = self.target.command_timeout_s if timeout_s is None else timeout_s
        code, out, err = self._retrying(
            [*self.shell, with_exit_status(script)], timeout, f"running `{_short(script)}`"
        )
        text, status = split_exit_status(out.decode("utf-8", "replace"))
        if status is None:
            why = err.decode("utf-8", "replace").strip() or "cut off (no exit status came back)"
            self._gone(why, f"running `{_short(script)}`")
        return AdbResult(code, text, err.decode("utf-8", "replace"), status)

    def push(self, local: Path, remote: str) -> None:
        """``adb push`` one file (or a folder into an existing folder)."""
        size = local.stat().st_size if local.is_file() else 0
        self._transfer(["push", str(local), remote], size, f"pushing {local.name}")

    def pull(self, remote: str, local: Path, size: int) -> None:
        self._transfer(["pull", remote, str(local)], size, f"pulling {remote}")

    def _transfer(self, args: Sequence[str], size: int, what: str) -> None:
        timeout = max(self.target.connect_timeout_s, 60.0) + size / _MIN_RATE
        code, out, err = self._retrying(args, timeout, what)
        if code != 0:
            text = (err or out).decode("utf-8", "replace").strip()
            if any(g in text for g in _GONE):
                self._gone(text, what)
            raise TransportError(
                f"{self.name}: {what} failed: {text[-300:]}",
                hint=f"run `edgecal board check {self.name}` (disk full, or the work "
                "directory not writable?)",
            )

    def start(self, argv: Sequence[str], cwd: str) -> AdbProcess:
        """Start ``argv`` on the phone in ``cwd`` with its streams wired to this host."""
        if not self._connected:
            self.connect()
        proc = AdbProcess(self, argv, cwd)
        self._started.add(proc)
        return proc

    def close(self) -> None:
        """Stop the ``adb`` processes of :meth:`start` here (nothing is sent to the phone: it
        may not be ours any more); the next call connects again."""
        for proc in list(self._started):
            _kill_group(proc._proc)
        self._connected = False

    def kill_remote(self, pid: int) -> None:
        with contextlib.suppress(TransportError):
            self.run(f"kill -9 {int(pid)}", timeout_s=max(self.target.connect_timeout_s, 10.0))

    def is_online(self) -> bool:
        """Whether adb has the phone online now (no reconnect)."""
        try:
            code, out, _ = self._call(
                ["get-state"], max(self.target.connect_timeout_s, 5.0), "asking its state"
            )
        except TransportError:
            return False
        return code == 0 and out.decode("utf-8", "replace").strip() == "device"

    def reconnect(self) -> None:
        if self.target.is_tcp:
            with contextlib.suppress(TransportError):
                self._call(
                    ["disconnect", self.target.serial],
                    self.target.connect_timeout_s,
                    "disconnecting",
                    serial=False,
                )
        self._connected = False
        self.connect()


class _Pipe:
    """A text stream fed by a thread (one side of :class:`AdbProcess`'s split output)."""

    def __init__(self) -> None:
        r, w = os.pipe()
        self.reader: IO[str] = os.fdopen(r, "r", encoding="utf-8", errors="replace")
        self.writer: IO[str] = os.fdopen(w, "w", encoding="utf-8", errors="replace")


class AdbProcess:
    """:class:`edgecal.device.session.AgentProcess` over one ``adb shell``.

    Shell v1 has one output stream: the agent runs with stderr on stdout and this class
    splits the lines again -- the protocol's lines (``EDGECAL-READY``, a job's
    ``EDGECAL-PROGRESS`` and ``EDGECAL-DONE``, in their order) to :attr:`stdout`, everything
    else (messages) to :attr:`stderr`.  The wrapper's
    first line is the agent's pid on the phone (:meth:`kill` kills exactly it); its last the
    exit status (:meth:`poll`; -1 when the connection ended without one).  Job ids go to the
    agent's stdin through adb's stdin (both shell protocols forward it).
    """

    _STDOUT_PREFIXES = (READY_PREFIX, PROGRESS_PREFIX, DONE_PREFIX)

    def __init__(self, link: AdbLink, argv: Sequence[str], cwd: str) -> None:
        self._link = link
        self.argv = list(argv)
        self._proc = subprocess.Popen(
            [
                link.adb,
                *link.target.server_args,
                *("-s", link.target.serial, *link.shell, agent_command(argv, cwd)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr
        self.stdin: IO[str] = _TextIn(self._proc.stdin)  # type: ignore[assignment]
        self._out, self._err = _Pipe(), _Pipe()
        self.stdout: IO[str] = self._out.reader
        self.stderr: IO[str] = self._err.reader
        self._pid = 0
        self._status: int | None = None
        self._have_pid = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._split, daemon=True, name="edgecal-adb-split").start()
        threading.Thread(target=self._adb_stderr, daemon=True, name="edgecal-adb-err").start()
        self._have_pid.wait(max(link.target.connect_timeout_s, 10.0) * 3)

    def _split(self) -> None:
        assert self._proc.stdout is not None
        try:
            for raw in self._proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith(PID_MARK) and not self._pid:
                    with contextlib.suppress(ValueError):
                        self._pid = int(line[len(PID_MARK) :].strip())
                    self._have_pid.set()
                elif line.startswith(EXIT_MARK):
                    with contextlib.suppress(ValueError):
                        self._status = int(line[len(EXIT_MARK) :].strip())
                elif line.startswith(self._STDOUT_PREFIXES):
                    self._write(self._out.writer, line)
                elif line:
                    self._write(self._err.writer, line)
        except (OSError, ValueError):
            pass
        finally:
            self._have_pid.set()
            with contextlib.suppress(OSError):
                self._proc.wait(timeout=30)
            self._done.set()
            for w in (self._out.writer, self._err.writer):
                with contextlib.suppress(OSError):
                    w.close()

    def _adb_stderr(self) -> None:
        assert self._proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for raw in self._proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    self._write(self._err.writer, f"adb: {line}")

    @staticmethod
    def _write(w: IO[str], line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            w.write(line + "\n")
            w.flush()

    @property
    def pid(self) -> int:
        return self._pid

    def poll(self) -> int | None:
        if not self._done.is_set():
            return None
        return -1 if self._status is None else self._status

    def wait(self, timeout: float) -> int:
        if not self._done.wait(timeout):
            raise TimeoutError
        code = self.poll()
        assert code is not None
        return code

    def kill(self) -> None:
        if self._pid and not self._done.is_set():
            self._link.kill_remote(self._pid)
        _kill_group(self._proc)

    @staticmethod
    def describe_exit(code: int) -> str:
        return describe_shell_exit(code, "the adb connection")


class _TextIn:
    """Text written to adb's stdin, unbuffered."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(text.encode("utf-8"))
        self._raw.flush()
        return len(text)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._raw.close()


def _short(script: str, limit: int = 60) -> str:
    text = " ".join(script.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
