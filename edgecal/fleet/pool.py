"""The host-side pool for per-board work (opening boards, golden checks, validation, checks):
bounded, since each board mostly waits on its link but a fleet can be large."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecal.device.base import Device

#: Boards worked on at the same time.
MAX_PARALLEL = 16


def board_pool(n: int, max_parallel: int = MAX_PARALLEL, extra: int = 0) -> ThreadPoolExecutor:
    """A pool for work on ``n`` boards, at most ``max_parallel`` at a time (plus ``extra``
    threads for host-side work running alongside)."""
    return ThreadPoolExecutor(
        max_workers=max(1, min(max_parallel, n)) + extra, thread_name_prefix="edgecal-board"
    )


def close_all(devices: Sequence[Device]) -> None:
    """Close every device, all at the same time (each waits for its agent to quit and its link
    to close); every one is closed before the first error, if any, is raised."""
    if len(devices) <= 1:
        for device in devices:
            device.close()
        return
    with board_pool(len(devices)) as pool:
        futures = [pool.submit(device.close) for device in devices]
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    if errors:
        raise errors[0]
