"""Agent jobs on the host side, for every device kind: ids, requests, responses, errors."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from edgecal.errors import AgentError, ProtocolError
from edgecal_agent.messages import (
    MAX_REQUEST_BYTES,
    PARAM_TYPES,
    ProtocolMismatch,
    ProtocolViolation,
    Request,
    Response,
    dumps,
)

_job_counter = itertools.count(1)


def new_job_id(op: str) -> str:
    """A job id unique across hosts: two hosts with the same pid differ in the random part."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}-{next(_job_counter):05d}-{op}"


def parse_response(raw: str, device_name: str, job_id: str) -> Response:
    """``response.json`` text -> :class:`Response`, or a ``ProtocolError`` naming the device."""
    try:
        response = Response.from_dict(json.loads(raw))
    except ProtocolMismatch as e:
        raise ProtocolError(
            f"{device_name}: {e}", hint="deploy the agent built from this edgecal"
        ) from e
    except (ValueError, ProtocolViolation) as e:
        raise ProtocolError(
            f"{device_name}: malformed response to job {job_id}: {e}",
            hint="the agent and edgecal versions may not match",
        ) from e
    except RecursionError:
        raise ProtocolError(
            f"{device_name}: malformed response to job {job_id}: JSON nested too deeply"
        ) from None
    if response.job_id != job_id:
        raise ProtocolError(
            f"{device_name}: response names job {response.job_id!r}, expected {job_id!r}"
        )
    return response


def raise_for_error(
    response: Response, device_name: str, hints: Mapping[str, str] | None = None
) -> None:
    """Raise the ``AgentError`` of a failed response; ``hints`` override the fix per kind."""
    if response.ok or response.error is None:
        return
    err = response.error
    hints = {
        "BadRequest": "check the files pushed to the device and the request parameters",
        "NcnnUnavailable": "install the ncnn Python package on the device (pip install ncnn)",
        "ModelLoadError": "check that the .param and .bin files belong together",
        "BlobNotFound": "the blob names must come from this model's .param",
        "InputError": "check the input shape, pixel type, mean and norm against the model",
        "ArtifactMissing": "something on the device removed the job's files while it ran; "
        "check what else uses the work directory",
        "ExtractError": "check the layer named and its shape parameters against the input "
        "(--shape); every board fails this job the same way",
        "OutOfMemory": "check the .param for a huge shape (a layer whose output is enormous) "
        "and --shape; a board with more memory may run it",
        "InputCorrupt": f"the damaged copy was removed and is pushed again on the next try; "
        f"if this repeats, check the device's disk (`edgecal board check "
        f"{device_name}`)",
        **(hints or {}),
    }
    raise AgentError(
        f"{device_name}: job {response.job_id} ({response.op}) failed in the agent: "
        f"{err.kind}: {err.message}",
        kind=err.kind,
        remote_traceback=err.traceback,
        details=dict(err.details),
        hint=hints.get(err.kind, "run with --debug to see the agent's traceback"),
    )


def build_request(
    device_name: str, op: str, params: Mapping[str, Any], job_id: str | None = None
) -> Request:
    """A validated request for ``op`` (with ``job_id``, or a fresh one), or a
    ``ProtocolError``."""
    if op not in PARAM_TYPES:
        raise ProtocolError(f"{device_name}: unknown agent op {op!r}")
    try:
        request = Request(
            op=op,
            job_id=job_id or new_job_id(op),
            params=PARAM_TYPES[op].from_dict(dict(params), "params"),
        )
    except ProtocolViolation as e:
        raise ProtocolError(f"{device_name}: invalid {op} request: {e}") from e
    size = len(dumps(request).encode("utf-8"))
    if size > MAX_REQUEST_BYTES:
        raise ProtocolError(
            f"{device_name}: the {op} request is {size} bytes; the agent takes "
            f"at most {MAX_REQUEST_BYTES}",
            hint="use fewer shards per job",
        )
    return request
