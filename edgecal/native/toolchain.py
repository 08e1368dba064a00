"""The native build's targets and toolchains: Debian's gcc 12 (cross) compilers, our own cmake
toolchain files, the ncnn options a deployed app uses, and the compiler's identity (part of
every cache key).  The text-making functions are pure; ``compiler_identity`` runs the compiler."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass

from edgecal.errors import NativeBuildError


@dataclass(frozen=True)
class Target:
    """A board architecture the native agent is built for."""

    name: str  # x86_64 | aarch64 | armv7
    processor: str  # CMAKE_SYSTEM_PROCESSOR (ncnn picks its arch code from it)
    triple: str  # the gcc prefix: <triple>-g++
    debian_package: str  # what provides <triple>-g++ on Debian
    flags: tuple[str, ...] = ()  # C/C++ flags of every object (the ABI and FPU)
    qemu: str | None = None  # the user-mode emulator that runs its binaries on an x86_64 host

    @property
    def cxx(self) -> str:
        return f"{self.triple}-g++"

    @property
    def cc(self) -> str:
        return f"{self.triple}-gcc"


TARGETS: dict[str, Target] = {  # keys: edgecal.native.TARGET_NAMES
    "x86_64": Target("x86_64", "x86_64", "x86_64-linux-gnu", "g++"),
    "aarch64": Target(
        "aarch64",
        "aarch64",
        "aarch64-linux-gnu",
        "g++-aarch64-linux-gnu",
        qemu="qemu-aarch64-static",
    ),
    "armv7": Target(
        "armv7",
        "armv7",
        "arm-linux-gnueabihf",
        "g++-arm-linux-gnueabihf",
        flags=("-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard", "-mfp16-format=ieee"),
        qemu="qemu-arm-static",
    ),
}


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise NativeBuildError(
            f"native agent: unknown target {name!r}", hint=f"one of {', '.join(TARGETS)}"
        ) from None


def ncnn_options(t: Target, version: str) -> dict[str, str]:
    """The cmake cache values libncnn is built with: what an app that deploys a model links
    (static, Release, CPU only, OpenMP, every int8/bf16 path, the CPU-specific kernels chosen
    at run time: NEON fp16/dotprod/bf16/i8mm on aarch64, AVX/AVX2/AVX512 on x86_64).
    ``NCNN_VERSION`` pins the version the library reports (the sdist's CMakeLists stamps
    today's date otherwise)."""
    opts = {
        "CMAKE_BUILD_TYPE": "Release",
        "NCNN_VERSION": version.rsplit(".", 1)[-1],
        "NCNN_VULKAN": "OFF",
        "NCNN_BUILD_TOOLS": "OFF",
        "NCNN_BUILD_EXAMPLES": "OFF",
        "NCNN_BUILD_BENCHMARK": "OFF",
        "NCNN_BUILD_TESTS": "OFF",
        "NCNN_PYTHON": "OFF",
        "NCNN_SHARED_LIB": "OFF",
        "NCNN_OPENMP": "ON",
        "NCNN_SIMPLEOMP": "OFF",
        "NCNN_RUNTIME_CPU": "ON",
        "NCNN_INT8": "ON",
        "NCNN_BF16": "ON",
        "NCNN_INSTALL_SDK": "ON",
    }
    if t.name == "armv7":
        opts["NCNN_VFPV4"] = "ON"
    return opts


def options_hash(options: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def toolchain_text(t: Target, cc: str, cxx: str, *, static: bool = True) -> str:
    """Our cmake toolchain file for target ``t`` with compilers ``cc``/``cxx`` (full paths)."""
    flags = " ".join(t.flags)
    lines = [
        f"# edgecal's toolchain for the native agent, target {t.name} (generated; do not edit)",
        "set(CMAKE_SYSTEM_NAME Linux)",
        f"set(CMAKE_SYSTEM_PROCESSOR {t.processor})",
        f'set(CMAKE_C_COMPILER "{cc}")',
        f'set(CMAKE_CXX_COMPILER "{cxx}")',
        f'set(CMAKE_C_FLAGS_INIT "{flags}")',
        f'set(CMAKE_CXX_FLAGS_INIT "{flags}")',
    ]
    if static:
        lines.append('set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")')
    lines += [
        f'set(CMAKE_FIND_ROOT_PATH "/usr/{t.triple}")',
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Toolchain:
    """The compilers found for a target, with the identity that goes into cache keys."""

    target: Target
    cc: str
    cxx: str
    version_line: str  # first line of `g++ --version`

    @property
    def identity(self) -> dict[str, str]:
        return {"cxx": self.cxx, "cc": self.cc, "version": self.version_line}

    def file_text(self, *, static: bool = True) -> str:
        return toolchain_text(self.target, self.cc, self.cxx, static=static)

    def static_libgomp(self) -> str | None:
        """The compiler's ``libgomp.a`` (None without one).  cmake's FindOpenMP picks
        ``libgomp.so``, which a ``-static`` link refuses; a program's build is given this."""
        try:
            out = subprocess.run(
                [self.cxx, "-print-file-name=libgomp.a"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        return out if out.startswith("/") else None  # else gcc echoes the bare name


def find_toolchain(t: Target) -> Toolchain:
    """The target's gcc/g++ on PATH and its version line; an error naming the Debian package
    when missing."""
    cxx, cc = shutil.which(t.cxx), shutil.which(t.cc)
    if cxx is None or cc is None:
        raise NativeBuildError(
            f"native agent for {t.name}: no {t.cxx if cxx is None else t.cc} on PATH",
            hint=f"install Debian's {t.debian_package} (apt-get install {t.debian_package})",
        )
    try:
        out = subprocess.run(
            [cxx, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeBuildError(
            f"native agent for {t.name}: {cxx} --version failed: {exc}",
            hint=f"reinstall Debian's {t.debian_package}",
        ) from exc
    return Toolchain(t, cc, cxx, (out.splitlines() or [""])[0].strip())
