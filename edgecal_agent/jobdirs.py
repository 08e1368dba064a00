"""Job folders: the lock a running job holds, and the removal of folders nobody will collect.

A host removes a job's folder once it has read the answer.  A host that died, or gave the board
up after a cut link, leaves its folders behind; each agent removes, when it starts, the ones
that are old (no file in them changed for ``STALE_AFTER_S``) and not locked by a running job.
A host collects an interrupted job's answer within its retries (seconds to minutes), so an
hour-old folder is never waited for.  Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from typing import IO

from edgecal_agent.protocol import JOBS_DIR, REQUEST_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - not on a POSIX system: no locks, no removal
    fcntl = None  # type: ignore[assignment]

STALE_AFTER_S = 3600.0


@contextlib.contextmanager
def running(job_dir: str) -> Iterator[None]:
    """Hold a shared lock on the job's request for the time it runs (none if it has none)."""
    fh: IO[bytes] | None = None
    with contextlib.suppress(OSError):
        fh = open(os.path.join(job_dir, REQUEST_FILE), "rb")  # noqa: SIM115 - held below
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
    try:
        yield
    finally:
        if fh is not None:
            fh.close()


def _last_change(path: str) -> float:
    """The newest mtime of ``path`` and the files directly in it."""
    newest = os.lstat(path).st_mtime
    with os.scandir(path) as it:
        for entry in it:
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def _unlocked(job_dir: str) -> bool:
    """No running job holds this folder's request (a folder without one is not running)."""
    try:
        fh = open(os.path.join(job_dir, REQUEST_FILE), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return True
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


def remove_stale(workdir: str, older_than_s: float = STALE_AFTER_S,
                 now: float | None = None) -> list[str]:
    """Remove the job folders under ``workdir`` unchanged for ``older_than_s`` and not locked
    by a running job; their names.  Errors leave a folder in place."""
    if fcntl is None:
        return []
    jobs = os.path.join(workdir, JOBS_DIR)
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = sorted(os.listdir(jobs))
    except OSError:
        return removed
    for name in entries:
        path = os.path.join(jobs, name)
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            if now - _last_change(path) < older_than_s or not _unlocked(path):
                continue
            shutil.rmtree(path)
        except OSError:
            continue
        removed.append(name)
    return removed
