"""Hashing for the agent, once per file state (stdlib only)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from typing import IO

#: sha256 of files hashed by this process, by identity and state.
_HASHED: dict[str, str] = {}


def fd_state(fh: IO[bytes]) -> str:
    """An open file's identity and state: any write, rename or utime changes its ctime."""
    st = os.fstat(fh.fileno())
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def sha256_fh(fh: IO[bytes]) -> str:
    """sha256 of an open file from its start; leaves it at its start."""
    h = hashlib.sha256()
    fh.seek(0)
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    fh.seek(0)
    return h.hexdigest()


def sha256_cached_at(dfd: int, name: str, fh: IO[bytes]) -> str:
    """sha256 of ``fh``, the open file ``name`` in folder ``dfd``, hashed once per file state:
    remembered in this process and beside the file (``.<name>.sha256``, for later agents: a
    model is hashed once, not at every start), read and written in that folder, never through
    a symlink."""
    from edgecal_agent.workdir import O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK, write_atomic_at

    state = fd_state(fh)
    got = _HASHED.get(state)
    if got is not None:
        return got
    side = f".{name}.sha256"
    with contextlib.suppress(OSError, ValueError):
        sfd = os.open(side, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, dir_fd=dfd)
        with os.fdopen(sfd, "rb") as sh:
            if stat.S_ISREG(os.fstat(sh.fileno()).st_mode):
                recorded, _, digest = sh.read(512).decode("ascii").strip().rpartition(" ")
                if recorded == state and len(digest) == 64:
                    got = digest
    if got is None:
        got = sha256_fh(fh)
        if fd_state(fh) == state:  # unchanged while hashing
            with contextlib.suppress(OSError):
                write_atomic_at(dfd, side, f"{state} {got}\n".encode("ascii"))
    if len(_HASHED) > 4096:
        _HASHED.clear()
    _HASHED[state] = got
    return got
