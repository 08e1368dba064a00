"""Job folders: the lock a running job holds, and the removal of folders nobody will collect.

A host removes a job's folder once it has read the answer.  A host that died, or gave the board
up after a cut link, leaves its folders behind; each agent removes, when it starts, the ones
that are old (nothing in them, at any depth, changed for ``STALE_AFTER_S``) and not locked by a
running job.  A host collects an interrupted job's answer within its retries (seconds to
minutes), so an hour-old folder is never waited for.

Removal stays inside ``<workdir>/jobs`` whatever is planted there: ``jobs`` itself and every
folder are opened without following symlinks (a ``jobs`` symlink means no removal at all), a
folder is first renamed to a unique ``.trash-*`` name inside ``jobs/`` while its request is
locked exclusively, its age is checked again after the rename (a write that raced the first
check keeps it: it is renamed back), and only then is it deleted by a walk that unlinks names
in folder descriptors and never follows a link.  Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Iterator
from typing import IO

from edgecal_agent.errors import JobError
from edgecal_agent.messages import JOBS_DIR, REQUEST_FILE
from edgecal_agent.workdir import (
    DIR_FLAGS,
    O_CLOEXEC,
    O_NOFOLLOW,
    O_NONBLOCK,
    Workdir,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on a POSIX system: no locks, no removal
    fcntl = None  # type: ignore[assignment]

STALE_AFTER_S = 3600.0
#: Folders being removed are first renamed to this prefix (job ids never start with a dot).
TRASH_PREFIX = ".trash-"
#: Deeper folders are not walked: such a folder is never counted stale (an agent's job folders
#: are one or two levels deep).
MAX_WALK_DEPTH = 32


@contextlib.contextmanager
def running(job: str | IO[bytes]) -> Iterator[None]:
    """Hold a shared lock on the job's request for the time it runs (none if it has none).
    ``job``: the open request file, or the job folder's path."""
    fh: IO[bytes] | None = None
    owned = False
    with contextlib.suppress(OSError):
        if isinstance(job, str):
            fd = os.open(
                os.path.join(job, REQUEST_FILE), os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK
            )
            fh, owned = os.fdopen(fd, "rb"), True
        else:
            fh = job
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
    try:
        yield
    finally:
        if fh is not None and owned:
            fh.close()


class _Busy(Exception):
    """The folder is in use: changed too recently, locked, too deep or swapped."""


def _newest_mtime(fd: int, depth: int = 0) -> float:
    """The newest mtime of the folder ``fd`` and everything in it, at any depth (links are
    not followed; a folder deeper than ``MAX_WALK_DEPTH`` is ``_Busy``)."""
    if depth > MAX_WALK_DEPTH:
        raise _Busy("too deep")
    newest = os.fstat(fd).st_mtime
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        newest = max(newest, st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
            try:
                if not os.path.samestat(st, os.fstat(sub)):
                    raise _Busy("swapped")
                newest = max(newest, _newest_mtime(sub, depth + 1))
            finally:
                os.close(sub)
    return newest


def _remove_tree(fd: int, depth: int = 0) -> None:
    """Delete everything in folder ``fd`` (names unlinked in folder descriptors; a link is
    removed, never followed)."""
    if depth > MAX_WALK_DEPTH:
        raise _Busy("too deep")
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
            try:
                _remove_tree(sub, depth + 1)
            finally:
                os.close(sub)
            os.rmdir(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)


@contextlib.contextmanager
def _locked_exclusively(fd: int) -> Iterator[None]:
    """Hold the folder's request exclusively (``_Busy`` if a running job holds it)."""
    try:
        rfd = os.open(REQUEST_FILE, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, dir_fd=fd)
    except OSError:  # none, or not a file our jobs could have opened: nothing runs there
        yield
        return
    try:
        try:
            fcntl.flock(rfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise _Busy("locked") from None
        yield
    finally:
        os.close(rfd)


def _remove_if_stale(jobs_fd: int, name: str, older_than_s: float, now: float) -> bool:
    """Remove ``jobs/<name>`` if it is a real folder, stale and unlocked; whether it did."""
    st = os.stat(name, dir_fd=jobs_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        return False
    fd = os.open(name, DIR_FLAGS, dir_fd=jobs_fd)
    try:
        if not os.path.samestat(st, os.fstat(fd)):
            return False
        try:
            if now - _newest_mtime(fd) < older_than_s:
                return False
            with _locked_exclusively(fd):
                trash = name
                if not name.startswith(TRASH_PREFIX):
                    trash = f"{TRASH_PREFIX}{secrets.token_hex(8)}"
                    os.rename(name, trash, src_dir_fd=jobs_fd, dst_dir_fd=jobs_fd)
                moved = os.stat(trash, dir_fd=jobs_fd, follow_symlinks=False)
                if (
                    not os.path.samestat(moved, os.fstat(fd))
                    or now - _newest_mtime(fd) < older_than_s
                ):
                    if trash != name:  # changed meanwhile: it keeps its name
                        with contextlib.suppress(OSError):
                            os.stat(name, dir_fd=jobs_fd, follow_symlinks=False)
                            return False
                        os.rename(trash, name, src_dir_fd=jobs_fd, dst_dir_fd=jobs_fd)
                    return False
                _remove_tree(fd)
                os.rmdir(trash, dir_fd=jobs_fd)
        except _Busy:
            return False
    finally:
        os.close(fd)
    return True


def remove_stale(
    workdir: str | Workdir, older_than_s: float = STALE_AFTER_S, now: float | None = None
) -> list[str]:
    """Remove the job folders under ``workdir/jobs`` unchanged for ``older_than_s`` and not
    locked by a running job; their names.  Errors leave a folder in place."""
    if fcntl is None:
        # mypy checks for the platform it runs on, where fcntl exists
        return []  # type: ignore[unreachable]
    now = time.time() if now is None else now
    removed: list[str] = []
    if isinstance(workdir, Workdir):
        return _remove_stale_in(workdir, older_than_s, now)
    try:
        wd = Workdir(workdir)
    except JobError:
        return removed
    with wd:
        return _remove_stale_in(wd, older_than_s, now)


def _remove_stale_in(wd: Workdir, older_than_s: float, now: float) -> list[str]:
    removed: list[str] = []
    try:
        jobs_fd = wd.open_dir_parts([JOBS_DIR])
    except OSError:  # none yet, or not a real folder: nothing to clean
        return removed
    try:
        for name in sorted(os.listdir(jobs_fd)):
            try:
                gone = _remove_if_stale(jobs_fd, name, older_than_s, now)
            except OSError:
                continue
            if gone and not name.startswith(TRASH_PREFIX):
                removed.append(name)
    finally:
        os.close(jobs_fd)
    return removed
