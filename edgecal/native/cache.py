"""The native build cache, ``${EDGECAL_CACHE:-~/.cache/edgecal}/native/``: content-keyed
folders made all or nothing (built in a temp folder beside the final one, renamed into place,
under a lock file so two builds of one key never collide)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: bumped when the builder's way of building changes what a cached folder holds
BUILDER_VERSION = 1


def cache_root() -> Path:
    base = os.environ.get("EDGECAL_CACHE") or str(Path.home() / ".cache" / "edgecal")
    return Path(base).expanduser() / "native"


def key_of(material: dict[str, Any]) -> str:
    """The sha256 of ``material`` as canonical JSON (with the builder's version)."""
    doc = {"builder": BUILDER_VERSION, **material}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def tree_hash(folder: Path) -> str:
    """A sha256 over every file under ``folder`` (relative path and bytes), in name order."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if "__pycache__" in rel.split("/"):
            continue
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@contextmanager
def locked(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on file ``lock`` (created if missing) for the block."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_once(final: Path, make: Callable[[Path], None]) -> bool:
    """Make folder ``final`` unless it exists: ``make(tmp)`` fills a temp folder beside it,
    which is then renamed to ``final``; a failed ``make`` leaves nothing.  True when this call
    built it (False: it was there, or another process built it while this one waited)."""
    if final.is_dir():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    with locked(final.parent / f".{final.name}.lock"):
        if final.is_dir():
            return False
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # a killed build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            make(tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def write_text_once(path: Path, text: str) -> Path:
    """``path`` holding ``text`` (written atomically when missing or different)."""
    if path.is_file() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
