"""Standard output while a command runs: a write that fails ends the command as every other
output that cannot be written does (one line naming standard output, exit 2, no traceback),
and a reader that went away (``edgecal ... | head -1``) ends nothing: the rest of the output
is dropped and the command exits as it would have."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from edgecal.errors import UsageError

#: What a command's stdout is called in its errors.
STDOUT_NAME = "standard output"


class GuardedStdout:
    """``stream`` (the process's ``sys.stdout``) with its write errors turned into
    :class:`UsageError`, and a broken pipe into silence.  Everything else is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False  # the reader went away or the output failed: nothing more is written

    def write(self, text: str) -> int:
        if not self.gone:
            with self._guard():
                return self.stream.write(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.gone:
            with self._guard():
                self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            self._drop()
        except OSError as exc:
            self._drop()
            raise UsageError(
                f"cannot write {STDOUT_NAME}: {exc.strerror or exc}",
                hint="free disk space, or redirect the output to another file",
            ) from None

    def _drop(self) -> None:
        """Nothing more goes to the failed output, not even what its buffer still holds when
        the interpreter exits (the descriptor now points at the null device)."""
        self.gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self.stream.fileno())
            finally:
                os.close(null)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[GuardedStdout]:
    """``sys.stdout`` is a :class:`GuardedStdout` within the block (restored after)."""
    original = sys.stdout
    guarded = GuardedStdout(original)
    sys.stdout = guarded
    try:
        yield guarded
    finally:
        sys.stdout = original
