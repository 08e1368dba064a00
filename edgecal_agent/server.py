"""Running job directories: one job (``run-job``) or many over stdin (``serve``)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, Any

import edgecal_agent
from edgecal_agent import jobdirs
from edgecal_agent.errors import BadRequest, DeviceFileError, JobError, OutOfMemory
from edgecal_agent.jobs import HANDLERS, JobContext
from edgecal_agent.messages import (
    DONE_PREFIX,
    JOBS_DIR,
    MAX_JOB_LINE,
    MAX_REQUEST_BYTES,
    PROGRESS_PREFIX,
    READY_PREFIX,
    REQUEST_FILE,
    RESPONSE_FILE,
    ErrorInfo,
    ProtocolMismatch,
    ProtocolViolation,
    Request,
    Response,
    check_job_id,
    dumps,
)
from edgecal_agent.workdir import Workdir, open_file_at, read_limited, write_atomic_at


def peak_rss_kb() -> int:
    """This process's peak resident set size in KiB (0 where unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)


def _progress_lines(job_id: str, stream: IO[str]) -> Any:
    def progress(done: int, total: int) -> None:
        stream.write(f"{PROGRESS_PREFIX} {job_id} {done} {total}\n")
        stream.flush()

    return progress


def run_job(workdir: str | Workdir, job_id: str, progress_to: IO[str] | None = None) -> Response:
    """Run ``<workdir>/jobs/<job_id>``; always leaves a ``response.json`` when the dir exists
    (as a real folder: a job folder reached through a symlink is refused, nothing written).
    Progress lines go to ``progress_to`` (default stderr; ``serve``: stdout)."""
    stream = progress_to if progress_to is not None else sys.stderr
    check_job_id(job_id)
    if isinstance(workdir, Workdir):
        return _run_job(workdir, job_id, stream)
    with Workdir(workdir) as wd:
        return _run_job(wd, job_id, stream)


def _read_request(job_fd: int, job_id: str) -> tuple[IO[bytes], Any]:
    """The open request file (held for its lock) and its JSON."""
    fh = open_file_at(job_fd, REQUEST_FILE, f"{JOBS_DIR}/{job_id}/{REQUEST_FILE}", "request")
    try:
        raw = read_limited(fh, MAX_REQUEST_BYTES, f"{REQUEST_FILE} of job {job_id}", "request")
        return fh, json.loads(raw.decode("utf-8"))
    except BaseException:
        fh.close()
        raise


def _run_job(wd: Workdir, job_id: str, progress_to: IO[str]) -> Response:
    t_start = time.perf_counter()
    op = "unknown"
    timing: dict[str, float] = {}
    job_fd = -1
    try:
        try:
            job_fd = wd.open_dir_parts([JOBS_DIR, job_id])
        except OSError as e:
            raise BadRequest(
                f"job folder {JOBS_DIR}/{job_id} is not a real folder in the "
                f"work directory: {e.strerror or e}"
            ) from None
        try:
            fh, raw = _read_request(job_fd, job_id)
        except ProtocolMismatch:
            raise
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deep
            raise BadRequest(f"cannot read {REQUEST_FILE} of job {job_id}: {e}") from e
        with fh:
            if isinstance(raw, dict) and isinstance(raw.get("op"), str):
                op = raw["op"]
            try:
                request = Request.from_dict(raw)
            except ProtocolMismatch:
                raise  # reported with kind "ProtocolMismatch", naming both versions
            except (ValueError, RecursionError) as e:
                raise BadRequest(f"cannot read {REQUEST_FILE} of job {job_id}: {e}") from e
            if request.job_id != job_id:
                raise BadRequest(f"request.json names job {request.job_id!r}, run as {job_id!r}")
            progress = _progress_lines(job_id, progress_to)
            ctx = JobContext(wd, job_fd, job_id, request, progress, timing)
            with jobdirs.running(fh):
                try:
                    result, artifacts = HANDLERS[request.op](ctx)
                except OSError as e:
                    raise DeviceFileError(
                        f"job {job_id}: a file operation in the work directory failed: {e}"
                    ) from e
        response = Response(op=op, job_id=job_id, ok=True, result=result, artifacts=artifacts)
    except Exception as e:  # every failure becomes an error response
        if isinstance(e, MemoryError):
            e = OutOfMemory(
                f"out of memory ({str(e) or 'MemoryError'}) in job {job_id} "
                f"({op}): the model or its inputs need more memory than this device "
                "gives"
            )
        kind = e.kind if isinstance(e, JobError) else type(e).__name__
        if isinstance(e, ProtocolMismatch):
            kind = "ProtocolMismatch"
        response = Response(
            op=op,
            job_id=job_id,
            ok=False,
            error=ErrorInfo(
                kind=kind,
                message=str(e),
                traceback=traceback.format_exc(),
                details=getattr(e, "details", None) or {},
            ),
        )
    timing["total"] = time.perf_counter() - t_start
    response = replace(
        response,
        agent_version=edgecal_agent.__version__,
        timing_s=timing,
        ru_maxrss_kb=peak_rss_kb(),
    )
    if job_fd >= 0:
        try:
            write_atomic_at(job_fd, RESPONSE_FILE, dumps(response).encode("utf-8"))
        finally:
            os.close(job_fd)
    return response


def _job_lines(stdin: IO[str], err: IO[str]) -> Iterator[str]:
    """The job-id lines of ``stdin``; a line longer than ``MAX_JOB_LINE`` is refused (read in
    bounded pieces and skipped, reported on stderr)."""
    while True:
        line = stdin.readline(MAX_JOB_LINE + 1)
        if not line:
            return
        if len(line) > MAX_JOB_LINE:
            while line and not line.endswith("\n"):
                line = stdin.readline(MAX_JOB_LINE + 1)
            err.write(
                f"edgecal-agent: BadRequest: a job id line longer than {MAX_JOB_LINE} "
                "characters was refused\n"
            )
            err.flush()
            continue
        yield line


def serve(workdir: str | Workdir, stdin: IO[str], out: IO[str], err: IO[str]) -> int:
    """Answer job ids read line by line; ``EDGECAL-DONE <id>`` once each response is written.
    Job folders earlier hosts left behind are removed first (``jobdirs.remove_stale``)."""
    with Workdir(workdir) if isinstance(workdir, str) else contextlib.nullcontext(workdir) as wd:
        removed = jobdirs.remove_stale(wd)
        if removed:
            err.write(f"edgecal-agent: removed {len(removed)} job folder(s) left by earlier runs\n")
            err.flush()
        out.write(f"{READY_PREFIX} {edgecal_agent.PROTOCOL_VERSION} {edgecal_agent.__version__}\n")
        out.flush()
        return _serve(wd, stdin, out, err)


def _serve(wd: Workdir, stdin: IO[str], out: IO[str], err: IO[str]) -> int:
    for line in _job_lines(stdin, err):
        job_id = line.strip()
        if not job_id:
            continue
        if job_id == "quit":
            break
        try:
            run_job(wd, job_id, out)  # progress on stdout: in order with the DONE line
        except ProtocolViolation as e:  # bad job id: nothing to write a response into
            err.write(f"edgecal-agent: {e}\n")
            err.flush()
        except OSError as e:  # no response.json (disk full, something in its way): the host
            err.write(f"edgecal-agent: cannot answer job {job_id}: {e}\n")  # says so
            err.flush()
        out.write(f"{DONE_PREFIX} {job_id}\n")
        out.flush()
    return 0
