"""Runs recording their command in one run directory at once (two ``validate`` calls with the
same ``run_dir``, in threads or processes) each find theirs in ``run.json``: the read, append,
write of :meth:`RunDir.create` holds a lock on the folder."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgecal.runs.rundir import RUN_JSON, RunDir


def test_concurrent_creates_keep_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = RunDir.read_json

    def slow_read(self: RunDir, name: str) -> Any:  # widen the window between read and write
        doc = read(self, name)
        time.sleep(0.05)
        return doc

    monkeypatch.setattr(RunDir, "read_json", slow_read)
    run = tmp_path / "run"
    RunDir.create(run, "validate", ["edgecal", "validate", "first"])
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        start.wait()
        try:
            RunDir.create(run, "validate", ["edgecal", "validate", str(i)], {f"in{i}": {"n": i}})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    info = RunDir.open(run).read_json(RUN_JSON)
    argv = sorted(c["argv"][-1] for c in info["commands"])
    assert argv == ["0", "1", "2", "3", "first"]
    assert sorted(info["inputs"]) == ["in0", "in1", "in2", "in3"]
