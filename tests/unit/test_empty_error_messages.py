"""An exception with an empty message (``EOFError()``, ``MemoryError()``) is named by its type
in the error that wraps it, not left as an empty string."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from edgecal.device.ssh.link import SshLink, SshTarget
from edgecal.errors import TransportError
from edgecal_agent import jobs
from edgecal_agent.messages import JOBS_DIR, REQUEST_FILE, Request
from edgecal_agent.server import run_job


def test_an_ssh_failure_without_a_message_names_its_type(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("")
    link = SshLink(
        SshTarget(name="b1", host="127.0.0.1", port=2222, user="u", ssh_config=str(config))
    )
    with pytest.raises(
        TransportError,
        match=r"^b1: SSH failure with .* while connecting: "
        r"EOFError \(",
    ):
        link.fail(EOFError(), "connecting")


def test_a_memory_error_without_a_message_names_its_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tmp_path / JOBS_DIR / "j1"
    job.mkdir(parents=True)
    (job / REQUEST_FILE).write_text(json.dumps(Request(op="hello", job_id="j1").to_dict()))

    def out_of_memory(ctx: jobs.JobContext) -> jobs.Result:
        raise MemoryError()

    monkeypatch.setitem(jobs.HANDLERS, "hello", out_of_memory)
    response = run_job(str(tmp_path), "j1", io.StringIO())
    assert not response.ok and response.error is not None
    assert response.error.kind == "OutOfMemory"
    assert response.error.message.startswith("out of memory (MemoryError) in job j1 (hello):")
