"""The agent's hash cache: a file is hashed once per state, also across agent processes, and
any change to it is seen."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgecal_agent import fileio


def cached(f: Path) -> str:
    """What the agent does: hash the open file through its folder's descriptor."""
    dfd = os.open(f.parent, os.O_RDONLY)
    try:
        with open(f, "rb") as fh:
            return fileio.sha256_cached_at(dfd, f.name, fh)
    finally:
        os.close(dfd)


@pytest.fixture(autouse=True)
def _fresh_process_cache() -> None:
    fileio._HASHED.clear()


def test_hashed_once_then_read_from_the_side_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(os.urandom(1000))
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    calls: list[str] = []
    real = fileio.sha256_fh
    monkeypatch.setattr(fileio, "sha256_fh", lambda fh: calls.append(fh.name) or real(fh))
    assert cached(f) == want
    assert cached(f) == want
    fileio._HASHED.clear()  # a later agent process
    assert cached(f) == want
    assert len(calls) == 1 and (tmp_path / ".model.bin.sha256").is_file()


def test_a_change_in_place_is_seen_even_with_the_old_mtime(tmp_path: Path) -> None:
    f = tmp_path / "shard.npz"
    f.write_bytes(b"a" * 100)
    cached(f)
    st = f.stat()
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: ctime moved
    fileio._HASHED.clear()
    assert cached(f) == hashlib.sha256(b"b" * 100).hexdigest()


def test_a_forged_or_broken_side_file_is_not_trusted(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"data")
    (tmp_path / ".x.sha256").write_text("1 2 3 4 5 " + "0" * 64)  # another file's state
    assert cached(f) == hashlib.sha256(b"data").hexdigest()
    fileio._HASHED.clear()
    (tmp_path / ".x.sha256").write_bytes(b"\xff\xfe garbage")
    assert cached(f) == hashlib.sha256(b"data").hexdigest()
