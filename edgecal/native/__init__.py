"""The native agent's host-side build: ncnn's sdist from the package index, our toolchain
files for Debian's gcc (cross) compilers, static libncnn and the agent built per target and
cached under ``${EDGECAL_CACHE:-~/.cache/edgecal}/native/``.  Drives compilers (not pure).

The names below are imported on first use, so the command line's parser stays light."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: the targets the native agent is built for (``edgecal.native.toolchain.TARGETS`` has each
#: one's toolchain)
TARGET_NAMES = ("x86_64", "aarch64", "armv7")

_EXPORTS = {
    "NativeAgentBuild": "edgecal.native.agent",
    "build_agent": "edgecal.native.agent",
    "find_agent": "edgecal.native.agent",
    "NcnnBuild": "edgecal.native.build",
    "ProgramBuild": "edgecal.native.build",
    "build_ncnn": "edgecal.native.build",
    "build_program": "edgecal.native.build",
}

__all__ = [
    "TARGET_NAMES",
    "NativeAgentBuild",
    "NcnnBuild",
    "ProgramBuild",
    "build_agent",
    "build_ncnn",
    "build_program",
    "find_agent",
]

if TYPE_CHECKING:
    from edgecal.native.agent import NativeAgentBuild, build_agent, find_agent
    from edgecal.native.build import NcnnBuild, ProgramBuild, build_ncnn, build_program


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgecal.native' has no attribute {name!r}")
