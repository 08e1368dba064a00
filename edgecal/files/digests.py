"""sha256 of host files, remembered while a file keeps its identity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stat_key(path: Path) -> tuple[str, tuple[int, ...]] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


class DigestCache:
    """sha256 of ``path``, remembered while the file keeps its identity (same inode, size,
    mtime and ctime to the nanosecond: any write or replacement changes ctime)."""

    def __init__(self) -> None:
        self._digests: dict[tuple[str, tuple[int, ...]], str] = {}

    def sha256(self, path: Path) -> str:
        key = stat_key(path)
        digest = self._digests.get(key) if key is not None else None
        if digest is None:
            digest = file_sha256(path)
            if key is not None and stat_key(path) == key:  # unchanged while hashing
                self._digests[key] = digest
        return digest

    def remember(self, path: Path, digest: str) -> None:
        key = stat_key(path)
        if key is not None:
            self._digests[key] = digest
