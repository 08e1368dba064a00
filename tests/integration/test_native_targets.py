"""libncnn built for every target (x86_64, aarch64, armv7) through the native build's cache,
and programs linked statically against it that run: the test probe
(tests/data/native_probe/) and the native agent (edgecal_agent/native/), the ARM ones under
Debian's qemu-user-static.

Cold, each target's libncnn takes minutes: EDGECAL_NATIVE_TEST_CACHE=DIR points the tests at a
cache that `make native-agents` (or an earlier run) filled, else they use the usual cache
(``${EDGECAL_CACHE:-~/.cache/edgecal}``).  Warm, the whole file takes seconds.  Without a
target's compiler, cmake or qemu the test of that target skips, and fails under CI=true
(`make test-deps` installs them)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgecal_agent
from edgecal.cli.main import main
from edgecal.errors import NativeBuildError
from edgecal.native import TARGET_NAMES, build_agent, build_ncnn, build_program, find_agent
from edgecal.native.build import program_folder, program_key
from edgecal.native.toolchain import TARGETS
from tests.conftest import IN_CI, ROOT

pytestmark = pytest.mark.slow

PROBE = ROOT / "tests" / "data" / "native_probe"
AGENT_SOURCE = ROOT / "edgecal_agent" / "native" / "CMakeLists.txt"
ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "armv7": 40}


@pytest.fixture(scope="module", autouse=True)
def native_cache() -> Iterator[None]:
    given = os.environ.get("EDGECAL_NATIVE_TEST_CACHE")
    old = os.environ.get("EDGECAL_CACHE")
    if given:
        os.environ["EDGECAL_CACHE"] = given
    yield
    if old is None:
        os.environ.pop("EDGECAL_CACHE", None)
    else:
        os.environ["EDGECAL_CACHE"] = old


def needs(target: str) -> None:
    t = TARGETS[target]
    missing = [p for p in (t.cxx, "cmake", t.qemu) if p is not None and shutil.which(p) is None]
    if missing:
        why = f"no {', '.join(missing)} (make test-deps installs them)"
        if IN_CI:
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)


def elf_facts(path: Path) -> tuple[int, bool]:
    """(e_machine, has a PT_INTERP program header: dynamically linked) of ELF file ``path``."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"
    wide = data[4] == 2
    machine = struct.unpack_from("<H", data, 0x12)[0]
    if wide:
        phoff = struct.unpack_from("<Q", data, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    else:
        phoff = struct.unpack_from("<I", data, 0x1C)[0]
        phentsize, phnum = struct.unpack_from("<HH", data, 0x2A)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return machine, 3 in types  # PT_INTERP


def run(binary: Path, target: str, *args: str) -> str:
    qemu = TARGETS[target].qemu
    cmd = [*([qemu] if qemu else []), str(binary), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_libncnn_builds_and_a_static_program_runs(target: str) -> None:
    needs(target)
    ncnn = build_ncnn(target)
    facts = ncnn.facts
    assert facts["options"]["NCNN_RUNTIME_CPU"] == "ON" == facts["effective"]["NCNN_RUNTIME_CPU"]
    assert facts["effective"]["NCNN_OPENMP"] == "ON"
    assert facts["toolchain"]["cxx"].endswith(TARGETS[target].cxx)
    probe = build_program(PROBE, "native_probe", ncnn)
    machine, dynamic = elf_facts(probe.path)
    assert (machine, dynamic) == (ELF_MACHINE[target], False)
    out = dict(line.split("=", 1) for line in run(probe.path, target).splitlines())
    assert out["ncnn"] == ncnn.version  # the version pinned, not the sdist's build date
    assert float(out["relu_sum"]) == 512.0
    if target == "x86_64":
        assert out["avx"] in ("0", "1")
    else:
        assert out["neon"] == "1"
    if target == "armv7":
        assert out["vfpv4"] == "1"
        assert facts["effective"]["NCNN_VFPV4"] == "ON"
    if target == "aarch64":  # the ARMv8.2+ kernels are built, chosen at run time (qemu's
        # default CPU has fp16 arithmetic)
        assert out["asimdhp"] == "1"
        for opt in ("NCNN_ARM82", "NCNN_ARM82DOT", "NCNN_ARM84BF16", "NCNN_ARM84I8MM"):
            assert facts["effective"][opt] == "ON", opt
    again = build_ncnn(target)
    assert again.cached and again.prefix == ncnn.prefix
    assert build_program(PROBE, "native_probe", again).cached
    print(
        f"\n{target}: libncnn {ncnn.version} {'cached' if ncnn.cached else 'built'} "
        f"({facts['seconds']} s cold, libncnn.a {facts['libncnn_bytes']} B); probe "
        f"{probe.path.stat().st_size} B; cached lookup {again.seconds:.3f} s; probe says "
        + " ".join(f"{k}={v}" for k, v in out.items())
    )


@pytest.mark.skipif(not AGENT_SOURCE.is_file(), reason="no edgecal_agent/native/ yet")
@pytest.mark.parametrize("target", TARGET_NAMES)
def test_the_native_agent_builds_runs_and_is_found_in_the_cache(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    needs(target)
    agent = build_agent(target)
    assert (elf_facts(agent.path)[0], elf_facts(agent.path)[1]) == (ELF_MACHINE[target], False)
    assert edgecal_agent.__version__ in run(agent.path, target, "--version")
    found = find_agent(target)
    assert found is not None and found.path == agent.path and found.key == agent.key
    assert build_agent(target).cached
    assert main(["agent", "build", "--target", target, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["path"] == str(agent.path) and doc["cached"] and doc["ncnn_cached"]
    assert (doc["target"], doc["bytes"]) == (target, agent.path.stat().st_size)


def test_a_failed_program_build_leaves_nothing_half_made(tmp_path: Path) -> None:
    needs("x86_64")
    ncnn = build_ncnn("x86_64")
    project = tmp_path / "broken"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(broken CXX)\n"
        'message(FATAL_ERROR "broken on purpose")\n'
    )
    with pytest.raises(NativeBuildError) as exc:
        build_program(project, "broken", ncnn)
    assert "broken for x86_64: cmake configure: cmake failed" in exc.value.message
    assert "broken on purpose" in exc.value.message  # the log's last lines
    folder = program_folder(ncnn, "broken", program_key(ncnn, project, "broken", {}))
    left = sorted(p.name for p in folder.parent.iterdir())
    assert left == [f".{folder.name}.lock", f"{folder.name}.log"]  # only the log, to read
    shutil.rmtree(folder.parent)
