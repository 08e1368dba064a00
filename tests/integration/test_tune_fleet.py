"""tune's scoring over several devices (issue 12: use the device's cores, and a fleet's boards):
the shards of every run are spread over the devices and put back in image order, so a score is
the one device's (latency aside); a device whose agent dies mid-tune is recovered, and one
that is gone is given up while the others finish; ``edgecal tune --threads 2 --runtime
calibration`` on this machine scores on two agents and writes what one agent writes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgecal.calib.table import CalibrationTable, parse_table
from edgecal.device.local import LocalDevice
from edgecal.fleet.scheduler import RetryPolicy
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source
from edgecal.inputs.spec import InputSpec
from edgecal.quality.metrics import Score
from edgecal.workflows.scoring import RankingScorer, Scorer, shard_size
from edgecal.workflows.validate import Reference
from tests.integration.test_tune_int8_digits import run_tune

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
SPEC = InputSpec(
    blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,), shape=(32, 32)
)
N = 120


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[int]]:
    d = tmp_path_factory.mktemp("digits-test")
    data = np.load(DIGITS / "test.npz")
    paths, rows = [], ["file,label"]
    for i, (x, y) in enumerate(zip(data["x"][:N], data["y"][:N], strict=True)):
        paths.append(d / f"t{i:03d}.png")
        Image.fromarray(x).save(paths[-1])
        rows.append(f"t{i:03d}.png,{int(y)}")
    (d.parent / "labels.csv").write_text("\n".join(rows) + "\n")
    return d, paths, [int(y) for y in data["y"][:N]]


def same_score(a: Score, b: Score) -> None:
    """Every figure but the latency (each image is timed where it ran)."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("latency_ms", None)
    assert da == db


@contextlib.contextmanager
def one_and_two(
    images: tuple[Path, list[Path], list[int]], tmp_path: Path, **options: Any
) -> Iterator[tuple[Scorer, Scorer, CalibrationTable]]:
    """A scorer on one local agent and one over two more (``options``: its fleet's), the same
    images and labels; and the digits' KL table to score."""
    _, paths, labels = images
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    source = make_sample_source([SPEC], [paths])
    table = parse_table((DIGITS / "kl.table").read_text())
    with LocalDevice() as one, LocalDevice() as a, LocalDevice() as b:
        alone = Scorer(Reference(one, model, source, labels, "calibration", 1), tmp_path / "1")
        both = Scorer(
            Reference(a, model, source, labels, "calibration", 1),
            tmp_path / "2",
            devices=[a, b],
            **options,
        )
        yield alone, both, table


def test_shard_size_leaves_no_device_idle() -> None:
    assert shard_size(1000, 1) == 256
    assert shard_size(64, 2) == 32
    assert shard_size(1000, 2) == 256
    assert shard_size(3, 4) == 1


def test_scores_over_two_agents_are_one_agents(
    images: tuple[Path, list[Path], list[int]], tmp_path: Path
) -> None:
    with one_and_two(images, tmp_path) as (alone, both, table):
        assert both.fleet is not None and len(both.shards) == 2
        np.testing.assert_array_equal(alone.ref, both.ref)  # the fp32 outputs, image order
        for keep in ([], ["convrelu_1"]):
            same_score(alone.score(table, keep), both.score(table, keep))
            np.testing.assert_array_equal(alone.last_outputs, both.last_outputs)
        accounts = both.fleet.accounts
        assert all(acct.shards >= 3 for acct in accounts.values()), accounts  # fp32 + 2 each
        # the ranking images, spread too: the subset's shards on both agents
        sub_alone = RankingScorer(alone, tmp_path / "r1", 40).scorer()
        sub_both = RankingScorer(both, tmp_path / "r2", 40).scorer()
        assert len(sub_both.shards) == 2 and len(sub_alone.shards) == 1
        same_score(sub_alone.score(table), sub_both.score(table))
        fp32_secs, int8_secs = both.latencies(*both.write_variant(table, []))
        assert len(fp32_secs) == len(int8_secs) == N
        # each variant's files removed from both agents once scored
        for dev in both.devices:
            assert isinstance(dev, LocalDevice)
            held = {p.name for p in (dev.workdir / "files").iterdir()}
            assert len(held) <= 1 + len(both.shards) + len(sub_both.shards) + 2


