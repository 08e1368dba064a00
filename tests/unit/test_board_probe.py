"""What the board probe's answer means: problems and their fixes; the probe code itself."""

from __future__ import annotations

import subprocess
import sys

from edgecal.boards.provision import pip_download_argv, wheel_platforms
from edgecal.device.probe import BoardFacts, parse_probe, probe_code, problems


def facts(**kw: object) -> BoardFacts:
    base: dict[str, object] = {
        "python": "3.11.2",
        "numpy": "2.4.6",
        "ncnn": "1.0",
        "workdir_writable": True,
        "disk_free": 1 << 34,
        "cpu_features": ["asimd"],
        "machine": "aarch64",
        "libc": ["glibc", "2.36"],
    }
    base.update(kw)
    return BoardFacts(python=str(base["python"]), facts=base)


def test_probe_runs_here(tmp_path: object) -> None:
    res = subprocess.run(
        [sys.executable, "-c", probe_code(), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    f = parse_probe("python", res.returncode, res.stdout, res.stderr)
    assert f.python and f.get("numpy") and f.get("workdir_writable") is True
    assert f.get("cores") and f.get("mem_total")


def test_healthy_board_has_no_problem() -> None:
    assert problems(facts(), board="b", python="python3", expected_features=["asimd"]) == []


def test_problems_and_fixes() -> None:
    got = problems(
        facts(numpy=None, ncnn=None, numpy_error="No module named 'numpy'"),
        board="emu3",
        python="python3",
    )
    assert [p.what.split()[0] for p in got] == ["numpy", "ncnn"]
    assert all(p.fix == "run `edgecal board provision emu3`" for p in got)
    old = problems(BoardFacts(python="3.6.9"), board="b", python="python3")
    assert "too old" in old[0].what and ">= 3.9" in old[0].fix
    missing = problems(parse_probe("py", 127, "", "sh: 1: py: not found"), board="b", python="py")
    assert "not found" in missing[0].what
    ro = problems(
        facts(workdir_writable=False, workdir_error="Read-only file system"),
        board="b",
        python="python3",
    )
    assert "not writable" in ro[0].what
    full = problems(facts(disk_free=1 << 20), board="b", python="python3")
    assert "free" in full[0].what
    feat = problems(facts(), board="b", python="python3", expected_features=["asimdhp"])
    assert "asimdhp" in feat[0].what


def test_pip_download_for_the_board() -> None:
    assert wheel_platforms("aarch64", ["glibc", "2.36"])[:2] == [
        "manylinux_2_36_aarch64",
        "manylinux_2_35_aarch64",
    ]
    assert "manylinux_2_28_aarch64" in wheel_platforms("aarch64", ["glibc", "2.36"])
    assert "manylinux_2_28_aarch64" not in wheel_platforms("aarch64", ["glibc", "2.27"])
    argv = pip_download_argv(
        facts(), {"numpy": "2.4.6", "ncnn": "1.0"}, __import__("pathlib").Path("/w")
    )
    text = " ".join(argv)
    assert "--only-binary=:all:" in argv and "--no-deps" in argv
    assert "--python-version 311 --implementation cp --abi cp311" in text
    assert text.endswith("numpy==2.4.6 ncnn==1.0")
