"""Build the native agent for a target (``edgecal agent build``): libncnn from the package
index's ncnn sdist and the agent linked statically with it, both through the cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal.errors import InputFileError, UsageError
from edgecal.native import TARGET_NAMES, build_agent


@dataclass(frozen=True)
class AgentBuild:
    """The native agent binary of one target: where it is, what it links, whether it came
    from the cache, and how long this call took."""

    path: Path
    bytes: int
    target: str
    ncnn_version: str
    key: str
    cached: bool
    seconds: float
    ncnn_cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "target": self.target,
            "ncnn": self.ncnn_version,
            "key": self.key,
            "cached": self.cached,
            "ncnn_cached": self.ncnn_cached,
            "seconds": round(self.seconds, 3),
        }


def agent_build(
    target: str,
    ncnn_version: str | None = None,
    *,
    sdist: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> AgentBuild:
    """The native agent for ``target`` (x86_64|aarch64|armv7) linked with ncnn
    ``ncnn_version`` (default: this machine's ncnn Python package's version) or the local
    sdist ``sdist``: from the cache, or built (cold: minutes per target)."""
    if target not in TARGET_NAMES:
        raise UsageError(f"--target {target!r}: unknown", hint=f"one of {', '.join(TARGET_NAMES)}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: give 1 or more")
    if sdist is not None and not Path(os.fspath(sdist)).is_file():
        raise InputFileError(
            f"--ncnn-sdist {os.fspath(sdist)}: no such file",
            hint="give an ncnn-<version>.tar.gz sdist (e.g. from the package index)",
        )
    b = build_agent(target, ncnn_version, sdist=sdist, jobs=jobs, progress=progress)
    return AgentBuild(
        b.path,
        b.path.stat().st_size,
        b.target,
        b.ncnn_version,
        b.key,
        b.cached,
        b.seconds,
        b.ncnn.cached,
    )
