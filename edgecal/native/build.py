"""Building libncnn and programs that link it, per target, through the cache: the ncnn sdist
(from the index or a local file) configured with our toolchain file and the deployed-app
options, installed into a cached prefix; then any cmake project (the native agent, or a test's
probe) built against that prefix.  A cached build costs a few file checks."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecal.errors import NativeBuildError
from edgecal.native.cache import build_once, cache_root, key_of, locked, tree_hash, write_text_once
from edgecal.native.sdist import (
    choose,
    download,
    file_sha256,
    index_urls,
    list_sdists,
    pkg_info_version,
    unpack_into,
)
from edgecal.native.toolchain import Toolchain, find_toolchain, ncnn_options, options_hash, target

Progress = Callable[[str], None]


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def host_ncnn_version() -> str:
    """The version of the ncnn Python package installed here (the default ncnn to build)."""
    try:
        return importlib.metadata.version("ncnn")
    except importlib.metadata.PackageNotFoundError:
        raise NativeBuildError(
            "native agent: no ncnn Python package here to take the default ncnn version from",
            hint="give --ncnn VERSION (e.g. the version your app ships)",
        ) from None


# ----------------------------------------------------------------------------- ncnn's source


@dataclass(frozen=True)
class Source:
    """Where libncnn's source comes from: the index (by version) or a local sdist."""

    version: str
    origin: str  # "index" | "sdist:<sha256>"
    sdist: Path | None = None

    @property
    def folder(self) -> Path:
        if self.sdist is None:
            return cache_root() / "src" / f"ncnn-{self.version}"
        return cache_root() / "src" / f"sdist-{self.origin.partition(':')[2][:16]}"


def local_source(sdist: Path, version: str | None) -> Source:
    """A user's sdist file: unpacked once into the cache (keyed by its sha256), its version
    from its PKG-INFO; ``version``, when given, must agree."""
    if not sdist.is_file():
        raise NativeBuildError(f"ncnn sdist {sdist}: no such file", hint="give an sdist .tar.gz")
    src = Source("", f"sdist:{file_sha256(sdist)}", sdist)
    folder = src.folder
    if not folder.is_dir():
        with locked(folder.parent / f".{folder.name}.lock"):
            if not folder.is_dir():
                unpack_into(sdist, folder)
    found = pkg_info_version(folder)
    if found is None:
        raise NativeBuildError(
            f"ncnn sdist {sdist}: no Version in its PKG-INFO", hint="give ncnn's own sdist"
        )
    if version is not None and version != found:
        raise NativeBuildError(
            f"ncnn sdist {sdist} is ncnn {found}, not {version}",
            hint="drop --ncnn or give the sdist of that version",
        )
    fetched = cache_root() / "src" / f"ncnn-{found}.sha256"
    if fetched.is_file() and fetched.read_text().split()[:1] == [src.origin[len("sdist:") :]]:
        return Source(found, "index")  # the very file the index gave: its builds are these
    return Source(found, src.origin, sdist)


def fetch_source(src: Source, progress: Progress | None = None) -> Path:
    """The unpacked source folder of ``src``, fetched from the package index once."""
    folder = src.folder
    if folder.is_dir():
        return folder
    with locked(folder.parent / f".{folder.name}.lock"):
        if folder.is_dir():
            return folder
        indexes = index_urls()
        files = []
        for i, index in enumerate(indexes):
            try:
                files += list_sdists(index)
            except NativeBuildError:
                if i == 0:  # the main index must answer; extra ones may not
                    raise
        f = choose(files, src.version)
        _say(progress, f"downloading {f.url}")
        with tempfile.TemporaryDirectory(prefix=".dl-", dir=folder.parent) as tmp:
            unpack_into(download(f, Path(tmp)), folder)
        write_text_once(folder.parent / f"{folder.name}.sha256", f"{f.sha256}  {f.filename}\n")
    return folder


# ----------------------------------------------------------------------------- cmake


def default_jobs() -> int:
    env = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


_STEP = re.compile(r"^\[\s*(?:(\d+)/(\d+)|(\d+)%)\]")


def build_percent(line: str) -> int | None:
    """How far a build is by one line of its output: ninja's ``[n/N]``, make's ``[ p%]``."""
    m = _STEP.match(line)
    if m is None:
        return None
    if m.group(3) is not None:
        return int(m.group(3))
    done, total = int(m.group(1)), int(m.group(2))
    return 100 * done // total if total else None


