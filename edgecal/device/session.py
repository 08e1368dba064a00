"""A running agent in serve mode, seen through its three pipes.

The host writes job ids on the agent's stdin and waits for ``EDGECAL-DONE <id>`` on its stdout;
the job's ``EDGECAL-PROGRESS`` lines before it on stdout feed the caller's progress callback
(called in the caller's thread; on one stream none comes after the DONE). Stderr lines are
logged at DEBUG and kept (the last few) for error messages. Anything that speaks this over three
text streams works: a local subprocess (:class:`PopenProcess`, ``python agent.pyz serve``) or an
SSH channel running the same command on a board (``edgecal.device.ssh.link.ChannelProcess``);
see :class:`AgentProcess`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import IO, Protocol

from edgecal.device.base import Progress
from edgecal.errors import AgentCrash, DeviceError, ProtocolError
from edgecal_agent import PROTOCOL_VERSION
from edgecal_agent.messages import DONE_PREFIX, PROGRESS_PREFIX, READY_PREFIX

log = logging.getLogger(__name__)

_OUT, _ERR, _EOF = "out", "err", "eof"
_STDERR_TAIL = 40


def _reader(stream: IO[str], tag: str, events: queue.Queue[tuple[str, str]]) -> None:
    try:
        for line in stream:
            events.put((tag, line.rstrip("\n")))
    except (OSError, ValueError):
        pass
    finally:
        events.put((_EOF, tag))


class AgentProcess(Protocol):
    """A running agent seen as three text streams plus process control."""

    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal), else None."""

    def wait(self, timeout: float) -> int:
        """Wait for the exit status; raise ``TimeoutError`` after ``timeout`` seconds."""

    def kill(self) -> None:
        """Kill the agent (and what it started) now."""


class PopenProcess:
    """:class:`AgentProcess` over a local subprocess in its own session."""

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> None:
        self._proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C on the host terminal does not hit the agent
        )
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr
        self.stdin: IO[str] = self._proc.stdin
        self.stdout: IO[str] = self._proc.stdout
        self.stderr: IO[str] = self._proc.stderr

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float) -> int:
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError from None

    def kill(self) -> None:
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self._proc.kill()


_LOCAL_DEAD_HINT = (
    "run `python -m edgecal_agent hello` on the device to check that numpy and "
    "ncnn import; out-of-memory kills show in `dmesg`"
)


#: Signals of a crash inside the process (as opposed to a kill from outside: SIGKILL, SIGTERM).
CRASH_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")


def fatal_signal(code: int, shell_status: bool, stderr_tail: Sequence[str]) -> str:
    """The crash signal's name when the agent died of one, else ``""``.

    ``code``: a local process's return code (``-N`` for signal N) or, ``shell_status``, an
    SSH command's exit status (``128 + N``).  Python's faulthandler (the agent enables it)
    names the crash on stderr, which also covers a transport without an exit status.
    """
    number = code - 128 if shell_status and code > 128 else -code if code < 0 else 0
    with contextlib.suppress(ValueError):
        if number and signal.Signals(number).name in CRASH_SIGNALS:
            return signal.Signals(number).name
    for line in stderr_tail:
        if line.startswith("Fatal Python error: "):
            return line[len("Fatal Python error: ") :].strip() or "a fatal error"
    return ""


def describe_shell_exit(code: int, link: str) -> str:
    """How an agent started through a remote shell ended, from its wrapper's exit status
    (``128 + N``: killed by signal N; -1: no status came back over ``link``, e.g. ``the SSH
    channel``)."""
    if code == -1:
        return f"was killed (no exit status: a signal, or {link} closed)"
    if code == 127:
        return "could not be started (status 127: command not found)"
    if code > 128:
        try:
            return f"was killed by {signal.Signals(code - 128).name} (status {code})"
        except ValueError:
            return f"exited with status {code}"
    return f"exited with status {code}"


