"""``SshDevice``: the same agent and job protocol as ``LocalDevice``, on a board over SSH.

Layout on the board, all under one work directory (default ``~/.cache/edgecal``, relative to
the SFTP home)::

    <workdir>/edgecal-agent-<sha12>.pyz     the agent zipapp, named by its hash
    <workdir>/files/<sha256>/<name>         pushed models and shards, content-addressed
    <workdir>/jobs/<job_id>/...             one job: request, inputs, artifacts, response
    <workdir>/site/                         numpy + ncnn installed by `edgecal board provision`

Every remote path is built from the resolved work directory and a checked relative name (no
``..``, no absolute path, no NUL) and every directory on the way is ``lstat``-ed: a symlink is
refused.  Uploads go to a temporary name, are hashed on the board, then renamed into place.
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
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko

from edgecal.device.base import Device, JobResult, Submission
from edgecal.device.jobs import parse_response, raise_for_error
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
from edgecal.device.session import AgentSession
from edgecal.device.snippets import board_snippet
from edgecal.device.ssh.link import SshLink, SshTarget
from edgecal.errors import BoardSetupError, DeviceError, ProtocolError, TransportError
from edgecal.files.digests import DigestCache, file_sha256
from edgecal.files.fsnames import device_file_name
from edgecal_agent.messages import FILES_DIR, JOBS_DIR, RESPONSE_FILE, check_relpath
from edgecal_agent.workdir import DEFAULT_WORKDIR

log = logging.getLogger(__name__)

SITE_DIR = "site"
MAX_RESPONSE_BYTES = 64 << 20


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


#: Uploads are staged under a name of this process's own (host pid and a random tag).
_STAGE_TAG = f"{os.getpid()}-{secrets.token_hex(3)}"


def safe_name(name: str, where: str) -> str:
    """One path component that is data: not empty, ``.``/``..``, no ``/`` or NUL."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise DeviceError(f"{where}: {name!r} is not a usable file name on the board")
    return name


class SshDevice(Device):
    """A board over SSH.  Connects (and checks the host key) at construction.

    ``workdir``: relative to the SFTP home (``~/`` is accepted) or absolute.  ``python``: the
    board's interpreter.  ``threads``: default ncnn thread count for ``deployed`` jobs.
    ``agent``: ``python``, ``native`` or ``auto`` (asked of the board at the first agent
    start: :func:`edgecal.device.probe.choose_agent`).  ``native_agent``: where the native
    binary for a target comes from (default: ``edgecal.native``'s cache, built there first
    when ``agent="native"``; with ``auto`` only a cached one is taken).
    """

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
        self.name = target.name
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
        self.target = target
        self.python = python
        self.threads = threads or 1
        self._startup_timeout_s = startup_timeout_s
        self._session: AgentSession | None = None
        self._agent_rel: str | None = None
        self._bytes_pushed = 0
        self._bytes_fetched = 0
        #: bytes of job requests and job input files written (not counted in bytes_pushed)
        self.bytes_job_files = 0
        self._closed = False
        self._digests = DigestCache()
        self._jobs_dir_ok = False
        self.timings_s: dict[str, float] = {
            "connect": 0.0,
            "push": 0.0,
            "fetch": 0.0,
            "agent_start": 0.0,
        }
        self._local = Path(tempfile.mkdtemp(prefix="edgecal-ssh-"))
        self.link = SshLink(target)
        try:
            t0 = time.perf_counter()
            self.link.connect()
            self.timings_s["connect"] = time.perf_counter() - t0
            self.workdir = self._resolve_workdir(workdir)
        except BaseException:
            self.close()
            raise

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
        """Redo the failed operation on the board with Python to learn its errno."""
        code = (
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
        try:
            res = self.link.run(
                [self.python, "-I", "-S", "-c", code, path, str(size)], timeout_s=60.0
            )
            kind, num, text = res.stdout.strip().split(" ", 2)
        except (DeviceError, ValueError):
            return fallback
        return (int(num), text) if kind == "err" else fallback

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

    def remote(self, rel: str) -> str:
        """The absolute board path of a workdir-relative name (checked)."""
        check_relpath(rel, "remote path")
        if "\n" in rel and rel.startswith("jobs/"):
            raise DeviceError(f"{self.name}: bad job path {rel!r}")
        return posixpath.join(str(self.workdir), rel)

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

    @staticmethod
    def staging_rel(rel: str) -> str:
        """Where an upload of ``rel`` lands before :meth:`commit_upload` moves it in place."""
        parent, _, name = rel.rpartition("/")
        staged = f".{name}.upload-{_STAGE_TAG}"  # per host process: two runs never share one
        return f"{parent}/{staged}" if parent else staged

    def _upload(self, local: Path, rel: str, digest: str) -> None:
        parent = rel.rpartition("/")[0]
        if parent:
            self._ensure_dir(parent)
        tmp_rel = self.staging_rel(rel)
        tmp = self.remote(tmp_rel)
        size = local.stat().st_size
        t0 = time.perf_counter()
        with self.link.sftp_op(f"uploading {local.name}") as sftp:
            try:
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISLNK(sftp.lstat(tmp).st_mode or 0):
                        sftp.remove(tmp)
                sftp.put(str(local), tmp, confirm=True)
            except OSError as e:
                with contextlib.suppress(OSError):
                    sftp.remove(tmp)
                raise self._explain_oserror(e, "cannot upload to", tmp, size) from None
        self.commit_upload(local, rel, digest)
        self.timings_s["push"] += time.perf_counter() - t0

    def commit_upload(self, local: Path, rel: str, digest: str) -> None:
        """Move the staged upload of ``local`` (whole: SFTP confirmed its size, SSH its bytes)
        to ``rel`` and mark it.  Its content is checked where it is used: the agent hashes a
        ``files/<sha256>/`` input against its folder name before the first use, and removes it
        when it does not match (``InputCorrupt``: the retry pushes it again).  No Python start
        on the board per upload."""
        tmp, final = self.remote(self.staging_rel(rel)), self.remote(rel)
        with self.link.sftp_op(f"placing {local.name}") as sftp:
            try:
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
        self._mark_verified(rel, digest)
        self._bytes_pushed += local.stat().st_size

    def upload_needed(self, local: Path) -> tuple[str, str] | None:
        """``(rel, digest)`` when ``local`` is not on the board yet (its folder is made), else
        None: what a fan-out upload (``edgecal.fleet.fanout``) stages and commits."""
        digest = self._digests.sha256(local)
        rel = f"{FILES_DIR}/{digest}/{safe_name(device_file_name(local.name), str(local))}"
        state = self._remote_state(rel, digest, local.stat().st_size)
        if state == "verified":
            return None
        if state == "unknown" and self.remote_sha256(rel).get(rel) == digest:
            self._mark_verified(rel, digest)
            return None
        self._ensure_dir(rel.rpartition("/")[0])
        return rel, digest

    # -- verified marks --------------------------------------------------------------------------
    # Hashing on the board costs a Python start (~0.5 s under qemu).  A file uploaded whole, or
    # whose sha256 was checked on the board, gets an mtime derived from that sha256 (a date in
    # 2000-2003); any later write sets the mtime to "now", so "regular file, right size, marked
    # mtime" (one SFTP lstat, no Python) means "ours and untouched since".  Anything else is
    # hashed.  The agent still checks the content before using it (see ``commit_upload``).
    @staticmethod
    def _mark(digest: str) -> int:
        return 946684800 + int(digest[:8], 16) % 100_000_000

    def _mark_verified(self, rel: str, digest: str) -> None:
        mark = self._mark(digest)
        with contextlib.suppress(OSError), self.link.sftp_op("marking a file") as sftp:
            sftp.utime(self.remote(rel), (mark, mark))

    def _remote_state(self, rel: str, digest: str, size: int) -> str:
        """``verified`` (regular file, right size, the mark), ``absent`` or ``unknown``: one
        SFTP lstat per path component, no symlink accepted on the way."""
        path = str(self.workdir)
        parts = PurePosixPath(rel).parts
        with self.link.sftp_op("looking at a pushed file") as sftp:
            try:
                for i, comp in enumerate(parts):
                    path = f"{path}/{comp}"
                    st = sftp.lstat(path)
                    want = stat.S_ISREG if i == len(parts) - 1 else stat.S_ISDIR
                    if not want(st.st_mode or 0):
                        return "unknown"
            except FileNotFoundError:
                return "absent"
            except OSError:
                return "unknown"
        ok = st.st_size == size and st.st_mtime == self._mark(digest)
        return "verified" if ok else "unknown"

    def _ensure_pushed(self, local: Path, rel: str, digest: str) -> None:
        t0 = time.perf_counter()
        size = local.stat().st_size
        state = self._remote_state(rel, digest, size)
        if state == "verified":
            self.timings_s["push"] += time.perf_counter() - t0
            return
        have = None if state == "absent" else self.remote_sha256(rel).get(rel)
        self.timings_s["push"] += time.perf_counter() - t0
        if have == digest:
            self._mark_verified(rel, digest)
        else:
            self._upload(local, rel, digest)

    # -- Device: push ----------------------------------------------------------------------------
    def push(self, local: Path) -> str:
        local = Path(local)
        if not local.is_file():
            raise DeviceError(f"{self.name}: cannot push {local}: not a file")
        digest = self._digests.sha256(local)
        rel = f"{FILES_DIR}/{digest}/{safe_name(device_file_name(local.name), str(local))}"
        self._ensure_pushed(local, rel, digest)
        return rel

    @property
    def bytes_pushed(self) -> int:
        return self._bytes_pushed

    @property
    def bytes_fetched(self) -> int:
        return self._bytes_fetched

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

    def _raise_setup(self, fallback: str) -> None:
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
        self._ensure_pushed(local, name, digest)
        path = self.remote(name)
        with self.link.sftp_op("making the agent executable") as sftp:
            if (sftp.lstat(path).st_mode or 0) & 0o777 != 0o755:
                sftp.chmod(path, 0o755)
                self._mark_verified(name, digest)  # chmod keeps the mtime; be explicit
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
        self._ensure_pushed(local, name, hashlib.sha256(data).hexdigest())
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

    def _ensure_session(self) -> AgentSession:
        if self._closed:
            raise DeviceError(f"{self.name}: the device is closed")
        if self._session is not None and not self._session.alive():
            log.info("%s: the agent is gone; starting a new one", self.name)
            self._session.close()
            self._session = None
        if self._session is None:
            argv = self.agent_argv()
            t0 = time.perf_counter()
            proc = self.link.start(argv, startup_timeout_s=self._startup_timeout_s)
            try:
                self._session = AgentSession(
                    argv,
                    process=proc,
                    device_name=self.name,
                    startup_timeout_s=self._startup_timeout_s,
                    dead_hint=f"run `edgecal board check {self.name}`; out-of-memory kills "
                    "show in `dmesg` on the board",
                )
            except DeviceError as e:
                proc.kill()
                if not self.link.is_active():
                    self._lost(e, "starting the agent")
                self._raise_setup(f"the agent does not start: {e.message}")
            self.timings_s["agent_start"] += time.perf_counter() - t0
        assert self._session is not None
        return self._session

    def _lost(self, e: Exception, what: str) -> None:
        raise TransportError(
            f"{self.name}: lost the SSH connection to {self.link.address} during {what}",
            hint=f"check the board's power and network, then rerun (`edgecal board check "
            f"{self.name}`)",
        ) from e

    @property
    def agent_pid(self) -> int | None:
        """The agent's pid on the board, if it runs."""
        s = self._session
        return None if s is None or not s.alive() else s.pid

    # -- Device: jobs ----------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        return self.run_job("hello", {}, timeout_s=self._startup_timeout_s).result

    def _write(self, rel: str, data: bytes) -> None:
        path = self.remote(rel)
        with self.link.sftp_op(f"writing {rel}") as sftp:
            try:
                sftp.putfo(io.BytesIO(data), path, confirm=True)
            except OSError as e:
                raise self._explain_oserror(e, "cannot write", path, len(data)) from None
        self.bytes_job_files += len(data)

    def _read(self, rel: str, limit: int) -> bytes:
        path = self.remote(rel)
        with self.link.sftp_op(f"reading {rel}") as sftp:
            st = sftp.lstat(path)
            if not stat.S_ISREG(st.st_mode or 0) or (st.st_size or 0) > limit:
                raise ProtocolError(f"{self.name}: {rel} is not a regular file under {limit} bytes")
            with sftp.open(path, "rb") as fh:
                data = fh.read()
        self._bytes_fetched += len(data)
        return data

    def _fetch(self, rel: str, local: Path) -> None:
        path = self.remote(rel)
        t0 = time.perf_counter()
        with self.link.sftp_op(f"fetching {rel}") as sftp:
            try:
                st = sftp.lstat(path)
                if not stat.S_ISREG(st.st_mode or 0):
                    raise ProtocolError(f"{self.name}: artifact {rel} is not a regular file")
                local.parent.mkdir(parents=True, exist_ok=True)
                sftp.get(path, str(local))
            except FileNotFoundError:
                raise ProtocolError(
                    f"{self.name}: artifact {rel} is missing on the board (it vanished after "
                    "the agent wrote it)",
                    hint="something on the board removed the job's files; run the command again",
                ) from None
        self._bytes_fetched += local.stat().st_size
        self.timings_s["fetch"] += time.perf_counter() - t0

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

    def _submit(self, job: Submission) -> None:
        session = self._ensure_session()
        job_rel = f"{JOBS_DIR}/{job.job_id}"
        self._ensure_dir(job_rel)
        for name, data in job.files:
            rel = f"{job_rel}/{check_relpath(name, 'job file')}"
            if "/" in name:
                self._ensure_dir(rel.rpartition("/")[0])
            self._write(rel, data)
        try:
            session.run(job.job_id, timeout_s=job.timeout_s, progress=job.progress)
        except DeviceError as e:
            if not self.link.is_active():
                self._lost(e, f"job {job.job_id}")
            raise

    def _no_response_hint(self) -> str:
        return f"run `edgecal board check {self.name}`"

    def collect_job(self, job_id: str) -> JobResult | None:
        job_rel = f"{JOBS_DIR}/{check_relpath(job_id, 'job id')}"
        try:
            raw = self._read(f"{job_rel}/{RESPONSE_FILE}", MAX_RESPONSE_BYTES)
        except FileNotFoundError:
            return None
        try:
            response = parse_response(raw.decode("utf-8", "replace"), self.name, job_id)
            provision = f"run `edgecal board provision {self.name}`"
            raise_for_error(response, self.name, {"NcnnUnavailable": provision})
            artifacts: dict[str, Path] = {}
            local_dir = self._local / "jobs" / job_id
            for key, art in response.artifacts.items():
                rel = check_relpath(art.file, "artifact")
                local = local_dir / rel
                self._fetch(f"{job_rel}/{rel}", local)
                if file_sha256(local) != art.sha256:
                    raise ProtocolError(
                        f"{self.name}: artifact {art.file} of job {job_id} does not match its "
                        "sha256"
                    )
                artifacts[key] = local
            done = JobResult(response.to_dict(), artifacts)
        except TransportError:
            raise  # the answer stays on the board for the next try
        except BaseException:
            self._remove_job(job_rel)
            raise
        self._remove_job(job_rel)
        return done

    def recover(self) -> None:
        """Reconnect (a new SSH connection) and kill the agent of the failed session if it
        still runs on the board: its job is done (``collect_job``) or given up."""
        old = self._session
        self._session = None
        pid = None
        if old is not None:
            with contextlib.suppress(Exception):
                pid = old.pid
            with contextlib.suppress(Exception):
                old.kill()
        self.link.reconnect()
        if pid:
            with contextlib.suppress(DeviceError):
                self.link.run(["kill", "-9", str(pid)], timeout_s=30.0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None
        if hasattr(self, "link"):
            self.link.close()
        shutil.rmtree(self._local, ignore_errors=True)

    def __repr__(self) -> str:
        return f"SshDevice(name={self.name!r}, address={self.link.address!r})"