def _run(cmd: list[str], log: Path, what: str, progress: Progress | None = None) -> None:
    """Run ``cmd``, its output appended to ``log``; ``progress`` hears every 10 % of a
    build.  A failure is an error with the log's last lines."""
    shown = 0
    with log.open("a") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        with subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                pct = build_percent(line)
                if progress is not None and pct is not None and pct >= shown + 10:
                    shown = pct - pct % 10
                    progress(f"{what} {shown}%")
        returncode = proc.returncode
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise NativeBuildError(
            f"{what}: {Path(cmd[0]).name} failed (exit {returncode}); full log {log}; "
            "its last lines:\n" + "\n".join(tail),
            hint="see the log; a missing package is named in it",
        )


def _cmake() -> str:
    found = shutil.which("cmake")
    if found is None:
        raise NativeBuildError(
            "native agent: no cmake on PATH", hint="install Debian's cmake (apt-get install cmake)"
        )
    return found


def _generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def cmake_build(
    source: Path,
    build: Path,
    *,
    toolchain_file: Path,
    defines: Mapping[str, str],
    jobs: int,
    log: Path,
    what: str,
    install_prefix: Path | None = None,
    progress: Progress | None = None,
) -> None:
    """Configure, build (and install when ``install_prefix``) cmake project ``source``."""
    cmake = _cmake()
    cmd = [cmake, "-S", str(source), "-B", str(build), *_generator()]
    cmd.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain_file}")
    if install_prefix is not None:
        cmd.append(f"-DCMAKE_INSTALL_PREFIX={install_prefix}")
    cmd += [f"-D{k}={v}" for k, v in defines.items()]
    _run(cmd, log, f"{what}: cmake configure")
    _run([cmake, "--build", str(build), "-j", str(jobs)], log, f"{what}: build", progress)
    if install_prefix is not None:
        _run([cmake, "--install", str(build)], log, f"{what}: install")


