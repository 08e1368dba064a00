"""The native agent's host-side build: ncnn's sdist from the package index, our toolchain
files for Debian's gcc (cross) compilers, static libncnn and the agent built per target and
cached under ``${EDGECAL_CACHE:-~/.cache/edgecal}/native/``.  Drives compilers (not pure)."""

from __future__ import annotations

from edgecal.native.agent import NativeAgentBuild, build_agent, find_agent
from edgecal.native.build import NcnnBuild, ProgramBuild, build_ncnn, build_program
from edgecal.native.toolchain import TARGETS

__all__ = [
    "TARGETS",
    "NativeAgentBuild",
    "NcnnBuild",
    "ProgramBuild",
    "build_agent",
    "build_ncnn",
    "build_program",
    "find_agent",
]
