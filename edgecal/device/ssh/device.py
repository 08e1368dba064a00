"""``SshDevice``: the same agent and job protocol as ``LocalDevice``, on a board over SSH.

Layout on the board, all under one work directory (default ``~/.cache/edgecal``, relative to
the SFTP home)::

    <workdir>/edgecal-agent-<sha12>.pyz     the agent zipapp, named by its hash
    <workdir>/files/<sha256>/<name>         pushed models and shards, content-addressed
    <workdir>/jobs/<job_id>/...             one job: request, inputs, artifacts, response
    <workdir>/site/                         numpy + ncnn installed by `edgecal board provision`

Every remote path is built from the resolved work directory and a checked relative name (no
``..``, no absolute path, no NUL) and every directory on the way is ``lstat``-ed: a symlink is
refused.  Pushes, marks, staging and the collection of job outputs are
:class:`~edgecal.device.remote.RemoteDevice`'s; this module gives them SFTP and SSH commands.
The agent runs as ``python3 <workdir>/edgecal-agent-<sha>.pyz serve --workdir <workdir>`` on one
SSH channel (:class:`AgentSession` over :class:`ChannelProcess`) -- or, on a board without
Python (``agent="native"``, or ``"auto"`` and no Python with numpy and ncnn there), as
``<workdir>/edgecal-agent-native-<target>-<sha12> serve --workdir <workdir>``: the C++ agent,
statically linked with ncnn, same protocol.  Nothing of the native path needs Python on the
board: its facts come from a POSIX sh probe, and a pushed file whose mark is missing is pushed
again instead of being hashed there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import paramiko

from edgecal.device.base import Submission
from edgecal.device.nativeagent import (
    NativeAgentSource,
    built_native_agent,
    cached_native_agent,
)
from edgecal.device.package import agent_zipapp_bytes, agent_zipapp_name
from edgecal.device.probe import (
    AGENT_SETTINGS,
    AgentChoice,
    BoardFacts,
    choose_agent,
    native_problems,
    native_target,
    parse_probe,
    parse_shell_probe,
    probe_argv,
    problems,
    shell_probe_argv,
)
from edgecal.device.remote import (
    MAX_RESPONSE_BYTES,
    PushCheck,
    RemoteDevice,
    mark_mtime,
)
from edgecal.device.session import AgentProcess
from edgecal.device.snippets import board_snippet
from edgecal.device.ssh.link import ChannelProcess, SshLink, SshTarget
from edgecal.errors import BoardSetupError, DeviceError, ProtocolError, TransportError
from edgecal_agent.messages import JOBS_DIR, RESPONSE_FILE, check_relpath
from edgecal_agent.workdir import DEFAULT_WORKDIR

log = logging.getLogger(__name__)

SITE_DIR = "site"


def hash_argv(python: str, workdir: str, rels: Sequence[str]) -> list[str]:
    """The remote argv of ``board_snippets/sha256_files.py`` under -I -S (no site, fast):
    it prints ``{"REL": sha256 | null}`` (null: absent, not a regular file, or reached through
    a symlink) on its last line."""
    return [python, "-I", "-S", "-c", board_snippet("sha256_files.py"), workdir, *rels]


def parse_hashes(stdout: str, board: str) -> dict[str, str | None]:
    """The hashing program's answer, or a ``ProtocolError`` naming ``board``."""
    try:
        return dict(json.loads(stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        raise ProtocolError(
            f"{board}: unexpected answer of the hashing helper: {stdout[:200]!r}"
        ) from None


#: The board's Python redoing a failed SFTP operation: prints ``err ERRNO TEXT`` or ``ok 0 ok``.
_ERRNO_PY = (
    "import errno, os, sys\n"
    "p, n = sys.argv[1], int(sys.argv[2])\n"
    "d = p if n < 0 else os.path.dirname(p)\n"
    "try:\n"
    "    os.makedirs(d, exist_ok=True)\n"
    "    if n >= 0:\n"
    "        t = p + '.edgecal-errno'\n"
    "        with open(t, 'wb') as f:\n"
    "            f.write(bytes(max(n, 1))); f.flush(); os.fsync(f.fileno())\n"
    "        os.remove(t)\n"
    "    print('ok 0 ok')\n"
    "except OSError as e:\n"
    "    print('err', e.errno, e.strerror)\n"
)

#: The same with POSIX ``sh`` alone (boards without Python): ``err <the tools' message>`` or
#: ``ok``.  ``$1``: the path, ``$2``: the bytes to write there (-1: ``mkdir -p`` it).
_ERRNO_SH = """p=$1; n=$2
if [ "$n" -lt 0 ]; then d=$p; else d=$(dirname -- "$p"); fi
e=$(mkdir -p -- "$d" 2>&1) || { echo "err $e"; exit 0; }
if [ "$n" -ge 0 ]; then
  t=$p.edgecal-errno
  [ "$n" -gt 0 ] || n=1
  e=$( { head -c "$n" /dev/zero > "$t"; } 2>&1 ) || {
    rm -f -- "$t"; echo "err $e"; exit 0; }
  rm -f -- "$t"
fi
[ -w "$d" ] || { echo "err $d: Permission denied"; exit 0; }
echo ok"""

#: The errnos a failed write is told by, and a piece of their message (glibc's, musl's and
#: busybox's wordings).
_ERRNO_TEXTS = (
    (errno.EROFS, "Read-only file system"),
    (errno.ENOSPC, "No space left on device"),
    (errno.EDQUOT, "uota exceeded"),
    (errno.EACCES, "Permission denied"),
    (errno.EPERM, "Operation not permitted"),
    (errno.ENOTDIR, "Not a directory"),
)


def errno_of_message(text: str) -> tuple[int, str] | None:
    """``(errno, strerror)`` of the first error named in a tool's message (``sh: can't create
    x: Read-only file system``), or None."""
    for code, words in _ERRNO_TEXTS:
        if words in text:
            return code, os.strerror(code)
    return None


class SshDevice(RemoteDevice):
    """A board over SSH.  Connects (and checks the host key) at construction.

    ``workdir``: relative to the SFTP home (``~/`` is accepted) or absolute.  ``python``: the
    board's interpreter.  ``threads``: default ncnn thread count for ``deployed`` jobs.
    ``agent``: ``python``, ``native`` or ``auto`` (asked of the board at the first agent
    start: :func:`edgecal.device.probe.choose_agent`).  ``native_agent``: where the native
    binary for a target comes from (default: ``edgecal.native``'s cache, built there first
    when ``agent="native"``; with ``auto`` only a cached one is taken).
    """

    machine = "board"
    link_kind = "SSH"
    lost_hint = "check the board's power and network, then rerun (`edgecal board check {name}`)"
    dead_hint = "out-of-memory kills show in `dmesg` on the board"
    target: SshTarget
    link: SshLink

    def __init__(
        self,
        target: SshTarget,
        *,
        workdir: str = DEFAULT_WORKDIR,
        python: str = "python3",
        threads: int | None = None,
        startup_timeout_s: float = 120.0,
        workdir_root: str | None = None,
        agent: str = "python",
        native_agent: NativeAgentSource | None = None,
    ) -> None:
        if agent not in AGENT_SETTINGS:
            raise ValueError(f"agent must be one of {AGENT_SETTINGS}, not {agent!r}")
        super().__init__(target, threads=threads, startup_timeout_s=startup_timeout_s)
        self.agent_setting = agent
        self._agent_choice: AgentChoice | None = None
        self._python_facts: BoardFacts | None = None  # what the Python probe said, when asked
        self._native_agent = native_agent
        # the agent refuses a work directory whose real path leaves its root (default: the
        # board user's home); an absolute workdir configured without a root is its own root's
        # child (its parent, never /)
        self.workdir_root = (
            workdir_root
            if workdir_root is not None
            else (
                posixpath.dirname(posixpath.normpath(workdir)) if workdir.startswith("/") else None
            )
        )
        self.python = python

        def resolve() -> None:
            self.workdir = self._resolve_workdir(workdir)

        self._open(lambda: SshLink(target), resolve)

    # -- paths -----------------------------------------------------------------------------------
    def _explain_oserror(self, e: OSError, what: str, path: str, size: int = 0) -> DeviceError:
        """The error (with its fix) for an SFTP failure on the board.  SFTP v3 reports EROFS
        and ENOSPC both as a bare "Failure": then the board is asked what the errno is."""
        code, text = e.errno, str(e)
        if code is None or text.strip() in ("Failure", "[Errno None] Failure"):
            code, text = self._errno_on_board(path, size, fallback=(code, text))
        writable_fix = (
            "fix its owner/permissions on the board (`chown -R USER DIR`) or set "
            "`workdir = ...` in the boards file to a writable directory"
        )
        if code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR) or "ermission" in text:
            return BoardSetupError(
                f"{self.name}: the work directory is not writable: {what} {path}: {text}",
                hint=writable_fix,
            )
        if code in (errno.ENOSPC, errno.EDQUOT):
            return BoardSetupError(
                f"{self.name}: the board's disk is full: {what} {path}: {text}",
                hint=f"free disk space on the board (`edgecal board check {self.name}` shows "
                "the free space) or move the work directory",
            )
        return BoardSetupError(
            f"{self.name}: {what} {path} failed: {text} (work directory not writable or disk "
            "full?)",
            hint=f"run `edgecal board check {self.name}`; {writable_fix}",
        )

    def _errno_on_board(self, path: str, size: int, fallback: tuple[Any, str]) -> tuple[Any, str]:
        """Redo the failed operation on the board to learn its errno: with the board's
        Python, or with ``sh`` where no Python answers (a native-agent board)."""
        try:
            res = self.link.run(
                [self.python, "-I", "-S", "-c", _ERRNO_PY, path, str(size)], timeout_s=60.0
            )
            kind, num, text = res.stdout.strip().split(" ", 2)
        except (DeviceError, ValueError):
            return self._errno_by_sh(path, size, fallback)
        return (int(num), text) if kind == "err" else fallback

    def _errno_by_sh(self, path: str, size: int, fallback: tuple[Any, str]) -> tuple[Any, str]:
        try:
            res = self.link.run(
                ["sh", "-c", _ERRNO_SH, "edgecal-errno", path, str(size)], timeout_s=60.0
            )
        except DeviceError:
            return fallback
        found = errno_of_message(res.stdout) if res.stdout.startswith("err ") else None
        return found or fallback

    def _sh(self, script: str, args: Sequence[str], what: str) -> str:
        res = self.link.run(["sh", "-c", script, "edgecal", *args])
        if res.exit_code != 0:
            last = (res.stderr.strip().splitlines() or ["?"])[-1]
            raise DeviceError(
                f"{self.name}: {what} failed (exit {res.exit_code}): {last}",
                hint=self._check_hint,
            )
        return str(res.stdout)

    def _resolve_workdir(self, workdir: str) -> PurePosixPath:
        wd = workdir[2:] if workdir.startswith("~/") else workdir
        parts = PurePosixPath(wd).parts
        if not wd or ".." in parts or "\x00" in wd:
            raise BoardSetupError(
                f"{self.name}: work directory {workdir!r} is not a clean path",
                hint="use a path like .cache/edgecal (relative to the home)",
            )
        with self.link.sftp_op("resolving the work directory") as sftp:
            home = sftp.normalize(".")
            base = "/" if wd.startswith("/") else home

            def check(path: str, st: Any) -> None:
                if stat.S_ISLNK(st.st_mode or 0) and path.startswith(home + "/"):
                    raise BoardSetupError(
                        f"{self.name}: {path} is a symlink; the work directory must be a real "
                        "directory",
                        hint="remove the link or choose another workdir",
                    )
                if not stat.S_ISDIR(st.st_mode or 0) and not stat.S_ISLNK(st.st_mode or 0):
                    raise BoardSetupError(
                        f"{self.name}: the work directory is not writable: {path} is not a "
                        "directory",
                        hint="remove that file or set `workdir = ...` in the boards file",
                    )

            path = self._mkdirs(sftp, base.rstrip("/"), [p for p in parts if p != "/"], check)
            real = sftp.normalize(path)
        return PurePosixPath(real)

    def _mkdirs(
        self, sftp: Any, start: str, comps: Sequence[str], check: Callable[[str, Any], None]
    ) -> str:
        """``mkdir -p start/comps...`` over SFTP; ``check(path, lstat)`` vets what exists."""
        path = start
        for comp in comps:
            path = f"{path}/{comp}"
            try:
                st = sftp.lstat(path)
            except FileNotFoundError:
                try:
                    sftp.mkdir(path, 0o755)
                except OSError as e:
                    raise self._explain_oserror(e, "cannot create", path, -1) from None
                continue
            except OSError as e:
                raise self._explain_oserror(e, "cannot look at", path) from None
            check(path, st)
        return path

    def _ensure_dir(self, rel: str) -> None:
        """``mkdir -p`` of a workdir-relative dir via SFTP, refusing symlinks on the way."""

        def check(path: str, st: Any) -> None:
            if not stat.S_ISDIR(st.st_mode or 0):
                raise DeviceError(
                    f"{self.name}: {path} is not a directory (symlinks are refused inside "
                    "the work directory)",
                    hint="remove it from the board's work directory",
                )

        with self.link.sftp_op("creating directories") as sftp:
            self._mkdirs(
                sftp, str(self.workdir), PurePosixPath(check_relpath(rel, "dir")).parts, check
            )

    # -- hashes on the board -------------------------------------------------------------------
    def remote_sha256(self, *rels: str) -> dict[str, str | None]:
        """sha256 of workdir files on the board (None: absent or not a regular file); costs a
        Python start there (~0.5 s under qemu), so it is only asked when a mark is missing."""
        for r in rels:
            check_relpath(r, "remote path")
        if self.agent_choice.kind == "native":  # no Python there: such a file is pushed again
            return dict.fromkeys(rels)
        res = self.link.run(
            hash_argv(self.python, str(self.workdir), rels),
            timeout_s=max(60.0, self.target.connect_timeout_s),
        )
        if not res.ok:
            self._raise_setup(
                f"hashing files on the board failed: "
                f"{(res.stderr.strip().splitlines() or ['?'])[-1]}"
            )
        return parse_hashes(res.stdout, self.name)

    # -- transport: SFTP -------------------------------------------------------------------------
    def _hash(self, rel: str) -> str | None:
        return self.remote_sha256(rel).get(rel)

    def _file_states(self, checks: Sequence[PushCheck]) -> list[str]:
        """One SFTP lstat per path component (cheap: no process starts on the board), no
        symlink accepted on the way."""
        with self.link.sftp_op("looking at a pushed file") as sftp:
            return [self._file_state(sftp, c) for c in checks]

    def _file_state(self, sftp: paramiko.SFTPClient, check: PushCheck) -> str:
        path = str(self.workdir)
        parts = PurePosixPath(check.rel).parts
        try:
            for i, comp in enumerate(parts):
                path = f"{path}/{comp}"
                st = sftp.lstat(path)
                want = stat.S_ISREG if i == len(parts) - 1 else stat.S_ISDIR
                if not want(st.st_mode or 0):
                    return "bad"
        except FileNotFoundError:
            return "absent"
        except OSError:
            return "unknown"
        ok = st.st_size == check.size and st.st_mtime == check.mark
        return "verified" if ok else "unknown"

    def _set_mark(self, rel: str, mark: int) -> None:
        with contextlib.suppress(OSError), self.link.sftp_op("marking a file") as sftp:
            sftp.utime(self.remote(rel), (mark, mark))

    def _stage(self, local: Path, rel: str) -> None:
        tmp = self.remote(self.staging_rel(rel))
        with self.link.sftp_op(f"uploading {local.name}") as sftp:
            try:
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISLNK(sftp.lstat(tmp).st_mode or 0):
                        sftp.remove(tmp)
                sftp.put(str(local), tmp, confirm=True)
            except OSError as e:
                with contextlib.suppress(OSError):
                    sftp.remove(tmp)
                raise self._explain_oserror(
                    e, "cannot upload to", tmp, local.stat().st_size
                ) from None

    def _place(self, local: Path, rel: str, mark: int, mode: str | None) -> None:
        tmp, final = self.remote(self.staging_rel(rel)), self.remote(rel)
        with self.link.sftp_op(f"placing {local.name}") as sftp:
            try:
                if mode is not None:
                    sftp.chmod(tmp, int(mode, 8))
                try:
                    sftp.posix_rename(tmp, final)
                except OSError:  # no posix-rename@openssh.com: plain rename needs no target
                    with contextlib.suppress(FileNotFoundError):
                        sftp.remove(final)
                    sftp.rename(tmp, final)
            except OSError as e:
                with contextlib.suppress(OSError):
                    sftp.remove(tmp)
                raise self._explain_oserror(e, "cannot move the upload to", final) from None
        self._set_mark(rel, mark)

    # -- agent -----------------------------------------------------------------------------------
    @property
    def site_dir(self) -> str:
        return posixpath.join(str(self.workdir), SITE_DIR)

    @property
    def agent_choice(self) -> AgentChoice:
        """Which agent this board gets, and why (asks the board once when ``auto``)."""
        if self._agent_choice is None:
            facts = self.probe_python() if self.agent_setting == "auto" else None
            self._python_facts = facts
            self._agent_choice = choose_agent(self.agent_setting, facts)
        return self._agent_choice

    def probe(self) -> BoardFacts:
        """What the board offers the agent it gets: Python, numpy, ncnn (Python agent), CPU,
        memory, disk (see probe.py)."""
        if self.agent_choice.kind == "native":
            # a board whose Python lacks numpy/ncnn: its Python already said everything
            known = self._python_facts
            return known if known is not None and known.facts else self.probe_shell()
        return self.probe_python()

    def probe_shell(self) -> BoardFacts:
        """The board's facts through ``sh`` alone (boards without Python)."""
        res = self.link.run(
            shell_probe_argv(str(self.workdir)),
            timeout_s=max(120.0, self.target.connect_timeout_s),
        )
        return parse_shell_probe(res.exit_code, res.stdout, res.stderr)

    def probe_python(self) -> BoardFacts:
        """The board's facts through its Python (``self.python``)."""
        res = self.link.run(
            probe_argv(self.python, str(self.workdir), self.site_dir),
            timeout_s=max(120.0, self.target.connect_timeout_s),
        )
        facts = parse_probe(self.python, res.exit_code, res.stdout, res.stderr)
        if facts.python is None and res.exit_code != 127:
            # an interpreter too old to run the probe still says its version
            ver = self.link.run([self.python, "-V"], timeout_s=60.0)
            m = re.search(r"Python (\d+)\.(\d+)(?:\.(\d+))?", ver.stdout + ver.stderr)
            if m:
                return BoardFacts(
                    python=".".join(g or "0" for g in m.groups()), python_error=facts.python_error
                )
        return facts

    def _raise_setup(self, fallback: str) -> NoReturn:
        """Diagnose why the agent cannot run; raise the first problem with its fix."""
        facts = self.probe()
        found = (
            native_problems(facts, board=self.name)
            if self.agent_choice.kind == "native"
            else problems(facts, board=self.name, python=self.python)
        )
        for p in found:
            raise BoardSetupError(f"{self.name}: {p.what}", hint=p.fix)
        raise BoardSetupError(
            f"{self.name}: {fallback}", hint=f"run `edgecal board check {self.name}`"
        )

    def native_target(self) -> str:
        """The native agent's target for this board (``uname -m``)."""
        res = self.link.run(["uname", "-m"], timeout_s=max(60.0, self.target.connect_timeout_s))
        machine = res.stdout.strip()
        target = native_target(machine) if res.ok else None
        if target is None:
            raise BoardSetupError(
                f"{self.name}: no native agent for machine {machine or '?'} (uname -m: "
                f"{(res.stdout + res.stderr).strip()[:120]!r})",
                hint="native agents exist for aarch64, armv7 and x86_64; on another board use "
                'the Python agent (`agent = "python"` in the boards file)',
            )
        return target

    def _deploy_native(self) -> str:
        target = self.native_target()
        if self._native_agent is not None:
            local = Path(self._native_agent(target))
        elif self.agent_setting == "native":  # asked for: built when it is not cached yet
            local = built_native_agent(target)
        else:
            local = cached_native_agent(self.name, target, self.agent_choice.reason)
        digest = self._digests.sha256(local)
        name = f"edgecal-agent-native-{target}-{digest[:12]}"
        self._ensure_pushed([(local, name, digest)], mode="755")
        path = self.remote(name)
        with self.link.sftp_op("making the agent executable") as sftp:
            if (sftp.lstat(path).st_mode or 0) & 0o777 != 0o755:
                sftp.chmod(path, 0o755)
                self._set_mark(name, mark_mtime(digest))  # chmod keeps the mtime; be explicit
        return name

    def deploy_agent(self) -> str:
        """Push the board's agent (content-addressed: 0 bytes when it is there); its path
        relative to the work directory."""
        if self._agent_rel is not None:
            return self._agent_rel
        if self.agent_choice.kind == "native":
            self._agent_rel = self._deploy_native()
            return self._agent_rel
        data = agent_zipapp_bytes(bytecode=False)
        name = agent_zipapp_name(data)
        local = self._local / name
        local.write_bytes(data)
        self._ensure_pushed([(local, name, hashlib.sha256(data).hexdigest())])
        self._agent_rel = name
        return name

    def agent_argv(self) -> list[str]:
        agent = self.remote(self.deploy_agent())
        root = [] if self.workdir_root is None else ["--root", self.workdir_root]
        if self.agent_choice.kind == "native":
            return [agent, "serve", *root, "--workdir", str(self.workdir)]
        return [
            "env",
            f"PYTHONPATH={self.site_dir}",
            "PYTHONUNBUFFERED=1",
            self.python,
            agent,
            "serve",
            *root,
            "--workdir",
            str(self.workdir),
        ]  # the workdir last, as before

    def _start_agent(self, argv: Sequence[str]) -> AgentProcess:
        proc: ChannelProcess = self.link.start(argv, startup_timeout_s=self._startup_timeout_s)
        return proc

    def _link_up(self) -> bool:
        return bool(self.link.is_active())

    def _agent_start_failed(self, e: DeviceError) -> NoReturn:
        self._raise_setup(f"the agent does not start: {e.message}")

    def _kill_remote(self, pid: int) -> None:
        with contextlib.suppress(DeviceError):
            self.link.run(["kill", "-9", str(pid)], timeout_s=30.0)

    def _close_link(self) -> None:
        if hasattr(self, "link"):
            self.link.close()

    # -- transport: job files --------------------------------------------------------------------
    def _write(self, rel: str, data: bytes) -> None:
        path = self.remote(rel)
        with self.link.sftp_op(f"writing {rel}") as sftp:
            try:
                sftp.putfo(io.BytesIO(data), path, confirm=True)
            except OSError as e:
                raise self._explain_oserror(e, "cannot write", path, len(data)) from None
        self.bytes_job_files += len(data)

    def _write_job(self, job: Submission) -> None:
        job_rel = f"{JOBS_DIR}/{job.job_id}"
        self._ensure_dir(job_rel)
        for name, data in job.files:
            rel = f"{job_rel}/{check_relpath(name, 'job file')}"
            if "/" in name:
                self._ensure_dir(rel.rpartition("/")[0])
            self._write(rel, data)

    def _read_response(self, job_rel: str) -> str | None:
        rel = f"{job_rel}/{RESPONSE_FILE}"
        path = self.remote(rel)
        try:
            with self.link.sftp_op(f"reading {rel}") as sftp:
                st = sftp.lstat(path)
                if not stat.S_ISREG(st.st_mode or 0) or (st.st_size or 0) > MAX_RESPONSE_BYTES:
                    raise ProtocolError(
                        f"{self.name}: {rel} is not a regular file under {MAX_RESPONSE_BYTES} bytes"
                    )
                with sftp.open(path, "rb") as fh:
                    data = fh.read()
        except FileNotFoundError:
            return None
        self._bytes_fetched += len(data)
        return data.decode("utf-8", "replace")

    def _fetch_file(self, rel: str, local: Path) -> None:
        path = self.remote(rel)
        with self.link.sftp_op(f"fetching {rel}") as sftp:
            try:
                st = sftp.lstat(path)
                if not stat.S_ISREG(st.st_mode or 0):
                    raise ProtocolError(f"{self.name}: artifact {rel} is not a regular file")
                sftp.get(path, str(local))
            except FileNotFoundError:
                raise ProtocolError(
                    f"{self.name}: artifact {rel} is missing on the board (it vanished after "
                    "the agent wrote it)",
                    hint="something on the board removed the job's files; run the command again",
                ) from None

    def _remove_job(self, job_rel: str) -> None:
        def rmtree(path: str, sftp: paramiko.SFTPClient) -> None:
            for entry in sftp.listdir_attr(path):
                child = f"{path}/{entry.filename}"
                if stat.S_ISDIR(entry.st_mode or 0):
                    rmtree(child, sftp)
                else:
                    sftp.remove(child)
            sftp.rmdir(path)

        with (
            contextlib.suppress(OSError, TransportError),
            self.link.sftp_op("removing a job") as sftp,
        ):
            rmtree(self.remote(job_rel), sftp)

    def _error_hints(self) -> Mapping[str, str]:
        return {"NcnnUnavailable": f"run `edgecal board provision {self.name}`"}

    def __repr__(self) -> str:
        return f"SshDevice(name={self.name!r}, address={self.link.address!r})"
