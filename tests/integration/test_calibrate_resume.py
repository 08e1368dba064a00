"""Run directories, resume and lost workers on the local device (the emulated boards' real
link cuts are in tests/boards/test_board_faults.py).

Faults here are real: the agent processes are killed with SIGKILL, the host process too."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgecal.cli.main import main
from edgecal.device.local import LocalDevice
from edgecal.fleet.scheduler import FleetExhausted, RetryPolicy
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.workflows.calibrate import calibrate

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
CALIB = str(SAMPLE / "calib.txt")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The table of one uninterrupted single-worker run."""
    out = tmp_path_factory.mktemp("ref") / "ref.table"
    assert main(["-q", "calibrate", *MODEL, "--images", CALIB, *PRE, "--out", str(out)]) == 0
    return out.read_bytes()


def _json(capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(capsys.readouterr().out)


def test_resume_redoes_only_the_missing_shards(
    reference: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, out = tmp_path / "run", tmp_path / "t.table"
    assert (
        main(
            [
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
                "--threads",
                "2",
            ]
        )
        == 0
    )
    assert out.read_bytes() == reference  # two workers: the same table
    capsys.readouterr()
    gone = [
        run / "parts" / "absmax" / "00002.npz",
        run / "parts" / "histogram" / "00001.npz",
        run / "parts" / "histogram" / "00003.npz",
    ]
    for p in gone:
        p.unlink()
    out.unlink()
    assert main(["-q", "calibrate", "--resume", str(run), "--json"]) == 0
    doc = _json(capsys)
    assert out.read_bytes() == reference
    assert sum(a["shards"] for a in doc["fleet"]) == len(gone)
    assert doc["run_dir"] == str(run)
    assert all(p.exists() for p in gone)
    commands = json.loads((run / "run.json").read_text())["commands"]
    assert len(commands) == 2 and "--resume" in commands[1]["argv"]


def test_resume_after_the_host_process_was_killed(reference: bytes, tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "t.table"
    cmd = [
        sys.executable,
        "-m",
        "edgecal.cli.main",
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
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = run / "parts" / "absmax"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if parts.is_dir() and any(parts.glob("*.npz")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not out.exists()
    done_before = len(list(parts.glob("*.npz")))
    assert done_before >= 1
    assert main(["-q", "calibrate", "--resume", str(run)]) == 0
    assert out.read_bytes() == reference


def _sample_source():  # type: ignore[no-untyped-def]
    model = load_model(SAMPLE / "model.param", SAMPLE / "model.bin")
    spec = InputSpec(
        blob=model.input_blobs[0],
        kind="image",
        pixel="RGB",
        mean=(127.5,) * 3,
        norm=(0.00784314,) * 3,
        shape=(48, 48),
    )
    return model, make_sample_source([spec], [read_list(SAMPLE / "calib.txt")])


def _kill_agent_when_busy(dev: LocalDevice, stop: threading.Event) -> None:
    """SIGKILL the agent whenever it is running a shard's job (a job directory with a request
    and no response yet), until ``stop``: an idle agent's death would go unnoticed (the next
    job starts a new one)."""
    jobs = dev.workdir / "jobs"
    while not stop.is_set():
        pid = dev.agent_pid
        busy = jobs.is_dir() and any(
            not p.name.endswith("hello")
            and (p / "request.json").exists()
            and not (p / "response.json").exists()
            for p in jobs.iterdir()
        )
        if pid is not None and busy:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def test_a_lost_worker_hands_its_shards_to_the_other(reference: bytes) -> None:
    model, source = _sample_source()
    said: list[str] = []
    stop = threading.Event()
    with LocalDevice() as a, LocalDevice() as b:
        a.hello()
        killer = threading.Thread(target=_kill_agent_when_busy, args=(a, stop))
        killer.start()
        try:
            run = calibrate(model, source, [a, b], retry=RetryPolicy(attempts=1), say=said.append)
        finally:
            stop.set()
            killer.join()
    from edgecal.calib.table import render_table

    assert render_table(run.table).encode() == reference
    lost = [x for x in run.fleet if x["lost"]]
    assert len(lost) == 1 and "SIGKILL" in lost[0]["lost"]
    other = next(x for x in run.fleet if not x["lost"])
    assert other["reassigned"] >= 1
    assert sum(x["samples"] for x in run.fleet) == 2 * source.n_samples
    assert any("given up" in s for s in said)


def test_no_worker_left_stops_resumably(reference: bytes, tmp_path: Path) -> None:
    from edgecal.calib.table import render_table
    from edgecal.runs.calibrun import CalibRun, build_manifest

    model, source = _sample_source()
    manifest = build_manifest(
        model, source, method="kl", runtime="calibration", threads=1, histograms=True, options={}
    )
    CalibRun.create(tmp_path / "run", manifest, ["edgecal"]).close()  # unlocked for the next
    stop = threading.Event()
    with LocalDevice() as a:
        a.hello()
        killer = threading.Thread(target=_kill_agent_when_busy, args=(a, stop))
        killer.start()
        first = CalibRun.open(tmp_path / "run", ["edgecal"])
        try:
            with pytest.raises(FleetExhausted, match="every board was lost"):
                calibrate(
                    model, source, a, retry=RetryPolicy(attempts=2, backoff_s=(0.1,)), run=first
                )
        finally:
            first.close()
            stop.set()
            killer.join()
    with LocalDevice() as b:
        done = CalibRun.open(tmp_path / "run", ["edgecal"])
        before = len(done.done("absmax")) + len(done.done("histogram"))
        run = calibrate(model, source, b, run=done)
    assert render_table(run.table).encode() == reference
    total = 2 * len(manifest.shards)
    assert sum(x["shards"] for x in run.fleet) == total - before


def test_resume_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "calibrate", "--resume", str(tmp_path), *MODEL]) == 2
    assert "do not give MODEL" in capsys.readouterr().err
    assert main(["-q", "calibrate", "--resume", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "not a calibration run directory (no such folder)" in err
    # the fix names calibrate's own resumable folder, not another command's
    assert "--run-dir of an interrupted `edgecal calibrate` run" in err
    assert "edgecal tune" not in err and "edgecal validate" not in err
    assert main(["-q", "calibrate", "--resume", str(tmp_path)]) == 1
    assert "not a calibration run directory (no run.json in it)" in capsys.readouterr().err


def test_boards_of_different_profiles_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text(
        'schema = 1\n[boards.pi4]\nhost = "192.0.2.1"\nprofile = "raspberry-pi-4"\n'
        '[boards.pi5]\nhost = "192.0.2.2"\nprofile = "raspberry-pi-5"\n'
        '[groups]\nshelf = ["pi4", "pi5"]\n'
    )
    args = [
        "-q",
        "calibrate",
        *MODEL,
        "--images",
        CALIB,
        *PRE,
        "--out",
        str(tmp_path / "t.table"),
        "--boards",
        str(boards),
    ]
    for fleet in (["--device", "pi4", "--device", "pi5"], ["--group", "shelf"]):
        assert main([*args, *fleet]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "different profiles" in err[0] and "--mixed-boards" in err[0]
    assert not (tmp_path / "t.table").exists()
    assert main([*args, "--group", "nope"]) == 1
    assert "no group 'nope'" in capsys.readouterr().err
