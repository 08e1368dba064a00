"""The host-side pool for per-board work (opening boards, golden checks, validation, checks):
bounded, since each board mostly waits on its link but a fleet can be large."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

#: Boards worked on at the same time.
MAX_PARALLEL = 16


def board_pool(n: int, max_parallel: int = MAX_PARALLEL, extra: int = 0) -> ThreadPoolExecutor:
    """A pool for work on ``n`` boards, at most ``max_parallel`` at a time (plus ``extra``
    threads for host-side work running alongside)."""
    return ThreadPoolExecutor(
        max_workers=max(1, min(max_parallel, n)) + extra, thread_name_prefix="edgecal-board"
    )
