"""The command line says what it does by default: --help states every default, a missing
--pixel/--mean/--norm names the values used, quantize needs a table (or says it has none),
and --threads beyond the cores is capped with one line, not that many agents."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecal.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
MODEL = [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
# options whose default is a behaviour, not a value argparse holds: their help must say it
IMPLICIT = ("--mean", "--norm", "--pixel", "--shape", "--threads", "--device", "--boards")


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


def help_blocks(text: str) -> dict[str, str]:
    """Option string -> its help text (white space collapsed), from ``--help`` output."""
    blocks: dict[str, str] = {}
    opts: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            opts = [part.split()[0] for part in m.group(1).split(", ")]
            for o in opts:
                blocks[o] = m.group(2) or ""
        elif opts and line.startswith("    "):
            for o in opts:
                blocks[o] += " " + line.strip()
        else:
            opts = []
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_help_of_every_command_states_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    missing = []
    for path, sub in commands(build_parser()):
        capsys.readouterr()
        assert main([*path, "--help"]) == 0
        blocks = help_blocks(capsys.readouterr().out)
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            d = action.default
            text = next((blocks[o] for o in action.option_strings if o in blocks), None)
            assert text is not None, f"{' '.join(path)} {action.option_strings} not in --help"
            valued = not (d is None or d is False or (isinstance(d, list) and not d))
            if valued:
                shown = ",".join(map(str, d)) if isinstance(d, list) else str(d)
                if "default" not in text or shown not in text:
                    missing.append(f"{' '.join(path)} {action.option_strings[0]} ({shown})")
            elif action.option_strings[0] in IMPLICIT and "default" not in text:
                missing.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert not missing, "--help does not state the default of: " + "; ".join(missing)


def test_quantize_needs_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = [str(DIGITS / "model.param"), str(DIGITS / "model.bin")]
    out = [str(tmp_path / "q.param"), str(tmp_path / "q.bin")]
    assert main(["quantize", *m, *out]) == 2
    err = capsys.readouterr().err
    assert "needs --table" in err and "--no-table" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
    # --no-table is ncnn2int8 without a table: the same model, byte for byte
    assert main(["quantize", *m, *out, "--no-table"]) == 0
    assert "0 layer(s) int8" in capsys.readouterr().out
    ref = [str(tmp_path / "n.param"), str(tmp_path / "n.bin")]
    assert main(["ncnn2int8", *m, *ref]) == 0
    assert Path(out[0]).read_bytes() == Path(ref[0]).read_bytes()
    assert Path(out[1]).read_bytes() == Path(ref[1]).read_bytes()
    assert main(["quantize", *m, *out, "--no-table", "--table", str(DIGITS / "kl.table")]) == 2


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in sorted(p.name for p in (SAMPLE / "calib").iterdir())[:4]:
        shutil.copy(SAMPLE / "calib" / name, folder / name)
    return folder


def test_missing_preprocessing_options_say_the_defaults_used(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "t.table")
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(images),
                "--shape",
                "48,48",
                "--mean",
                "127.5,127.5,127.5",
                "--out",
                out,
            ]
        )
        == 0
    )
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("edgecal: no ")]
    assert lines == [
        "edgecal: no --pixel/--norm for image input in0: using --pixel BGR "
        "--norm 1,1,1 (give them as the app preprocesses its input)"
    ]
    assert (
        main(["-q", "calibrate", *MODEL, "--images", str(images), "--shape", "48,48", "--out", out])
        == 0
    )
    assert (
        "no --pixel/--mean/--norm for image input in0: using --pixel BGR --mean 0,0,0 "
        "--norm 1,1,1" in capsys.readouterr().err
    )
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(images),
                "--shape",
                "48,48",
                "--pixel",
                "RGB",
                "--mean",
                "127.5,127.5,127.5",
                "--norm",
                "0.0078,0.0078,0.0078",
                "--out",
                out,
            ]
        )
        == 0
    )
    assert "edgecal: no " not in capsys.readouterr().err


def test_threads_beyond_the_cores_are_capped_with_one_line(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cores = len(os.sched_getaffinity(0))  # the cores this process may run on
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(images),
                "--shape",
                "48,48",
                "--pixel",
                "RGB",
                "--mean",
                "127.5,127.5,127.5",
                "--norm",
                "0.0078,0.0078,0.0078",
                "--threads",
                str(cores + 3),
                "--out",
                str(tmp_path / "t.table"),
                "--json",
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert len(json.loads(cap.out)["fleet"]) == cores  # agents started: one per core
    warned = [x for x in cap.err.splitlines() if f"--threads {cores + 3}" in x]
    assert len(warned) == 1 and f"{cores} core(s)" in warned[0], cap.err
    # the ncnn2table drop-in's thread= likewise
    assert (
        main(
            [
                "-q",
                "ncnn2table",
                *MODEL,
                str(images),
                str(tmp_path / "n.table"),
                "mean=[127.5,127.5,127.5]",
                "norm=[0.0078,0.0078,0.0078]",
                "shape=[48,48,3]",
                "pixel=RGB",
                f"thread={cores + 3}",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"warning: thread={cores + 3} is more than the {cores} core(s)" in err, err


def test_calibrate_into_a_pipe_prints_progress_lines(images: Path, tmp_path: Path) -> None:
    """A CI log (stderr a pipe) shows how far each pass is, in plain lines."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_TERMINAL")
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecal",
            "calibrate",
            *MODEL,
            "--images",
            str(images),
            "--shape",
            "48,48",
            "--pixel",
            "RGB",
            "--mean",
            "127.5,127.5,127.5",
            "--norm",
            "0.0078,0.0078,0.0078",
            "--out",
            str(tmp_path / "t.table"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    for task in ("count the absmax", "build histogram"):
        assert any(x.startswith(f"edgecal: {task} 4/4 (100 %, ") for x in lines), proc.stderr
    assert not any("━" in x for x in lines)
