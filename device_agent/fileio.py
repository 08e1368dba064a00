"""Atomic writes and hashing for the agent (stdlib only)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temp file beside ``path``, fsync, then ``os.replace``: all or nothing."""
    target = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(target) or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
