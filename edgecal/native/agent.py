"""The native agent (``edgecal_agent/native/``, C++) built for a target through the cache:
its libncnn first, then the agent linked statically against it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import edgecal_agent
from edgecal.errors import NativeBuildError
from edgecal.native.build import (
    NcnnBuild,
    ProgramBuild,
    Progress,
    build_ncnn,
    build_program,
    ncnn_folder,
    ncnn_key,
    program_folder,
    program_key,
    resolve_source,
)
from edgecal.native.cache import cache_root
from edgecal.native.toolchain import find_toolchain, target

PROGRAM = "edgecal-agent-native"
JSON_HEADERS = Path("/usr/include/nlohmann")

#: what ``build_agent`` returns: the binary's path, its target, ncnn version, cache key, whether
#: it came from the cache, and the seconds this call took
NativeAgentBuild = ProgramBuild


def agent_source() -> Path:
    """The native agent's cmake project (package data of ``edgecal_agent``)."""
    return Path(edgecal_agent.__file__).resolve().parent / "native"


def json_include() -> Path:
    """A cache folder holding only a ``nlohmann`` link to the system's nlohmann/json headers
    (so a cross build never sees the host's /usr/include)."""
    if not (JSON_HEADERS / "json.hpp").is_file():
        raise NativeBuildError(
            f"native agent: no {JSON_HEADERS / 'json.hpp'}",
            hint="install Debian's nlohmann-json3-dev (apt-get install nlohmann-json3-dev)",
        )
    folder = cache_root() / "json-include"
    link = folder / "nlohmann"
    if not link.is_symlink() or os.readlink(link) != str(JSON_HEADERS):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".nlohmann.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(JSON_HEADERS)
        os.replace(tmp, link)
    return folder


def _defines() -> tuple[dict[str, str], dict[str, str]]:
    """(the agent's cmake defines, the ones its cache key uses: the JSON headers by content,
    not by the cache's path)."""
    inc = json_include()
    defs = {
        "EDGECAL_AGENT_VERSION": edgecal_agent.__version__,
        "EDGECAL_PROTOCOL": str(edgecal_agent.PROTOCOL_VERSION),
        "EDGECAL_JSON_INCLUDE": str(inc),
        "EDGECAL_STATIC": "ON",
    }
    json_hpp = hashlib.sha256((JSON_HEADERS / "json.hpp").read_bytes()).hexdigest()
    return defs, {**defs, "EDGECAL_JSON_INCLUDE": f"json.hpp:{json_hpp}"}


def _project() -> Path:
    src = agent_source()
    if not (src / "CMakeLists.txt").is_file():
        raise NativeBuildError(
            f"native agent: no {src / 'CMakeLists.txt'}",
            hint="this edgecal ships without the native agent's source; reinstall edgecal",
        )
    return src


def build_agent(
    target_name: str,
    ncnn_version: str | None = None,
    *,
    sdist: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> NativeAgentBuild:
    """The native agent for ``target_name`` linked with ncnn ``ncnn_version`` (default: the
    host's ncnn Python package's version), from the cache or built."""
    t0 = time.monotonic()
    project = _project()
    ncnn = build_ncnn(target_name, ncnn_version, sdist=sdist, jobs=jobs, progress=progress)
    defs, key_defs = _defines()
    agent = build_program(
        project, PROGRAM, ncnn, defines=defs, key_defines=key_defs, jobs=jobs, progress=progress
    )
    return dataclasses.replace(agent, seconds=time.monotonic() - t0)


def find_agent(
    target_name: str,
    ncnn_version: str | None = None,
    *,
    sdist: str | os.PathLike[str] | None = None,
) -> NativeAgentBuild | None:
    """The cached native agent for ``target_name`` (None when it was never built): looks only
    in the cache, builds nothing, needs no network."""
    project = _project()
    tc = find_toolchain(target(target_name))
    src = resolve_source(ncnn_version, sdist)
    nkey, _ = ncnn_key(src, tc)
    prefix = ncnn_folder(src, tc, nkey)
    if not prefix.is_dir():
        return None
    ncnn = NcnnBuild(prefix, tc.target.name, src.version, nkey, True, 0.0, tc)
    _, key_defs = _defines()
    key = program_key(ncnn, project, PROGRAM, key_defs)
    path = program_folder(ncnn, PROGRAM, key) / PROGRAM
    if not path.is_file():
        return None
    return ProgramBuild(path, ncnn.target, ncnn.version, key, True, 0.0, ncnn)
