"""Write files so that a reader sees the old content or the new one, never half of it.

The agent and the host share one implementation (``edgecal_agent.fileio``): the agent package
depends on nothing of edgecal, so edgecal uses the agent's.
"""

from __future__ import annotations

import os

from edgecal_agent.fileio import write_atomic


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    write_atomic(path, data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Atomic text write; newlines are written as given (no platform translation)."""
    write_atomic(path, text.encode("utf-8"))
