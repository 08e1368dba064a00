"""Run directories of ``edgecal calibrate``: one process at a time, only this run's parts, and
interruptions (SIGTERM like SIGINT) that leave no temporary folder and a hint that works.

Real processes, real signals: SIGTERM mid-calibration, SIGSTOP to hold a run in the middle
while a second calibration tries the same run directory."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
MODEL = [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")]
PRE = [
    "--pixel",
    "RGB",
    "--mean",
    "127.5,127.5,127.5",
    "--norm",
    "0.00784314,0.00784314,0.00784314",
    "--shape",
    "48,48",
]
CALIB = str(SAMPLE / "calib.txt")  # 200 images: long enough to be interrupted
EDGECAL = [sys.executable, "-m", "edgecal.cli.main"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("ref") / "ref.table"
    assert main(["-q", "calibrate", *MODEL, "--images", CALIB, *PRE, "--out", str(out)]) == 0
    return out.read_bytes()


def _env(tmpdir: Path) -> dict[str, str]:
    tmpdir.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmpdir)}


def _wait_for_parts(proc: subprocess.Popen[bytes], pattern: str, base: Path) -> None:
    """Until the run has written a shard result (the run is in the middle)."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if any(base.glob(pattern)):
            return
        time.sleep(0.02)
    raise AssertionError(f"no shard result appeared (rc {proc.returncode})")


@contextlib.contextmanager
def _running(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a background job of a non-interactive shell ignores SIGINT: Ctrl-C as at a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.communicate()


def _lines(err: bytes) -> list[str]:
    return [x for x in err.decode().splitlines() if x.strip()]


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_calibration_exits_143_and_removes_its_temporary_folders(
    tmp_path: Path,
) -> None:
    tmpdir = tmp_path / "tmp"
    out = tmp_path / "t.table"
    cmd = [*EDGECAL, "-q", "calibrate", *MODEL, "--images", CALIB, *PRE, "--out", str(out)]
    with _running(cmd, _env(tmpdir)) as proc:
        _wait_for_parts(proc, "edgecal-run-*/run/parts/absmax/*.npz", tmpdir)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
    assert proc.returncode == 143, err.decode()
    assert _lines(err) == ["edgecal: terminated"]
    assert sorted(p.name for p in tmpdir.iterdir()) == []  # no edgecal-* folder left
    assert not out.exists()


def _emptied(folder: Path, within: float = 10.0) -> list[str]:
    """What is left in ``folder`` once its removals (a detached ``rm -rf``) had time to run."""
    deadline = time.monotonic() + within
    while True:
        left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("sig", "moment"),
    [
        (signal.SIGINT, "edgecal-run-*/run/parts/absmax/*.npz"),  # pass 1 answering
        (signal.SIGTERM, "edgecal-run-*/run/parts/absmax/*.npz"),
        (signal.SIGINT, "edgecal-run-*/run/parts/histogram/*.npz"),  # pass 2 answering
        (signal.SIGTERM, "edgecal-run-*/run/parts/histogram/*.npz"),
        (signal.SIGINT, "edgecal-tune-*/scoring/*"),  # scoring the variants
    ],
    ids=["int-absmax", "term-absmax", "int-histogram", "term-histogram", "int-scoring"],
)
def test_interrupted_tune_leaves_no_temporary_folder(
    tmp_path: Path, sig: signal.Signals, moment: str
) -> None:
    """Ctrl-C or SIGTERM while tune calibrates or scores: exit 130/143 and TMPDIR empty (a
    fleet thread answering its shard after the signal wrote its part file into the temporary
    run folder again, after the folder had been removed)."""
    tmpdir = tmp_path / "tmp"
    images = tmp_path / "many.txt"  # 2000 images: many shards in flight at every moment
    lines = [str(SAMPLE / x) for x in Path(CALIB).read_text().split()]
    images.write_text("".join(f"{x}\n" for x in lines * 10))
    cmd = [*EDGECAL, "-q", "tune", *MODEL, "--images", str(images), *PRE, "--max-drop", "0"]
    cmd += ["--out-dir", str(tmp_path / "out"), "--try-methods", "kl,aciq,eq"]
    with _running(cmd, _env(tmpdir)) as proc:
        _wait_for_parts(proc, moment, tmpdir)
        proc.send_signal(sig)
        _, err = proc.communicate()
    assert proc.returncode == 128 + sig, err.decode()
    assert _lines(err)[-1] in ("edgecal: interrupted", "edgecal: terminated")
    assert _emptied(tmpdir) == []
    assert not (tmp_path / "out").exists()


