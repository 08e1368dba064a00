"""Running job directories: one job (``run-job``) or many over stdin (``serve``)."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import IO, Any

import edgecal_agent
from edgecal_agent import jobdirs
from edgecal_agent.errors import BadRequest, JobError, OutOfMemory
from edgecal_agent.fileio import write_atomic
from edgecal_agent.jobs import HANDLERS, JobContext
from edgecal_agent.protocol import (
    DONE_PREFIX,
    JOBS_DIR,
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


def peak_rss_kb() -> int:
    """This process's peak resident set size in KiB (0 where unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)


def _stderr_progress(job_id: str, err: IO[str]) -> Any:
    def progress(done: int, total: int) -> None:
        err.write(f"{PROGRESS_PREFIX} {job_id} {done} {total}\n")
        err.flush()

    return progress


def run_job(workdir: str, job_id: str, err: IO[str] | None = None) -> Response:
    """Run ``<workdir>/jobs/<job_id>``; always leaves a ``response.json`` when the dir exists."""
    err = err if err is not None else sys.stderr
    check_job_id(job_id)
    job_dir = os.path.join(workdir, JOBS_DIR, job_id)
    t_start = time.perf_counter()
    op = "unknown"
    timing: dict[str, float] = {}
    try:
        try:
            with open(os.path.join(job_dir, REQUEST_FILE), encoding="utf-8") as fh:
                raw = json.load(fh)
            if isinstance(raw, dict) and isinstance(raw.get("op"), str):
                op = raw["op"]
            request = Request.from_dict(raw)
        except ProtocolMismatch:
            raise  # reported with kind "ProtocolMismatch", naming both versions
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deep
            raise BadRequest(f"cannot read {REQUEST_FILE} of job {job_id}: {e}") from e
        if request.job_id != job_id:
            raise BadRequest(f"request.json names job {request.job_id!r}, run as {job_id!r}")
        ctx = JobContext(workdir, job_dir, request, _stderr_progress(job_id, err), timing)
        with jobdirs.running(job_dir):
            result, artifacts = HANDLERS[request.op](ctx)
        response = Response(op=op, job_id=job_id, ok=True, result=result, artifacts=artifacts)
    except Exception as e:  # every failure becomes an error response
        if isinstance(e, MemoryError):
            e = OutOfMemory(f"out of memory ({e or 'MemoryError'}) in job {job_id} "
                            f"({op}): the model or its inputs need more memory than this device "
                            "gives")
        kind = e.kind if isinstance(e, JobError) else type(e).__name__
        if isinstance(e, ProtocolMismatch):
            kind = "ProtocolMismatch"
        response = Response(op=op, job_id=job_id, ok=False,
                            error=ErrorInfo(kind=kind, message=str(e),
                                            traceback=traceback.format_exc(),
                                            details=getattr(e, "details", None) or {}))
    timing["total"] = time.perf_counter() - t_start
    response = Response(
        op=response.op, job_id=job_id, ok=response.ok, agent_version=edgecal_agent.__version__,
        result=response.result, artifacts=response.artifacts, error=response.error,
        timing_s=timing, ru_maxrss_kb=peak_rss_kb())
    if os.path.isdir(job_dir):
        write_atomic(os.path.join(job_dir, RESPONSE_FILE), dumps(response).encode("utf-8"))
    return response


def serve(workdir: str, stdin: IO[str], out: IO[str], err: IO[str]) -> int:
    """Answer job ids read line by line; ``EDGECAL-DONE <id>`` once each response is written.
    Job folders earlier hosts left behind are removed first (``jobdirs.remove_stale``)."""
    removed = jobdirs.remove_stale(workdir)
    if removed:
        err.write(f"edgecal-agent: removed {len(removed)} job folder(s) left by earlier runs\n")
        err.flush()
    out.write(f"{READY_PREFIX} {edgecal_agent.PROTOCOL_VERSION} {edgecal_agent.__version__}\n")
    out.flush()
    for line in stdin:
        job_id = line.strip()
        if not job_id:
            continue
        if job_id == "quit":
            break
        try:
            run_job(workdir, job_id, err)
        except ProtocolViolation as e:  # bad job id: nothing to write a response into
            err.write(f"edgecal-agent: {e}\n")
            err.flush()
        out.write(f"{DONE_PREFIX} {job_id}\n")
        out.flush()
    return 0
