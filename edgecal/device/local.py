"""``LocalDevice``: the agent in a subprocess on this machine, same agent, same protocol."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecal.device.base import Device, JobResult, Submission
from edgecal.device.jobs import parse_response, raise_for_error
from edgecal.device.package import agent_source_dir, build_agent_zipapp
from edgecal.device.session import AgentSession
from edgecal.errors import DeviceError, ProtocolError
from edgecal.files.atomic import write_bytes_atomic
from edgecal.files.cleanup import remove_tree_soon
from edgecal.files.digests import DigestCache, file_sha256
from edgecal.files.fsnames import device_file_name
from edgecal_agent.messages import FILES_DIR, JOBS_DIR, RESPONSE_FILE, check_relpath

log = logging.getLogger(__name__)

AGENT_DIR = "agent"


class LocalDevice(Device):
    """Runs the packaged agent (zipapp by default) in a persistent subprocess.

    ``workdir``: where models, shards, jobs and the agent live; a temporary directory, removed
    on :meth:`close`, when not given.  ``threads``: default thread count for ``deployed``
    runtime jobs.  ``agent="module"`` runs ``python -m edgecal_agent`` instead of the zipapp;
    ``agent="native"`` runs the native agent executable ``native_binary`` (same protocol).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        threads: int | None = None,
        *,
        python: str = sys.executable,
        agent: str = "zipapp",
        native_binary: Path | None = None,
        startup_timeout_s: float = 60.0,
        name: str = "local",
    ) -> None:
        if agent not in ("zipapp", "module", "native"):
            raise ValueError(f"agent must be 'zipapp', 'module' or 'native', not {agent!r}")
        if (agent == "native") != (native_binary is not None):
            raise ValueError("native_binary is given exactly when agent is 'native'")
        self.name = name
        self.threads = threads or os.cpu_count() or 1
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="edgecal-local-"))
            if workdir is None
            else Path(workdir).resolve()
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._python = python
        self._agent_kind = agent
        self._native_binary = native_binary
        self._startup_timeout_s = startup_timeout_s
        self._session: AgentSession | None = None
        self._bytes_pushed = 0
        self._closed = False
        # sources already hashed and the copies this device wrote: pushing the same shards
        # for pass 2 hashes nothing again
        self._digests = DigestCache()

    # -- agent process ---------------------------------------------------------------------------
    def _agent_argv(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if self._native_binary is not None:
            argv = [str(self._native_binary)]
        elif self._agent_kind == "zipapp":
            # with this Python's bytecode: the agent runs on sys.executable by default
            pyz = build_agent_zipapp(
                self.workdir / AGENT_DIR, bytecode=self._python == sys.executable
            )
            argv = [self._python, str(pyz)]
        else:
            root = str(agent_source_dir().parent)
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
            argv = [self._python, "-m", "edgecal_agent"]
        env["PYTHONUNBUFFERED"] = "1"
        if self._owns_workdir:  # removed on close, never resumed: no answer need reach the disk
            env["EDGECAL_AGENT_FSYNC"] = "0"
        # the host chose (and resolved) this folder: it is the agent's root too
        return [*argv, "serve", "--root", str(self.workdir), "--workdir", str(self.workdir)], env

    def _ensure_session(self) -> AgentSession:
        if self._closed:
            raise DeviceError(f"{self.name}: the device is closed")
        if self._session is not None and not self._session.alive():
            log.info(
                "%s: the agent (pid %d) is gone; starting a new one", self.name, self._session.pid
            )
            self._session.close()
            self._session = None
        if self._session is None:
            argv, env = self._agent_argv()
            self._session = AgentSession(
                argv,
                device_name=self.name,
                env=env,
                cwd=str(self.workdir),
                startup_timeout_s=self._startup_timeout_s,
            )
        return self._session

    @property
    def agent_pid(self) -> int | None:
        """The pid of the running agent, if any (for tests and diagnostics)."""
        return None if self._session is None or not self._session.alive() else self._session.pid

    # -- Device ----------------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        return self.run_job("hello", {}, timeout_s=self._startup_timeout_s).result

    def _sha256(self, path: Path) -> str:
        return self._digests.sha256(path)

    def push(self, local: Path) -> str:
        local = Path(local)
        if not local.is_file():
            raise DeviceError(f"{self.name}: cannot push {local}: not a file")
        digest = self._sha256(local)
        rel = f"{FILES_DIR}/{digest}/{device_file_name(local.name)}"
        target = self.workdir / rel
        if target.is_file() and self._sha256(target) == digest:
            return rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # a fresh, exclusively created temp name: a planted name is never written through
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(local, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._digests.remember(target, digest)  # our copy of bytes just hashed
        self._bytes_pushed += target.stat().st_size
        return rel

    def discard(self, locals_: Sequence[Path]) -> None:
        for local in locals_:
            if Path(local).is_file():
                folder = self.workdir / FILES_DIR / self._sha256(Path(local))
                shutil.rmtree(folder, ignore_errors=True)

    @property
    def bytes_pushed(self) -> int:
        return self._bytes_pushed

    def _submit(self, job: Submission) -> None:
        job_dir = self.workdir / JOBS_DIR / job.job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        for name, data in job.files:
            write_bytes_atomic(
                job_dir / check_relpath(name, "job file"), data, durable=not self._owns_workdir
            )
        self._ensure_session().run(job.job_id, timeout_s=job.timeout_s, progress=job.progress)

    def collect_job(self, job_id: str) -> JobResult | None:
        job_dir = self.workdir / JOBS_DIR / check_relpath(job_id, "job id")
        try:
            raw = (job_dir / RESPONSE_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        response = parse_response(raw, self.name, job_id)
        raise_for_error(response, self.name)
        artifacts: dict[str, Path] = {}
        for key, art in response.artifacts.items():
            path = job_dir / check_relpath(art.file, "artifact")
            try:
                if path.is_symlink() or not path.is_file():
                    raise FileNotFoundError(path)
                digest = file_sha256(path)
            except OSError:
                raise ProtocolError(
                    f"{self.name}: artifact {art.file} of job {job_id} is missing (or not a "
                    "regular file) in the job folder",
                    hint="something removed the job's files while it ran; run the command again",
                ) from None
            if digest != art.sha256:
                raise ProtocolError(
                    f"{self.name}: artifact {art.file} of job {job_id} does not match its sha256"
                )
            artifacts[key] = path
        return JobResult(response.to_dict(), artifacts)

    def recover(self) -> None:
        """A local agent that died (or hung) is killed; the next job starts a new one."""
        if self._session is not None:
            self._session.kill()
            self._session.close()
            self._session = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._owns_workdir:
            remove_tree_soon(self.workdir)

    def __repr__(self) -> str:
        return f"LocalDevice(name={self.name!r}, workdir={str(self.workdir)!r})"
