"""``--help`` that states every default: an option whose default is a value (not None, an
empty list or an unset flag) shows ``(default: VALUE)`` unless its help already says it."""

from __future__ import annotations

import argparse
import copy
from typing import Any


def default_note(action: argparse.Action) -> str | None:
    """``(default: VALUE)`` for ``action``, or None when there is nothing to add."""
    d = action.default
    if d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d):
        return None
    if isinstance(
        action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    ):
        return None
    if "default" in (action.help or "").lower():
        return None
    shown = ",".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
    return f"(default: {shown})"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    def _format_action(self, action: argparse.Action) -> str:
        note = default_note(action)
        if note is not None:
            action = copy.copy(action)
            action.help = (f"{action.help} " if action.help else "") + note.replace("%", "%%")
        return super()._format_action(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with :class:`DefaultsHelpFormatter`; its sub-commands' parsers are of
    this class too (``add_subparsers`` makes parsers of the parent's type)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
