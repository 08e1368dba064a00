"""``RemoteDevice``: a work directory on another machine and the agent there, over a link.

What :class:`~edgecal.device.ssh.device.SshDevice` (a board over SSH) and
:class:`~edgecal.device.adb.device.AdbDevice` (a phone over adb) share: the layout of the work
directory, content-addressed pushes with verified marks, the byte counters and timings, the
agent session's life (start, lost link, recovery) and the collection of a job's answer and
artifacts.  A subclass gives its transport (the ``_``-methods under "transport" below, each a
few calls of its link) and its own facts (probe, agent choice, agent command line).

Layout, all under one work directory::

    <workdir>/<agent>                   the agent (zipapp or native binary), named by its hash
    <workdir>/files/<sha256>/<name>     pushed models and shards, content-addressed
    <workdir>/jobs/<job_id>/...         one job: request, inputs, artifacts, response

Verified marks: a file uploaded whole, or whose sha256 was checked there, gets an mtime
derived from that sha256 (:func:`mark_mtime`, a moment in 2000-2003); any later write sets
the mtime to "now", so "regular file, right size, marked mtime, no symlink on the way" means
"ours and untouched since" and costs no hashing there.  The marks of all files of one push
are looked at together (:meth:`RemoteDevice._file_states`: one remote command where each
look costs a process start there).  Anything else is hashed there or pushed again; the agent
still checks a ``files/<sha256>/`` input's content before its first use.  Uploads go to a
per-process staging name (:meth:`RemoteDevice.staging_rel`) and are renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import secrets
import shutil
import tempfile
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from edgecal.device.base import Device, JobResult, Submission
from edgecal.device.jobs import parse_response, raise_for_error
from edgecal.device.session import AgentProcess, AgentSession
from edgecal.errors import DeviceError, ProtocolError, TransportError
from edgecal.files.digests import DigestCache, file_sha256
from edgecal.files.fsnames import device_file_name
from edgecal_agent.messages import FILES_DIR, JOBS_DIR, check_relpath

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 << 20

#: Uploads are staged under a name of this process's own (host pid and a random tag).
_STAGE_TAG = f"{os.getpid()}-{secrets.token_hex(3)}"


def mark_mtime(digest: str) -> int:
    """The mtime a verified copy of ``digest`` carries (a moment in 2000-2003)."""
    return 946684800 + int(digest[:8], 16) % 100_000_000


def safe_name(name: str, where: str, machine: str = "board") -> str:
    """One path component that is data: not empty, ``.``/``..``, no ``/`` or NUL."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise DeviceError(f"{where}: {name!r} is not a usable file name on the {machine}")
    return name


@dataclass(frozen=True)
class PushCheck:
    """One file of a push as the remote side is asked about it: its workdir-relative name,
    its size and the mark (mtime) a verified copy carries."""

    rel: str
    size: int
    mark: int


#: What :meth:`RemoteDevice._file_states` says of a file: ``verified`` (regular file, right
#: size, the mark), ``absent``, ``unknown`` (there, not known to be ours: hashed) or ``bad``
#: (a symlink on the way, or not a regular file: pushed again).
FILE_STATES = ("verified", "absent", "unknown", "bad")


@dataclass(frozen=True)
class StoredFile:
    """One ``files/<sha256>/`` folder of a work directory: a pushed model or shard set."""

    rel: str
    #: disk use (``du -k``), bytes
    size: int
    #: the folder's mtime: when it was stored (pushed, or its copy first checked there)
    stored_at: int


#: ``files/<sha256>`` folders, each as "KIB MTIME NAME" (POSIX sh, ``du`` and ``stat -c``: the
#: coreutils of a board, busybox, an Android phone's toybox); nothing without a files folder
_STORED_SH = r"""cd "$1" 2>/dev/null || exit 0
for d in */; do
  [ -d "$d" ] || continue
  set -- $(du -sk "$d")
  printf '%s %s %s
' "$1" "$(stat -c %Y "$d")" "${d%/}"
done"""
_DIGEST_NAME = re.compile(r"[0-9a-f]{64}")
#: folders removed per remote command (far below any argument-length limit)
_RM_BATCH = 200


