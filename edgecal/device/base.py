"""The ``Device`` interface: a work directory on some machine plus the edgecal agent there.

``LocalDevice`` (a subprocess on this machine) and ``SshDevice`` (a board over SSH) implement
the same methods and run the same agent through the same job protocol.
Everything the host writes lives under the device's work directory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edgecal.device.jobs import build_request
from edgecal.errors import ProtocolError
from edgecal_agent.messages import REQUEST_FILE, RESPONSE_FILE, dumps

Progress = Callable[[int, int], None]
_D = TypeVar("_D", bound="Device")

#: Default deadline of one job, in seconds.
DEFAULT_JOB_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class JobResult:
    """A finished job: the agent's response (as a dict) and its artifacts as host paths."""

    response: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def result(self) -> dict[str, Any]:
        return dict(self.response.get("result", {}))

    @property
    def ru_maxrss_kb(self) -> int:
        """The agent's peak RSS (KiB) when it answered; monotonic over the agent's life."""
        return int(self.response.get("ru_maxrss_kb", 0))


@dataclass(frozen=True)
class Submission:
    """One job as :meth:`Device.run_job` hands it to a device: its id, the files to write into
    its directory in order (job-relative names; the request last), its deadline and progress."""

    job_id: str
    files: Sequence[tuple[str, bytes]]
    timeout_s: float
    progress: Progress | None


class Device(ABC):
    """One machine that runs ncnn for edgecal."""

    name: str

    @abstractmethod
    def hello(self) -> dict[str, Any]:
        """Agent, protocol, Python, numpy and ncnn versions, machine, CPU features, cores."""

    @abstractmethod
    def push(self, local: Path) -> str:
        """Store ``local`` in the work directory by its sha256; skip the upload when an
        identical copy is there.  Returns the workdir-relative path to name in requests."""

    def push_many(self, locals_: Sequence[Path]) -> list[str]:
        """:meth:`push` of each file, in order (a remote device looks at them together)."""
        return [self.push(p) for p in locals_]

    @abstractmethod
    def discard(self, locals_: Sequence[Path]) -> None:
        """Remove from the work directory what :meth:`push` stored for each of ``locals_``
        (its ``files/<sha256>/`` folder), so a run that pushes many files once each (tune's
        variants) leaves the device's disk as it found it; a later push uploads it again.
        Files never pushed, or gone already, are passed over."""

    def run_job(
        self,
        op: str,
        params: Mapping[str, Any],
        *,
        timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
        progress: Progress | None = None,
        files: Mapping[str, bytes] | None = None,
        job_id: str | None = None,
    ) -> JobResult:
        """Run one agent job.  ``files`` are job inputs written into the job directory
        before the request.  ``job_id``: the caller's id for it (retries use a new one; see
        :meth:`collect_job`); a fresh one by default.  Raises ``AgentError`` when the job fails
        on the agent, ``DeviceError`` on timeout or a dead agent (``TransportError``: the link
        to the board), ``ProtocolError`` on a malformed reply.  A job that ended in a
        ``DeviceError`` leaves its directory for :meth:`collect_job`."""
        request = build_request(self.name, op, params, job_id)
        job_files = [*(files or {}).items(), (REQUEST_FILE, dumps(request).encode("utf-8"))]
        self._submit(Submission(request.job_id, job_files, timeout_s, progress))
        result = self.collect_job(request.job_id)
        if result is None:
            raise ProtocolError(
                f"{self.name}: the agent reported job {request.job_id} done but wrote no "
                f"{RESPONSE_FILE}",
                hint=self._no_response_hint(),
            )
        return result

    @abstractmethod
    def _submit(self, job: Submission) -> None:
        """Write the job's files into its directory in order and have the agent run it (for
        :meth:`run_job`); raises like it."""

    def _no_response_hint(self) -> str:
        """The hint of the error for a job the agent called done without a response."""
        return "the agent's stderr may tell why"

    @abstractmethod
    def collect_job(self, job_id: str) -> JobResult | None:
        """The result of an earlier job whose answer did not reach the host (a lost link, a
        lost agent): ``None`` unless the agent wrote its response there -- the response,
        written atomically, is the only proof that a job is done.  Raises like
        :meth:`run_job` for a job that failed."""

    @abstractmethod
    def recover(self) -> None:
        """After a ``DeviceError``: reconnect and make sure no agent of the failed session
        still runs (its job is either done -- see :meth:`collect_job` -- or abandoned).
        Raises ``TransportError``/``DeviceError`` when the device cannot be reached."""

    @property
    @abstractmethod
    def bytes_pushed(self) -> int:
        """Bytes actually uploaded by :meth:`push` so far (skipped uploads count 0)."""

    @property
    def bytes_fetched(self) -> int:
        """Bytes downloaded from the device (artifacts, responses); 0 where files are read in
        place, as on the local device."""
        return 0

    @abstractmethod
    def close(self) -> None:
        """Stop the agent and release the work directory if the device owns it."""

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
