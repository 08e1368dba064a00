"""Programs the host runs on a board with the board's own Python (``python -c TEXT ARG...``).

They are real files in ``board_snippets/`` (package data, never imported here), so ruff lints
them and a test runs them; each is sent as its file's text, unchanged.  They import only the
standard library and run on any Python the board may have: ``probe.py`` must *report* a Python
too old for the agent, not fail on it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def board_snippet(name: str) -> str:
    """The text of ``board_snippets/<name>``."""
    return (
        files("edgecal.device")
        .joinpath("board_snippets")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )
