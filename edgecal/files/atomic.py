"""Write files so that a reader sees the old content or the new one, never half of it.

One implementation for every file edgecal writes on this machine: :mod:`edgecal.files.outputs`
(a temporary file beside the target, renamed over it; the umask honoured; a device or FIFO
written into, never replaced).  The agent keeps its own (``edgecal_agent.fileio``): it
depends on nothing of edgecal.
"""

from __future__ import annotations

import os

from edgecal.files.outputs import write_files


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it (unless not ``durable``: a file
    in a temporary folder that nothing reads after a crash), then rename it over ``path``."""
    write_files([(path, data)], durable=durable)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Atomic text write; newlines are written as given (no platform translation)."""
    write_files([(path, text.encode("utf-8"))])
