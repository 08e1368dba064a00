"""The shell probe (boards without Python) and the choice of agent: pure parsing and rules, and
the probe script itself under the shells a board may have (dash, bash, busybox/toybox-like)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecal.device.probe import (
    BoardFacts,
    choose_agent,
    native_problems,
    native_target,
    parse_shell_probe,
    shell_probe_argv,
)

SHELLS = [s for s in ("sh", "dash", "bash") if shutil.which(s)]


@pytest.mark.parametrize("shell", SHELLS)
def test_the_probe_runs_under_each_shell(shell: str, tmp_path: Path) -> None:
    argv = shell_probe_argv(str(tmp_path))
    assert argv[:2] == ["sh", "-c"]
    res = subprocess.run([shell, *argv[1:]], capture_output=True, text=True, check=True)
    f = parse_shell_probe(res.returncode, res.stdout, res.stderr)
    assert f.python is None and f.facts["shell_probe"] is True
    assert f.get("machine") == os.uname().machine
    assert f.get("cores") == len(os.sched_getaffinity(0)) or f.get("cores") == os.cpu_count()
    assert f.get("workdir_writable") is True and f.get("workdir_error") is None
    assert isinstance(f.get("disk_free"), int) and f.get("disk_free") > 0
    assert isinstance(f.get("mem_total"), int) and f.get("mem_total") > 1 << 20
    assert f.get("cpu_features")  # /proc/cpuinfo's flags
    assert list(tmp_path.iterdir()) == []  # the write test left nothing behind


def test_a_missing_workdir_is_reported_with_the_free_space_of_its_parent(tmp_path: Path) -> None:
    where = tmp_path / "not" / "yet"
    res = subprocess.run(shell_probe_argv(str(where)), capture_output=True, text=True, check=True)
    f = parse_shell_probe(res.returncode, res.stdout, res.stderr)
    assert f.get("workdir_exists") is False and f.get("workdir_writable") is False
    assert f.get("workdir_error") == "does not exist"
    assert isinstance(f.get("disk_free"), int)
    assert not where.exists()


ARMV7 = """EDGECAL-SHPROBE 1
== machine
armv7l
== cores
4
== cpuinfo
processor	: 0
model name	: ARMv7 Processor rev 5 (v7l)
Features	: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm
CPU part	: 0xc07
== meminfo
MemTotal:         949448 kB
MemAvailable:     712000 kB
== df
/dev/root         15000000  3000000  11000000  22% /
== workdir
not writable
== python
== end
"""


def test_an_armv7_board_without_python() -> None:
    f = parse_shell_probe(0, ARMV7, "")
    assert f.get("machine") == "armv7l" and native_target("armv7l") == "armv7"
    assert f.get("cores") == 4 and "neon" in f.get("cpu_features")
    assert f.get("cpu_model") == "ARMv7 Processor rev 5 (v7l), ARM part 0xc07"
    assert f.get("mem_total") == 949448 * 1024 and f.get("disk_free") == 11000000 * 1024
    assert f.get("python_path") is None
    found = native_problems(f, board="v7", expected_features=["neon", "asimdhp"])
    whats = [p.what for p in found]
    assert any("not writable (not writable)" in w for w in whats)
    assert any("asimdhp" in w for w in whats)
    assert all(p.fix for p in found)


def test_garbage_is_no_facts_and_one_problem() -> None:
    f = parse_shell_probe(127, "", "sh: not found\n")
    assert not f.facts and "sh: not found" in str(f.python_error)
    (p,) = native_problems(f, board="b")
    assert "cannot be probed" in p.what and "sh" in p.fix


def test_an_unknown_machine_has_no_native_agent() -> None:
    f = parse_shell_probe(0, ARMV7.replace("armv7l", "mips"), "")
    assert native_target("mips") is None
    assert any("no native agent for machine mips" in p.what for p in native_problems(f, board="b"))


@pytest.mark.parametrize(
    "machine,target",
    [("aarch64", "aarch64"), ("arm64", "aarch64"), ("armv8l", "armv7"), ("x86_64", "x86_64")],
)
def test_native_targets(machine: str, target: str) -> None:
    assert native_target(machine) == target


def py(**kw: object) -> BoardFacts:
    base: dict[str, object] = {"python": "3.11.2", "numpy": "2.4.6", "ncnn": "1.0.20261020"}
    base.update(kw)
    return BoardFacts(python=str(base["python"]), facts=base)


def test_auto_takes_python_only_with_numpy_and_ncnn() -> None:
    assert choose_agent("auto", py()).kind == "python"
    assert "ncnn 1.0.20261020" in choose_agent("auto", py()).reason
    for facts, words in (
        (py(ncnn=None), "lacks ncnn"),
        (py(numpy=None, ncnn=None), "lacks numpy and ncnn"),
        (py(python="3.7.3"), "older than 3.9"),
        (BoardFacts(python_error="`python3` not found"), "python3` not found"),
        (None, "no Python"),
    ):
        choice = choose_agent("auto", facts)
        assert choice.kind == "native" and words in choice.reason, choice


def test_an_explicit_setting_wins() -> None:
    assert choose_agent("python", None).kind == "python"
    assert choose_agent("native", py()).kind == "native"
