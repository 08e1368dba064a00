"""Progress bars on stderr (rich), fed by the pipeline's ``(done, total)`` callbacks."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressBars:
    """A context manager whose ``task(description, total)`` returns an update callback."""

    def __init__(self, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            disable=not enabled,
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
        task_id = self._progress.add_task(description, total=max(total, 1))

        def update(done: int, total_now: int) -> None:
            self._progress.update(task_id, completed=done, total=max(total_now, 1))

        return update