def test_sigterm_with_a_run_dir_says_how_to_resume_and_the_hint_works(
    tmp_path: Path, reference: bytes
) -> None:
    tmpdir, run, out = tmp_path / "tmp", tmp_path / "run", tmp_path / "t.table"
    cmd = [
        *EDGECAL,
        "-q",
        "calibrate",
        *MODEL,
        "--images",
        CALIB,
        *PRE,
        "--out",
        str(out),
        "--run-dir",
        str(run),
    ]
    with _running(cmd, _env(tmpdir)) as proc:
        _wait_for_parts(proc, "parts/absmax/*.npz", run)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
    assert proc.returncode == 143, err.decode()
    (line,) = _lines(err)
    assert line.startswith("edgecal: terminated (finish with `edgecal calibrate --resume ")
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    hint = re.search(r"`(edgecal calibrate --resume [^`]+)`", line)
    assert hint is not None
    argv = shlex.split(hint.group(1))
    done = subprocess.run(
        [*EDGECAL, "-q", *argv[1:]],
        cwd=tmp_path,
        env=_env(tmpdir),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert out.read_bytes() == reference


# ----------------------------------------------------------------------------- one at a time


def test_a_second_calibration_on_a_busy_run_dir_is_refused_naming_the_holder(
    tmp_path: Path, reference: bytes
) -> None:
    tmpdir, run, out = tmp_path / "tmp", tmp_path / "run", tmp_path / "t.table"
    env = _env(tmpdir)
    first = [
        *EDGECAL,
        "-q",
        "calibrate",
        *MODEL,
        "--images",
        CALIB,
        *PRE,
        "--out",
        str(out),
        "--run-dir",
        str(run),
    ]
    with _running(first, env) as proc:
        _wait_for_parts(proc, "parts/absmax/*.npz", run)
        proc.send_signal(signal.SIGSTOP)  # held in the middle of its run
        try:
            other_mean = [*PRE[:2], "--mean", "100,100,100", *PRE[4:]]
            for second in (
                [*EDGECAL, "-q", "calibrate", "--resume", str(run)],
                [
                    *EDGECAL,
                    "-q",
                    "calibrate",
                    *MODEL,
                    "--images",
                    CALIB,
                    *other_mean,
                    "--out",
                    str(tmp_path / "other.table"),
                    "--run-dir",
                    str(run),
                ],
            ):
                r = subprocess.run(second, cwd=ROOT, env=env, capture_output=True, check=False)
                err = r.stderr.decode()
                assert r.returncode == 1, err
                assert (
                    f"{run}: the run directory is in use by another edgecal calibrate "
                    f"(pid {proc.pid})" in err
                )
                assert "Traceback" not in err
        finally:
            proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.read_bytes() == reference
    assert not (tmp_path / "other.table").exists()


# ----------------------------------------------------------------------------- parts


def _small_list(tmp_path: Path) -> Path:
    lines = (SAMPLE / "calib.txt").read_text().split()[:8]
    lst = tmp_path / "small.txt"
    lst.write_text("".join(f"{SAMPLE / x}\n" for x in lines))
    return lst


def test_parts_of_another_run_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lst = _small_list(tmp_path)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    out_a, out_b = tmp_path / "a.table", tmp_path / "b.table"
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(lst),
                *PRE,
                "--out",
                str(out_a),
                "--run-dir",
                str(run_a),
            ]
        )
        == 0
    )
    other = [*PRE[:2], "--mean", "100,100,100", *PRE[4:]]
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(lst),
                *other,
                "--out",
                str(out_b),
                "--run-dir",
                str(run_b),
            ]
        )
        == 0
    )
    capsys.readouterr()
    out_b.unlink()
    for p in (run_b / "parts" / "histogram").iterdir():  # b's results replaced by a's
        shutil.copy(run_a / "parts" / "histogram" / p.name, p)
    assert main(["-q", "calibrate", "--resume", str(run_b)]) == 1
    err = capsys.readouterr().err
    assert "a shard result of another run" in err
    assert str(run_b / "parts" / "histogram") in err
    assert not out_b.exists()


