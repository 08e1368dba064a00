"""A real calibration with the agent's statistics worker forced on and turned off: the same
abs-max values, histograms and table (ncnn, the local agent, shards of more samples than the
worker needs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecal.device.local import LocalDevice
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.runs.calibrun import first_shard_size, plan_shards
from edgecal.workflows.calibrate import calibrate
from edgecal_agent import binworker

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
SPEC = InputSpec(
    blob="in0", kind="image", pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48)
)


def _calibrate(monkeypatch: pytest.MonkeyPatch, worker: str) -> Any:
    monkeypatch.setenv("EDGECAL_AGENT_BIN_WORKER", worker)  # the agent inherits it
    model = load_model(SAMPLE / "model.param", SAMPLE / "model.bin")
    images = read_list(SAMPLE / "calib.txt")  # 200: shards of 32, 64, 104 samples
    plan = plan_shards(len(images), first_shard_size(len(images), 1))
    assert max(count for _, count in plan) >= binworker.WARMUP_SAMPLES + binworker.MIN_SAMPLES
    source = make_sample_source([SPEC], [images])
    with LocalDevice(agent="module") as device:
        return calibrate(model, source, [device], method="kl")


def test_the_worker_changes_no_statistic(monkeypatch: pytest.MonkeyPatch) -> None:
    on = _calibrate(monkeypatch, "1")
    off = _calibrate(monkeypatch, "0")
    assert on.histograms.stats.keys() == off.histograms.stats.keys()
    for blob, a in on.histograms.stats.items():
        b = off.histograms.stats[blob]
        assert a.absmax.tobytes() == b.absmax.tobytes(), blob
        assert a.counts.dtype == b.counts.dtype
        assert np.array_equal(a.counts, b.counts), blob
    assert on.table.records.keys() == off.table.records.keys()
    for key, value in on.table.records.items():
        assert np.array_equal(value, off.table.records[key]), key
