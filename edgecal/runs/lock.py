"""One process at a time in a run directory: an exclusive ``flock`` on ``RUN/run.lock``,
held for the whole run, with the holder's pid written in the file for the error message.

The lock file stays after the run (removing it would let a process that opened the old file
and one that makes a new one both hold "the" lock); the kernel drops the lock when the
process ends, however it ends.

:func:`folder_locked`: a short lock on the run directory itself, for a read-modify-write of
``run.json`` (two ``validate`` runs recording their command in one run directory at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from edgecal.errors import CalibrationError

LOCK = "run.lock"


class RunLock:
    """A held lock on a run directory (release it with :meth:`release`)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> RunLock:
        """Lock ``folder`` for this process, or raise naming the process that holds it."""
        path = folder / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise CalibrationError(
                f"{folder}: cannot lock the run directory ({path}: {exc.strerror})",
                hint="choose a run directory you can write to",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise CalibrationError(
                f"{folder}: the run directory is in use by another edgecal calibrate"
                + (f" (pid {holder})" if holder else ""),
                hint="wait for that run to finish (or stop it), or give another --run-dir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(folder, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # drops the flock


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        if text.isdigit():
            return text
    return ""


@contextlib.contextmanager
def folder_locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (waiting for it) while a short
    read-modify-write of a file in it runs: other threads and processes doing the same wait
    their turn.  The folder rather than ``RUN/run.lock``: ``calibrate`` holds that one for its
    whole run and records its command meanwhile (a second ``flock`` on it would wait forever),
    and it adds no file to the folder.  Where the folder cannot be opened or locked (no read
    permission, a file system without ``flock``) the update runs unlocked, as it always did."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the flock
