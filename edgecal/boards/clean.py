"""``edgecal board clean``: what a board's or phone's work directory keeps of the pushed files.

Pushed models and shards stay in the work directory (``files/<sha256>/``) so that a repeated
run pushes nothing; nothing else removes them.  :func:`choose_removals` keeps the most
recently stored of them within a budget (none by default) and names the rest;
:func:`clean_board` removes those on the board.  The agent and running or recent jobs are left
alone (the agent removes old job folders itself); a file removed here is pushed again by the
next run that needs it.  Run it when no run is using the board.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgecal.boards.config import Board
from edgecal.device.remote import StoredFile


@dataclass
class CleanReport:
    """What ``board clean`` removed from and kept on one board."""

    board: str
    workdir: str = ""
    removed: list[StoredFile] = field(default_factory=list)
    kept: list[StoredFile] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        def total(files: Sequence[StoredFile]) -> int:
            return sum(f.size for f in files)

        return {
            "board": self.board,
            "workdir": self.workdir,
            "removed": {"files": len(self.removed), "bytes": total(self.removed)},
            "kept": {"files": len(self.kept), "bytes": total(self.kept)},
            "seconds": round(self.seconds, 3),
        }

    def line(self) -> str:
        d = self.to_dict()
        return (
            f"{self.board}: removed {d['removed']['files']} pushed file folder(s), "
            f"{_mib(d['removed']['bytes'])}; kept {d['kept']['files']}, "
            f"{_mib(d['kept']['bytes'])} ({self.workdir})"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def choose_removals(
    stored: Sequence[StoredFile], keep_bytes: int
) -> tuple[list[StoredFile], list[StoredFile]]:
    """``(remove, keep)``: the most recently stored files are kept while their total stays
    within ``keep_bytes`` (ties: by name, for a stable choice); the rest are removed."""
    order = sorted(stored, key=lambda f: (-f.stored_at, f.rel))
    keep: list[StoredFile] = []
    used = 0
    for i, f in enumerate(order):
        if used + f.size > keep_bytes:
            return order[i:], keep
        keep.append(f)
        used += f.size
    return [], keep


def clean_board(board: Board, keep_bytes: int, accept_new_host_key: bool = False) -> CleanReport:
    """Remove the pushed files of ``board``'s work directory beyond ``keep_bytes`` (the most
    recently stored are kept)."""
    from edgecal.boards.open import open_board

    t0 = time.perf_counter()
    with open_board(board, accept_new_host_key=accept_new_host_key) as dev:
        remove, keep = choose_removals(dev.stored_files(), keep_bytes)
        dev.remove_stored(remove)
        return CleanReport(board.name, str(dev.workdir), remove, keep, time.perf_counter() - t0)