def kill_mid_job(device: LocalDevice, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL ``device``'s agent once while it runs a job (a request without a response)."""
    jobs = device.workdir / "jobs"
    while not stop.is_set() and not killed:
        for req in jobs.glob("*/request.json") if jobs.is_dir() else []:
            if not (req.parent / "response.json").exists() and device.agent_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(device.agent_pid, signal.SIGKILL)
                    killed.append(device.agent_pid)
                return
        time.sleep(0.001)


def test_an_agent_killed_mid_tune_is_retried_and_a_lost_one_given_up(
    images: tuple[Path, list[Path], list[int]], tmp_path: Path
) -> None:
    said: list[str] = []
    retry = RetryPolicy(attempts=3, backoff_s=(0.0,))
    with one_and_two(images, tmp_path, retry=retry, say=said.append) as (alone, both, table):
        expected = alone.score(table)
        b = both.devices[1]
        assert both.fleet is not None and isinstance(b, LocalDevice)
        killed: list[int] = []
        for _ in range(20):  # until the kill meets a job of b's (each run is short)
            stop = threading.Event()
            killer = threading.Thread(target=kill_mid_job, args=(b, stop, killed))
            killer.start()
            try:
                same_score(expected, both.score(table))
            finally:
                stop.set()
                killer.join()
            if killed:
                break
        assert killed, "the agent never ran a job while watched"
        acct = both.fleet.accounts["local#2"]
        assert acct.retried + acct.collected >= 1 and acct.lost is None, (acct, said)
        # b's work directory gone for good: b is given up, a scores every shard
        b.close()
        same_score(expected, both.score(table))
        assert both.fleet.lost == {"local#2"}, said
        assert any("given up" in line for line in said), said


def test_tune_on_two_local_agents_writes_what_one_writes(
    held_out: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """digits tuned to --max-drop 0 on its 200 test images (test_tune_int8_digits' run) in the
    calibration runtime, with one and with two agents."""
    docs, said = {}, {}
    for workers in ("1", "2"):
        out = tmp_path / f"tune{workers}"
        docs[workers] = run_tune(held_out, out, "--runtime", "calibration", "--threads", workers)
        said[workers] = capsys.readouterr().out
    assert "scored on" not in said["1"]
    assert "scored on 2 devices: local#1 " in said["2"], said["2"]
    assert "pushed to the devices' work directories" in said["2"]
    one, two = docs["1"], docs["2"]
    assert "devices" not in one
    assert [d["board"] for d in two["devices"]] == ["local#1", "local#2"]
    assert all(d["shards"] > 0 and d["lost"] is None for d in two["devices"])
    # the fp32 reference, every variant and the final latency runs: every image each
    assert sum(d["samples"] for d in two["devices"]) >= (two["evaluations"] + 2) * 200
    for key in ("target_met", "int8_layers", "layer_methods", "evaluations", "start_method"):
        assert one[key] == two[key], key
    assert [(s["action"], s["layer"], s["method"], s["kept"]) for s in one["steps"]] == [
        (s["action"], s["layer"], s["method"], s["kept"]) for s in two["steps"]
    ]
    assert (tmp_path / "tune1" / "calibration.table").read_bytes() == (
        tmp_path / "tune2" / "calibration.table"
    ).read_bytes()


def test_tune_refuses_boards_of_two_profiles_before_any_work(tmp_path: Path) -> None:
    """Scores and latencies of two kinds of board would mix: one line, no --mixed-boards."""
    from edgecal.api.tune import tune
    from edgecal.errors import UsageError
    from edgecal.inputs.spec import ImageInput

    boards = tmp_path / "boards.toml"
    boards.write_text(
        "schema = 1\n"
        '[boards.pi4]\nhost = "192.0.2.1"\nuser = "pi"\nprofile = "generic-aarch64"\n'
        '[boards.nano]\nhost = "192.0.2.2"\nuser = "pi"\nprofile = "jetson-nano"\n'
    )
    with pytest.raises(UsageError) as e:
        tune(
            (DIGITS / "model.param", DIGITS / "model.bin"),
            [ImageInput(DIGITS / "images.txt", "GRAY", (0.0,), (0.00392157,), (32, 32))],
            max_drop=1,
            out_dir=tmp_path / "out",
            table=DIGITS / "kl.table",
            devices=["pi4", "nano"],
            boards=boards,
        )
    assert "different profiles (pi4: generic-aarch64, nano: jetson-nano)" in e.value.message
    assert e.value.hint == "tune each kind of board on its own"
    assert not (tmp_path / "out").exists()


def test_with_the_first_device_given_up_eq_and_validation_go_to_the_next(
    images: tuple[Path, list[Path], list[int]], tmp_path: Path
) -> None:
    """What tune runs on one device (an EQ alternative, the final validation) goes to the
    first device still alive: here the second, once the first's work directory is gone."""
    from edgecal.runs.histfile import HistogramSet
    from edgecal.workflows.alternatives import Alternatives
    from edgecal.workflows.calibrate import calibrate

    said: list[str] = []
    retry = RetryPolicy(attempts=2, backoff_s=(0.0,))
    with one_and_two(images, tmp_path, retry=retry, say=said.append) as (alone, both, table):
        a, b = both.devices
        assert both.first_alive() is a
        assert isinstance(a, LocalDevice)
        a.close()
        same_score(alone.score(table), both.score(table))
        assert both.fleet is not None and both.fleet.lost == {"local#1"}, said
        assert both.first_alive() is b
        model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
        source = make_sample_source([SPEC], [images[1][:20]])
        hs: HistogramSet = calibrate(model, source, [b], method="kl").histograms
        alts = Alternatives(model, hs, source, tmp_path / "alt", both.first_alive)
        (tmp_path / "alt").mkdir()
        got = alts(model.calibrated_layers[0].name, "eq")
        assert got is not None and b.bytes_pushed > 0
