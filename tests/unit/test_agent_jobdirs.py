"""Job folders left on a device by hosts that went away are removed by the next agent; a
running job's folder and recent ones are kept."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from edgecal_agent import jobdirs
from edgecal_agent.messages import JOBS_DIR, REQUEST_FILE
from edgecal_agent.server import serve

HOUR = 3600.0


def _job(workdir: Path, name: str, age_s: float, files: tuple[str, ...] = (REQUEST_FILE,)) -> Path:
    d = workdir / JOBS_DIR / name
    d.mkdir(parents=True)
    when = time.time() - age_s
    for f in files:
        (d / f).write_text("{}")
        os.utime(d / f, (when, when))
    os.utime(d, (when, when))
    return d


def test_old_unlocked_folders_go_recent_and_running_ones_stay(tmp_path: Path) -> None:
    old = _job(tmp_path, "old", 2 * HOUR, (REQUEST_FILE, "response.json"))
    empty = _job(tmp_path, "empty", 2 * HOUR, ())
    recent = _job(tmp_path, "recent", 60)
    running = _job(tmp_path, "running", 2 * HOUR)
    fresh_answer = _job(tmp_path, "answered", 2 * HOUR)
    (fresh_answer / "response.json").write_text("{}")  # written now: a host may collect it
    (tmp_path / JOBS_DIR / "stray-file").write_text("x")
    with jobdirs.running(str(running)):
        removed = jobdirs.remove_stale(str(tmp_path))
    assert sorted(removed) == ["empty", "old"]
    assert not old.exists() and not empty.exists()
    assert recent.is_dir() and running.is_dir() and fresh_answer.is_dir()
    assert (tmp_path / JOBS_DIR / "stray-file").is_file()
    assert jobdirs.remove_stale(str(tmp_path)) == ["running"]  # once the job is over


def test_a_symlinked_folder_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (tmp_path / JOBS_DIR).mkdir()
    os.symlink(outside, tmp_path / JOBS_DIR / "link")
    assert jobdirs.remove_stale(str(tmp_path), older_than_s=0.0) == []
    assert (outside / "keep").is_file()


def test_no_jobs_folder_is_fine(tmp_path: Path) -> None:
    assert jobdirs.remove_stale(str(tmp_path / "nowhere")) == []


def test_the_agent_cleans_up_when_it_starts(tmp_path: Path) -> None:
    _job(tmp_path, "left-behind", 2 * HOUR)
    out, err = io.StringIO(), io.StringIO()
    assert serve(str(tmp_path), io.StringIO("quit\n"), out, err) == 0
    assert not (tmp_path / JOBS_DIR / "left-behind").exists()
    assert "removed 1 job folder(s) left by earlier runs" in err.getvalue()
