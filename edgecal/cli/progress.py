"""Progress on stderr, fed by the pipeline's ``(done, total)`` callbacks: rich progress bars on a
terminal; plain lines when stderr is not one (a CI log, a pipe, a file), so a long run still
shows that it moves. :func:`run_hooks`: the progress, notes and command line a long run of
calibrate, validate or tune reports through."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TextIO, TypedDict

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgecal.cli.inputs import say_on_stderr
from edgecal.cli.options import command_line

if TYPE_CHECKING:
    from edgecal.fleet.prepare import Say
    from edgecal.workflows.calibrate import ProgressFactory


#: plain lines: one each time a task passes another tenth of its total, and at least every
#: PLAIN_EVERY_S seconds while it moves
PLAIN_STEPS = 10
PLAIN_EVERY_S = 10.0


class PlainProgress:
    """Periodic ``edgecal: <task> <done>/<total> (<pct> %, <s> s)`` lines for a non-terminal."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self._lock = threading.Lock()

    def task(self, description: str, total: int) -> Callable[[int, int], None]:
        start = self.clock()
        state = {"step": 0, "at": start, "done": -1}

        def update(done: int, total_now: int) -> None:
            total_now = max(total_now, 1)
            now = self.clock()
            step = min(PLAIN_STEPS, done * PLAIN_STEPS // total_now)
            with self._lock:
                if done == state["done"]:
                    return
                finished = done >= total_now and state["step"] < PLAIN_STEPS + 1
                if not (
                    finished
                    or step > state["step"]
                    or (now - state["at"] >= PLAIN_EVERY_S and done > state["done"])
                ):
                    return
                state.update(
                    step=PLAIN_STEPS + 1 if finished else max(step, state["step"]),
                    at=now,
                    done=done,
                )
                self.stream.write(
                    f"edgecal: {description} {done}/{total_now} "
                    f"({100 * done // total_now} %, {now - start:.0f} s)\n"
                )
                self.stream.flush()

        return update


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class ProgressBars:
    """A context manager whose ``task(description, total)`` returns an update callback."""

    def __init__(
        self, enabled: bool = True, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        # stderr itself, not rich's guess (FORCE_COLOR or TTY_COMPATIBLE, set in many CI
        # setups, would make rich draw bars into a log)
        self._plain = (
            PlainProgress(sys.stderr, clock) if enabled and not _isatty(sys.stderr) else None
        )
        self._progress = Progress(
            TextColumn("[bold]{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            disable=not enabled or self._plain is not None,
        )

    def __enter__(self) -> ProgressBars:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def task(self, description: str, total: int) -> Callable[[int, int], None]:
        if self._plain is not None:
            return self._plain.task(description, total)
        task_id = self._progress.add_task(description, total=max(total, 1))

        def update(done: int, total_now: int) -> None:
            self._progress.update(task_id, completed=done, total=max(total_now, 1))

        return update


class RunHooks(TypedDict):
    """What a long run reports through: its progress bars, its notes (on standard error) and
    the command line its run directory records."""

    progress: ProgressFactory
    say: Say
    command: list[str]


@contextlib.contextmanager
def run_hooks(args: argparse.Namespace) -> Iterator[RunHooks]:
    """The hooks of a run of the command ``args``, with progress bars (none with ``--quiet``)
    while it lasts."""
    with ProgressBars(enabled=not getattr(args, "quiet", False)) as bars:
        yield RunHooks(progress=bars.task, say=say_on_stderr(), command=command_line(args))