@pytest.mark.parametrize("stray", ["notes.npz", "00099.npz", "1.npz"])
def test_stray_files_in_parts_are_a_clear_error(
    tmp_path: Path, stray: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lst = _small_list(tmp_path)
    run, out = tmp_path / "run", tmp_path / "t.table"
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(lst),
                *PRE,
                "--out",
                str(out),
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    good = out.read_bytes()
    out.unlink()
    (run / "parts" / "absmax" / stray).write_bytes(b"not a part")
    capsys.readouterr()
    assert main(["-q", "calibrate", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert str(run / "parts" / "absmax" / stray) in err
    assert "not a shard result of this run" in err
    assert not out.exists()
    # the fix it gives works: move the file away, resume
    m = re.search(r"`(edgecal calibrate --resume [^`]+)`", err)
    assert m is not None
    (run / "parts" / "absmax" / stray).unlink()
    assert main(["-q", *shlex.split(m.group(1))[1:]]) == 0
    assert out.read_bytes() == good


def test_a_bad_image_does_not_suggest_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (SAMPLE / "calib.txt").read_text().split()[:8]
    bad = tmp_path / "bad.png"
    bad.write_bytes((SAMPLE / lines[0]).read_bytes()[:300])  # cut short
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{SAMPLE / x}\n" for x in lines[1:]) + f"{bad}\n")
    run = tmp_path / "run"
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(lst),
                *PRE,
                "--out",
                str(tmp_path / "t.table"),
                "--run-dir",
                str(run),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "--resume" not in err
    assert "start again with a new --run-dir" in err


def test_simultaneous_starts_on_one_run_dir_one_runs_the_others_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lst = _small_list(tmp_path)
    means = ["127.5,127.5,127.5", "100,100,100", "90,90,90", "80,80,80"]
    run = tmp_path / "run"
    env = _env(tmp_path / "tmp")
    procs = [
        subprocess.Popen(
            [
                *EDGECAL,
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(lst),
                *PRE[:2],
                "--mean",
                m,
                *PRE[4:],
                "--out",
                str(tmp_path / f"{k}.table"),
                "--run-dir",
                str(run),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k, m in enumerate(means)
    ]
    results = [(p, *p.communicate()) for p in procs]
    winners = [k for k, (p, _, _) in enumerate(results) if p.returncode == 0]
    assert len(winners) == 1, [(p.returncode, e.decode()) for p, _, e in results]
    for k, (p, _, err) in enumerate(results):
        if k != winners[0]:
            text = err.decode()
            assert p.returncode == 1 and str(run) in text, text
            assert (
                "in use by another edgecal calibrate (pid" in text
                or "already holds a calibration run" in text
            ), text
            assert not (tmp_path / f"{k}.table").exists()
    # the winner's table is the one of its own options
    ref = tmp_path / "ref.table"
    k = winners[0]
    assert (
        main(
            [
                "-q",
                "calibrate",
                *MODEL,
                "--images",
                str(lst),
                *PRE[:2],
                "--mean",
                means[k],
                *PRE[4:],
                "--out",
                str(ref),
            ]
        )
        == 0
    )
    assert (tmp_path / f"{k}.table").read_bytes() == ref.read_bytes()
