"""Where a device's native agent binary comes from: ``edgecal.native``'s cache, built there
first when the user asked for the native agent, taken only from the cache when ``auto`` chose
it (a run never waits minutes for a cold build it did not ask for)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgecal.errors import BoardSetupError

#: ``target -> path`` of a native agent binary built for that target (``edgecal.native``).
NativeAgentSource = Callable[[str], Path]


def built_native_agent(target: str) -> Path:
    """The native agent for ``target``, built into the cache first when it is not there."""
    from edgecal.native import build_agent

    return build_agent(target).path


def cached_native_agent(board: str, target: str, why: str) -> Path:
    """The native agent for ``target`` from this machine's cache, else a ``BoardSetupError``
    naming ``board``, ``why`` it gets the native agent, and how to build it."""
    from edgecal.native import find_agent

    found = find_agent(target)
    if found is None:
        raise BoardSetupError(
            f"{board}: the native agent for {target} is not built on this machine yet ({why})",
            hint=f"run `edgecal agent build --target {target}` once (minutes cold, then cached); "
            'or give the board Python with numpy and ncnn and set agent = "python"',
        )
    return found.path