class AgentSession:
    """One agent process in serve mode.  Not thread-safe: one job at a time.

    Give ``argv`` (a local subprocess is started) or ``process`` (already started, e.g. an
    SSH channel).  ``dead_hint``: the fix to print when the agent dies.
    """

    def __init__(
        self,
        argv: Sequence[str] = (),
        *,
        device_name: str,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        startup_timeout_s: float = 60.0,
        process: AgentProcess | None = None,
        dead_hint: str = _LOCAL_DEAD_HINT,
    ) -> None:
        self.device_name = device_name
        self.argv = list(argv)
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)
        self.agent_version = ""
        self.dead_hint = dead_hint
        self._events: queue.Queue[tuple[str, str]] = queue.Queue()
        if process is None:
            if not self.argv:
                raise ValueError("AgentSession needs argv or process")
            process = PopenProcess(self.argv, env=env, cwd=cwd)
        self._proc: AgentProcess = process
        for stream, tag in ((self._proc.stdout, _OUT), (self._proc.stderr, _ERR)):
            threading.Thread(
                target=_reader,
                args=(stream, tag, self._events),
                name=f"edgecal-agent-{tag}",
                daemon=True,
            ).start()
        self._wait_ready(startup_timeout_s)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _wait_ready(self, timeout_s: float) -> None:
        line = self._next_stdout_line(timeout_s, "start", None, None)
        parts = line.split()
        if len(parts) != 3 or parts[0] != READY_PREFIX:
            self.kill()
            raise ProtocolError(
                f"{self.device_name}: the agent's first line is {line!r}, not "
                f"'{READY_PREFIX} <protocol> <version>'",
                hint="the command does not start an edgecal agent in serve mode",
            )
        if parts[1] != str(PROTOCOL_VERSION):
            self.kill()
            raise ProtocolError(
                f"{self.device_name}: the agent speaks protocol {parts[1]}, this edgecal speaks "
                f"protocol {PROTOCOL_VERSION}",
                hint="deploy the agent built from this edgecal (LocalDevice/SshDevice do so)",
            )
        self.agent_version = parts[2]

    def _next_stdout_line(
        self, timeout_s: float, what: str, job_id: str | None, progress: Progress | None
    ) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                tag, line = self._events.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                self.kill()
                raise DeviceError(
                    f"{self.device_name}: {what} did not finish within {timeout_s:g} s; "
                    "the agent was stopped",
                    hint="raise timeout_s, or send fewer samples per job",
                ) from None
            if tag == _OUT and line.startswith(PROGRESS_PREFIX):
                self._on_progress(line, job_id, progress)  # in order with the job's DONE
            elif tag == _OUT:
                return line
            elif tag == _ERR:
                self._on_stderr(line)
            elif line == _OUT:  # stdout closed: the agent is gone
                self._raise_dead(what)

    def _on_progress(self, line: str, job_id: str | None, progress: Progress | None) -> None:
        """``EDGECAL-PROGRESS <job_id> <done> <total>``: the caller's callback, for its job."""
        parts = line.split()
        if len(parts) == 4 and parts[1] == job_id and progress is not None:
            try:
                done, total = int(parts[2]), int(parts[3])
            except ValueError:
                return
            progress(done, total)

    def _on_stderr(self, line: str) -> None:
        self.stderr_tail.append(line)
        log.debug("%s agent: %s", self.device_name, line)

    def _raise_dead(self, what: str) -> None:
        try:
            code = self._proc.wait(timeout=5.0)
        except TimeoutError:
            self.kill()
            try:
                code = self._proc.wait(timeout=5.0)
            except TimeoutError:
                code = -int(signal.SIGKILL)
        # drain what stderr still holds
        while True:
            try:
                tag, line = self._events.get_nowait()
            except queue.Empty:
                break
            if tag == _ERR:
                self._on_stderr(line)
        describe = getattr(self._proc, "describe_exit", None)
        if describe is not None:
            how = describe(code)
        elif code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        tail = "\n".join(list(self.stderr_tail)[-10:])
        crash = fatal_signal(code, describe is not None, list(self.stderr_tail))
        if crash and what.startswith("job "):
            raise AgentCrash(
                f"{self.device_name}: ncnn crashed ({crash}) in the agent during {what}: the "
                "job's model or input makes ncnn fail (--debug shows the agent's stderr)",
                hint="check the model (a layer with parameters ncnn does not check, a huge "
                "shape) and --shape; a crash of the same job repeats on every try, so it was "
                "not retried",
            )
        hint = self.dead_hint
        if "WorkdirRefused" in tail:  # the agent's own start check: not an installation issue
            hint = (
                "give the device a work directory of its own inside the user's home (boards "
                'file `workdir = ".cache/edgecal"`), or set `workdir_root`'
            )
        raise DeviceError(
            f"{self.device_name}: the agent process {how} during {what}"
            + (f"; its last stderr lines:\n{tail}" if tail else ""),
            hint=hint,
        )

    def run(self, job_id: str, *, timeout_s: float, progress: Progress | None = None) -> None:
        """Ask the agent to run ``jobs/<job_id>`` and wait until it says the job is done."""
        if not self.alive():
            self._raise_dead(f"job {job_id}")
        try:
            self._proc.stdin.write(job_id + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._raise_dead(f"job {job_id}")
        what = f"job {job_id}"
        while True:
            line = self._next_stdout_line(timeout_s, what, job_id, progress)
            if line == f"{DONE_PREFIX} {job_id}":
                return
            log.debug("%s agent: unexpected stdout line %r", self.device_name, line)

    def kill(self) -> None:
        if self.alive():
            self._proc.kill()
        with contextlib.suppress(TimeoutError):
            self._proc.wait(timeout=5.0)

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask the agent to quit; kill it if it does not within ``timeout_s``."""
        if self.alive():
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self._proc.wait(timeout=timeout_s)
            except TimeoutError:
                self.kill()
        else:
            self.kill()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
