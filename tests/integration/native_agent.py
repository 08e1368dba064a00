"""The native agent for the tests: built from ``edgecal_agent/native`` with cmake against an
x86_64 ncnn install, cached by the hash of its sources (rebuilt when they change)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import edgecal_agent

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "edgecal_agent" / "native"
#: The ncnn install prefix the test binary links (EDGECAL_TEST_NCNN_PREFIX overrides it).
NCNN_PREFIX = Path(os.environ.get("EDGECAL_TEST_NCNN_PREFIX", "/work/native-dev/ncnn-x86_64"))
JSON_HEADER = Path("/usr/include/nlohmann/json.hpp")
BINARY = "edgecal-agent-native"


def why_not_buildable() -> str | None:
    """Why the native agent cannot be built here, or None."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install cmake g++)"
    if not (NCNN_PREFIX / "lib" / "cmake" / "ncnn").is_dir():
        return f"no ncnn install at {NCNN_PREFIX} (set EDGECAL_TEST_NCNN_PREFIX)"
    if not JSON_HEADER.is_file():
        return f"{JSON_HEADER} is missing (apt-get install nlohmann-json3-dev)"
    return None


def built_ncnn_version() -> str:
    """The version string of the ncnn the test binary links (its platform.h)."""
    text = (NCNN_PREFIX / "include" / "ncnn" / "platform.h").read_text()
    return text.split('NCNN_VERSION_STRING "', 1)[1].split('"', 1)[0]


def source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and "build" not in path.relative_to(SOURCE).parts:
            h.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    h.update(str(NCNN_PREFIX).encode())
    h.update(edgecal_agent.__version__.encode())
    return h.hexdigest()[:16]


def build_native_agent(cache: Path | None = None) -> Path:
    """The native agent executable (built now unless this source is already built)."""
    cache = cache or Path(tempfile.gettempdir()) / f"edgecal-native-agent-{os.getuid()}"
    out = cache / source_hash()
    binary = out / BINARY
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    try:
        include = work / "json-include"
        include.mkdir()
        (include / "nlohmann").symlink_to(JSON_HEADER.parent)
        configure = [
            "cmake",
            "-S",
            str(SOURCE),
            "-B",
            str(work / "build"),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-Dncnn_DIR={NCNN_PREFIX / 'lib' / 'cmake' / 'ncnn'}",
            f"-DEDGECAL_AGENT_VERSION={edgecal_agent.__version__}",
            f"-DEDGECAL_PROTOCOL={edgecal_agent.PROTOCOL_VERSION}",
            f"-DEDGECAL_JSON_INCLUDE={include}",
            "-DEDGECAL_STATIC=ON",
        ]
        for argv in (configure, ["cmake", "--build", str(work / "build"), "-j2"]):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(argv[:2])} failed ({done.returncode}):\n{done.stdout[-4000:]}"
                    f"\n{done.stderr[-4000:]}"
                )
        staged = work / BINARY
        shutil.copy2(work / "build" / BINARY, staged)
        shutil.rmtree(work / "build", ignore_errors=True)
        shutil.rmtree(include, ignore_errors=True)
        with contextlib.suppress(OSError):  # another session built it meanwhile
            os.rename(work, out)
        if not binary.is_file():
            raise RuntimeError(f"the native agent build left no {binary}")
        return binary
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