def cmake_cache_values(build: Path, prefix: str = "NCNN_") -> dict[str, str]:
    """The ``<prefix>*`` values a configured build folder's CMakeCache.txt holds."""
    out = {}
    cache = build / "CMakeCache.txt"
    if cache.is_file():
        for line in cache.read_text(errors="replace").splitlines():
            m = re.match(rf"^({prefix}[A-Z0-9_]+):[A-Z]+=(.*)$", line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def toolchain_file(tc: Toolchain) -> Path:
    text = tc.file_text()
    name = f"{tc.target.name}-{key_of({'text': text})[:12]}.cmake"
    return write_text_once(cache_root() / "toolchains" / name, text)


# ----------------------------------------------------------------------------- libncnn


@dataclass(frozen=True)
class NcnnBuild:
    """A static libncnn installed in the cache (``prefix/lib/cmake/ncnn`` is its ncnn_DIR)."""

    prefix: Path
    target: str
    version: str
    key: str
    cached: bool
    seconds: float
    toolchain: Toolchain = field(repr=False, compare=False)

    @property
    def ncnn_dir(self) -> Path:
        return self.prefix / "lib" / "cmake" / "ncnn"

    @property
    def facts(self) -> dict[str, Any]:
        return dict(json.loads((self.prefix / "facts.json").read_text()))


def ncnn_key(src: Source, tc: Toolchain) -> tuple[str, dict[str, str]]:
    options = ncnn_options(tc.target, src.version)
    material = {
        "what": "libncnn",
        "ncnn": src.version,
        "source": src.origin,
        "target": tc.target.name,
        "toolchain": tc.identity,
        "toolchain_file": tc.file_text(),
        "options": options_hash(options),
    }
    return key_of(material), options


def ncnn_folder(src: Source, tc: Toolchain, key: str) -> Path:
    return cache_root() / "ncnn" / src.version / f"{tc.target.name}-{key[:16]}"


def resolve_source(ncnn_version: str | None, sdist: str | os.PathLike[str] | None) -> Source:
    if sdist is not None:
        return local_source(Path(os.fspath(sdist)), ncnn_version)
    return Source(ncnn_version or host_ncnn_version(), "index")


def build_ncnn(
    target_name: str,
    ncnn_version: str | None = None,
    *,
    sdist: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> NcnnBuild:
    """libncnn for ``target_name`` (x86_64|aarch64|armv7), from the cache or built (cold:
    minutes)."""
    t0 = time.monotonic()
    tc = find_toolchain(target(target_name))
    src = resolve_source(ncnn_version, sdist)
    key, options = ncnn_key(src, tc)
    final = ncnn_folder(src, tc, key)

    def make(tmp: Path) -> None:
        source = fetch_source(src, progress)
        tc_file = toolchain_file(tc)
        _say(progress, f"building libncnn {src.version} for {tc.target.name} ({tc.version_line})")
        log = final.parent / f"{final.name}.log"
        log.write_text("")
        build = tmp / "_build"
        started = time.monotonic()
        cmake_build(
            source,
            build,
            toolchain_file=tc_file,
            defines=options,
            jobs=jobs or default_jobs(),
            log=log,
            what=f"libncnn {src.version} for {tc.target.name}",
            install_prefix=tmp,
            progress=progress,
        )
        seconds = time.monotonic() - started
        effective = cmake_cache_values(build)
        shutil.rmtree(build)
        lib = tmp / "lib" / "libncnn.a"
        facts = {
            "ncnn": src.version,
            "source": src.origin,
            "target": tc.target.name,
            "toolchain": tc.identity,
            "toolchain_file": tc_file.name,
            "options": options,
            "effective": effective,
            "seconds": round(seconds, 1),
            "libncnn_bytes": lib.stat().st_size if lib.is_file() else None,
            "key": key,
        }
        (tmp / "facts.json").write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
        shutil.move(str(log), tmp / "build.log")

    built = build_once(final, make)
    seconds = time.monotonic() - t0
    return NcnnBuild(final, tc.target.name, src.version, key, not built, seconds, tc)


# ----------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class ProgramBuild:
    """A program of a cmake project linked against a cached libncnn."""

    path: Path
    target: str
    ncnn_version: str
    key: str
    cached: bool
    seconds: float  # of this call: ~0 when cached
    ncnn: NcnnBuild

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "bytes": self.path.stat().st_size,
            "target": self.target,
            "ncnn": self.ncnn_version,
            "key": self.key,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "ncnn_cached": self.ncnn.cached,
            "ncnn_prefix": str(self.ncnn.prefix),
        }


def program_key(
    ncnn: NcnnBuild, project: Path, program: str, key_defines: Mapping[str, str]
) -> str:
    return key_of(
        {
            "what": "program",
            "program": program,
            "ncnn_key": ncnn.key,
            "project": tree_hash(project),
            "defines": dict(key_defines),
        }
    )


def program_folder(ncnn: NcnnBuild, program: str, key: str) -> Path:
    return cache_root() / "programs" / program / f"{ncnn.target}-{key[:16]}"


def build_program(
    project: Path,
    program: str,
    ncnn: NcnnBuild,
    *,
    defines: Mapping[str, str] | None = None,
    key_defines: Mapping[str, str] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> ProgramBuild:
    """Executable ``program`` of cmake project ``project`` for ``ncnn``'s target, linked with
    that libncnn; cached by (libncnn's key, the project's files, ``key_defines`` -- the
    defines that matter, default all of ``defines``)."""
    t0 = time.monotonic()
    defs = dict(defines or {})
    key = program_key(ncnn, project, program, defs if key_defines is None else key_defines)
    final = program_folder(ncnn, program, key)

    def make(tmp: Path) -> None:
        _say(progress, f"building {program} for {ncnn.target}")
        log = final.parent / f"{final.name}.log"
        log.write_text("")
        build = tmp / "_build"
        started = time.monotonic()
        where = {"CMAKE_BUILD_TYPE": "Release", "ncnn_DIR": str(ncnn.ncnn_dir)}
        gomp = ncnn.toolchain.static_libgomp()
        if gomp is not None:
            where["OpenMP_gomp_LIBRARY"] = gomp
        cmake_build(
            project,
            build,
            toolchain_file=toolchain_file(ncnn.toolchain),
            defines={**where, **defs},
            jobs=jobs or default_jobs(),
            log=log,
            what=f"{program} for {ncnn.target}",
            progress=progress,
        )
        binary = build / program
        if not binary.is_file():
            raise NativeBuildError(
                f"{project}: the build made no {program}",
                hint=f"its CMakeLists.txt must define add_executable({program} ...)",
            )
        shutil.copy2(binary, tmp / program)
        unstripped = (tmp / program).stat().st_size
        strip = shutil.which(f"{ncnn.toolchain.target.triple}-strip")
        if strip is not None:  # symbols are of no use on a board: a smaller push
            _run([strip, str(tmp / program)], log, f"{program} for {ncnn.target}: strip")
        shutil.rmtree(build)
        facts = {
            "program": program,
            "target": ncnn.target,
            "ncnn": ncnn.version,
            "ncnn_key": ncnn.key,
            "defines": defs,
            "seconds": round(time.monotonic() - started, 1),
            "bytes": (tmp / program).stat().st_size,
            "bytes_unstripped": unstripped,
            "key": key,
        }
        (tmp / "facts.json").write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
        shutil.move(str(log), tmp / "build.log")

    built = build_once(final, make)
    return ProgramBuild(
        final / program,
        ncnn.target,
        ncnn.version,
        key,
        not built,
        time.monotonic() - t0,
        ncnn,
    )
