"""SIGTERM handled like SIGINT: raised in the main thread as :class:`Terminated` (a
``KeyboardInterrupt``), so every ``with`` block and ``finally`` on the way out runs (temporary
folders removed, agents stopped, run directories unlocked)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # a second SIGTERM while cleaning up would cut the clean-up short: ignored from here on
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