def parse_stored(text: str) -> list[StoredFile]:
    """:data:`_STORED_SH`'s lines; anything not a ``files/<sha256>`` folder is left out."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        if _DIGEST_NAME.fullmatch(parts[2]):
            out.append(StoredFile(f"{FILES_DIR}/{parts[2]}", int(parts[0]) * 1024, int(parts[1])))
    return out


class RemoteDevice(Device):
    """The agent in a work directory on another machine, reached through ``self.link``."""

    #: what the machine is called in messages (``board``, ``phone``)
    machine = "board"
    #: the link's name in messages (``SSH``, ``adb``)
    link_kind = "SSH"
    #: the fix of a lost link (``{name}``: the device's)
    lost_hint = "check the link, then rerun (`edgecal board check {name}`)"
    #: what else to look at when the agent died
    dead_hint = "out-of-memory kills show in `dmesg` there"

    link: Any
    workdir: PurePosixPath

    def __init__(self, target: Any, *, threads: int | None, startup_timeout_s: float) -> None:
        self.name: str = target.name
        self.target = target
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
        self.timings_s: dict[str, float] = {
            "connect": 0.0,
            "push": 0.0,
            "fetch": 0.0,
            "agent_start": 0.0,
        }
        self._local = Path(tempfile.mkdtemp(prefix=f"edgecal-{self.link_kind.lower()}-"))

    def _open(self, make_link: Callable[[], Any], make_workdir: Callable[[], None]) -> None:
        """Connect a new link (timed) and set up the work directory; closed when that fails."""
        try:
            self.link = make_link()
            t0 = time.perf_counter()
            self.link.connect()
            self.timings_s["connect"] = time.perf_counter() - t0
            make_workdir()
        except BaseException:
            self.close()
            raise

    # -- transport (each subclass's own) ---------------------------------------------------------
    @abstractmethod
    def _file_states(self, checks: Sequence[PushCheck]) -> list[str]:
        """One of :data:`FILE_STATES` for each file, in order."""

    @abstractmethod
    def _hash(self, rel: str) -> str | None:
        """sha256 of a workdir file, computed there (None: absent, not a regular file, or
        no way to hash there)."""

    @abstractmethod
    def _set_mark(self, rel: str, mark: int) -> None:
        """Set the file's mtime (and atime) to ``mark``."""

    @abstractmethod
    def _ensure_dir(self, rel: str) -> None:
        """``mkdir -p`` of a workdir-relative folder; a symlink on the way is refused."""

    @abstractmethod
    def _stage(self, local: Path, rel: str) -> None:
        """Upload ``local`` whole to the staging name of ``rel`` (replacing a planted
        symlink there)."""

    @abstractmethod
    def _place(self, local: Path, rel: str, mark: int, mode: str | None) -> None:
        """Move the staged upload of ``local`` to ``rel`` (``chmod mode`` first when given)
        and set its mark; remove the staged file when that fails."""

    @abstractmethod
    def _write_job(self, job: Submission) -> None:
        """Write the job's files into ``jobs/<job_id>/`` in order."""

    @abstractmethod
    def _read_response(self, job_rel: str) -> str | None:
        """The job's response file (None: none yet), at most ``MAX_RESPONSE_BYTES``."""

    def _check_artifacts(self, job_rel: str, names: Sequence[str], job_id: str) -> None:
        """Raise ``ProtocolError`` when an artifact is missing before any is fetched (the
        transport's :meth:`_fetch_file` checks each one otherwise)."""

    @abstractmethod
    def _fetch_file(self, rel: str, local: Path) -> None:
        """Copy the regular workdir file ``rel`` to ``local`` (its folder exists)."""

    @abstractmethod
    def _sh(self, script: str, args: Sequence[str], what: str) -> str:
        """Run POSIX sh ``script`` with ``args`` ($1...) there: its output, or a DeviceError
        naming ``what``."""

    @abstractmethod
    def _remove_job(self, job_rel: str) -> None:
        """Remove a job's folder, quietly (best effort)."""

    @abstractmethod
    def _start_agent(self, argv: Sequence[str]) -> AgentProcess:
        """Start ``argv`` there with its streams wired to this host."""

    @abstractmethod
    def _link_up(self) -> bool:
        """Whether the link still reaches the machine (no reconnect)."""

    @abstractmethod
    def _agent_start_failed(self, e: DeviceError) -> NoReturn:
        """Raise the error (with its fix) for an agent that does not start."""

    @abstractmethod
    def _kill_remote(self, pid: int) -> None:
        """``kill -9`` a process there, quietly."""

    def _close_link(self) -> None:
        """Release the link (nothing to release by default)."""

    # -- paths -----------------------------------------------------------------------------------
    def remote(self, rel: str) -> str:
        """The absolute remote path of a workdir-relative name (checked)."""
        check_relpath(rel, "remote path")
        if "\n" in rel and rel.startswith("jobs/"):
            raise DeviceError(f"{self.name}: bad job path {rel!r}")
        return posixpath.join(str(self.workdir), rel)

    @staticmethod
    def staging_rel(rel: str) -> str:
        """Where an upload of ``rel`` lands before :meth:`commit_upload` moves it in place."""
        parent, _, name = rel.rpartition("/")
        staged = f".{name}.upload-{_STAGE_TAG}"  # per host process: two runs never share one
        return f"{parent}/{staged}" if parent else staged

    @property
    def _check_hint(self) -> str:
        return f"run `edgecal board check {self.name}`"

    # -- pushes ----------------------------------------------------------------------------------
    def _pushed_rel(self, local: Path) -> tuple[str, str]:
        """``(rel, digest)`` of a file to push under ``files/<sha256>/``."""
        if not local.is_file():
            raise DeviceError(f"{self.name}: cannot push {local}: not a file")
        digest = self._digests.sha256(local)
        name = safe_name(device_file_name(local.name), str(local), self.machine)
        return f"{FILES_DIR}/{digest}/{name}", digest

    def push(self, local: Path) -> str:
        return self.push_many([Path(local)])[0]

    def push_many(self, locals_: Sequence[Path]) -> list[str]:
        """:meth:`push` of several files; their marks are looked at together."""
        named = [(Path(p), *self._pushed_rel(Path(p))) for p in locals_]
        self._ensure_pushed(named)
        return [rel for _, rel, _ in named]

    def discard(self, locals_: Sequence[Path]) -> None:
        folders = {
            self._pushed_rel(p)[0].rpartition("/")[0] for p in map(Path, locals_) if p.is_file()
        }
        with contextlib.suppress(DeviceError):  # best effort: what stays is only disk space
            self._remove_folders(sorted(folders))

    def stored_files(self) -> list[StoredFile]:
        """The pushed files kept in the work directory (``edgecal board clean``)."""
        return parse_stored(
            self._sh(_STORED_SH, [self.remote(FILES_DIR)], "listing the pushed files")
        )

    def remove_stored(self, files: Sequence[StoredFile]) -> None:
        """Remove these ``files/<sha256>/`` folders."""
        self._remove_folders([f.rel for f in files])

    def _remove_folders(self, rels: Sequence[str]) -> None:
        """``rm -rf`` these ``files/<sha256>`` folders there, a few commands in all."""
        for rel in rels:
            if not _DIGEST_NAME.fullmatch(rel.removeprefix(f"{FILES_DIR}/")):
                raise DeviceError(f"{self.name}: {rel!r} is not a pushed file's folder")
        paths = [self.remote(rel) for rel in rels]
        for i in range(0, len(paths), _RM_BATCH):
            self._sh('rm -rf -- "$@"', paths[i : i + _RM_BATCH], "removing pushed files")

    def _ensure_pushed(
        self, files: Sequence[tuple[Path, str, str]], mode: str | None = None
    ) -> None:
        """Upload each ``(local, rel, digest)`` that is not verified there."""
        todo = list({rel: (local, rel, digest) for local, rel, digest in files}.values())
        t0 = time.perf_counter()
        checks = [PushCheck(rel, local.stat().st_size, mark_mtime(d)) for local, rel, d in todo]
        states = self._file_states(checks)
        uploads = []
        for (local, rel, digest), state, check in zip(todo, states, checks, strict=True):
            if state == "verified":
                continue
            if state == "unknown" and self._hash(rel) == digest:
                self._set_mark(rel, check.mark)
                continue
            uploads.append((local, rel, digest))
        self.timings_s["push"] += time.perf_counter() - t0
        for local, rel, digest in uploads:
            self._upload(local, rel, digest, mode)

    def _upload(self, local: Path, rel: str, digest: str, mode: str | None = None) -> None:
        t0 = time.perf_counter()
        parent = rel.rpartition("/")[0]
        if parent:
            self._ensure_dir(parent)
        self._stage(local, rel)
        self.commit_upload(local, rel, digest, mode)
        self.timings_s["push"] += time.perf_counter() - t0

    def commit_upload(self, local: Path, rel: str, digest: str, mode: str | None = None) -> None:
        """Move the staged upload of ``local`` (whole: the transport confirmed its bytes) to
        ``rel`` and mark it.  Its content is checked where it is used: the agent hashes a
        ``files/<sha256>/`` input against its folder name before the first use, and removes it
        when it does not match (``InputCorrupt``: the retry pushes it again)."""
        self._place(local, rel, mark_mtime(digest), mode)
        self._bytes_pushed += local.stat().st_size

    def upload_needed(self, local: Path) -> tuple[str, str] | None:
        """``(rel, digest)`` when ``local`` is not there yet (its folder is made), else None:
        what a fan-out upload (``edgecal.fleet.fanout``) stages and commits."""
        rel, digest = self._pushed_rel(Path(local))
        check = PushCheck(rel, local.stat().st_size, mark_mtime(digest))
        state = self._file_states([check])[0]
        if state == "verified":
            return None
        if state == "unknown" and self._hash(rel) == digest:
            self._set_mark(rel, check.mark)
            return None
        self._ensure_dir(rel.rpartition("/")[0])
        return rel, digest

    @property
    def bytes_pushed(self) -> int:
        return self._bytes_pushed

    @property
    def bytes_fetched(self) -> int:
        return self._bytes_fetched

    # -- agent -----------------------------------------------------------------------------------
    @abstractmethod
    def agent_argv(self) -> list[str]:
        """The agent's command line there (deploys it first)."""

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
            proc = self._start_agent(argv)
            try:
                self._session = AgentSession(
                    argv,
                    process=proc,
                    device_name=self.name,
                    startup_timeout_s=self._startup_timeout_s,
                    dead_hint=f"{self._check_hint}; {self.dead_hint}",
                )
            except DeviceError as e:
                proc.kill()
                if not self._link_up():
                    self._lost(e, "starting the agent")
                self._agent_start_failed(e)
            self.timings_s["agent_start"] += time.perf_counter() - t0
        assert self._session is not None
        return self._session

    def _lost(self, e: Exception, what: str) -> NoReturn:
        raise TransportError(
            f"{self.name}: lost the {self.link_kind} connection to {self.link.address} during "
            f"{what}",
            hint=self.lost_hint.format(name=self.name),
        ) from e

    @property
    def agent_pid(self) -> int | None:
        """The agent's pid there, if it runs."""
        s = self._session
        return None if s is None or not s.alive() else s.pid

    # -- Device: jobs ----------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        return self.run_job("hello", {}, timeout_s=self._startup_timeout_s).result

    def _submit(self, job: Submission) -> None:
        session = self._ensure_session()
        self._write_job(job)
        try:
            session.run(job.job_id, timeout_s=job.timeout_s, progress=job.progress)
        except DeviceError as e:
            if not self._link_up():
                self._lost(e, f"job {job.job_id}")
            raise

    def _no_response_hint(self) -> str:
        return self._check_hint

    def _error_hints(self) -> Mapping[str, str]:
        """Fixes of agent error kinds on this machine (see ``raise_for_error``)."""
        return {}

    def collect_job(self, job_id: str) -> JobResult | None:
        job_rel = f"{JOBS_DIR}/{check_relpath(job_id, 'job id')}"
        raw = self._read_response(job_rel)
        if raw is None:
            return None
        try:
            response = parse_response(raw, self.name, job_id)
            raise_for_error(response, self.name, self._error_hints())
            artifacts: dict[str, Path] = {}
            local_dir = self._local / "jobs" / job_id
            files = {k: check_relpath(a.file, "artifact") for k, a in response.artifacts.items()}
            if files:
                self._check_artifacts(job_rel, list(files.values()), job_id)
            for key, art in response.artifacts.items():
                local = local_dir / files[key]
                local.parent.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                self._fetch_file(f"{job_rel}/{files[key]}", local)
                self.timings_s["fetch"] += time.perf_counter() - t0
                self._bytes_fetched += local.stat().st_size
                if file_sha256(local) != art.sha256:
                    raise ProtocolError(
                        f"{self.name}: artifact {art.file} of job {job_id} does not match its "
                        "sha256"
                    )
                artifacts[key] = local
            done = JobResult(response.to_dict(), artifacts)
        except TransportError:
            raise  # the answer stays there for the next try
        except BaseException:
            self._remove_job(job_rel)
            raise
        self._remove_job(job_rel)
        return done

    def recover(self) -> None:
        """Reconnect (a new connection) and kill the agent of the failed session if it still
        runs there: its job is done (``collect_job``) or given up."""
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
            self._kill_remote(pid)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None
        self._close_link()
        shutil.rmtree(self._local, ignore_errors=True)
