"""The reference set (tests/data/reference) through both agents: the same abs-max and the same
histograms from the native agent as from the Python agent, blob for blob.

The native agent links its own build of ncnn: on the digits model its convolutions differ from
the Python wheel's by a few ulp, which moves single values across a bin edge.  So each agent's
histograms are also checked exactly against ``stats`` applied to that agent's own activations
(its ``run`` outputs): the binning is the same, the activations are the ncnn build's."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecal.device.capture import Workload, run_outputs, run_shard_timed, write_shards
from edgecal.device.local import LocalDevice
from edgecal_agent import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from refcases import REFERENCE, capture_absmax, capture_histograms, load_case

CROSSCHECK = json.loads((REFERENCE / "crosscheck.json").read_text())


@pytest.fixture(scope="module")
def agents(native_agent_binary: Path) -> Iterator[tuple[LocalDevice, LocalDevice]]:
    with (
        LocalDevice(agent="module", name="python") as python,
        LocalDevice(agent="native", native_binary=native_agent_binary, name="native") as native,
    ):
        yield python, native


@pytest.mark.parametrize("name", ["digits", "npy", "multi"])
def test_both_agents_give_the_same_absmax_and_histograms(
    agents: tuple[LocalDevice, LocalDevice], name: str, tmp_path: Path
) -> None:
    case = load_case(name)
    shards = write_shards(case.samples, case.specs, tmp_path, shard_size=16)
    absmax = [
        capture_absmax(dev, case.param, case.bin, case.specs, shards, case.blobs) for dev in agents
    ]
    for blob in case.blobs:
        py, native = absmax[0][blob], absmax[1][blob]
        assert py[1] == native[1], blob  # elements per sample
        assert py[0].tobytes() == native[0].tobytes(), blob
    ranges = {
        blob: CROSSCHECK[name][layer]["absmax"]
        for layer, blob in zip(case.layers, case.blobs, strict=True)
    }
    hists = [
        capture_histograms(dev, case.param, case.bin, case.specs, shards, case.blobs, ranges)
        for dev in agents
    ]
    for dev, hist in zip(agents, hists, strict=True):
        work = Workload(case.param, case.bin, case.specs, shards, case.blobs)
        own = {b: np.zeros(stats.NUM_BINS, np.uint64) for b in case.blobs}
        for sample in run_outputs(dev, work):
            for blob in case.blobs:
                own[blob] += stats._histogram_reference(
                    stats.visited(sample[blob]), np.float32(ranges[blob])
                )
        for blob in case.blobs:
            np.testing.assert_array_equal(hist[blob], own[blob], err_msg=f"{dev.name} {blob}")
    for blob in case.blobs:
        if name == "digits":  # a few values a few ulp apart (see the module doc)
            assert hists[0][blob].sum() == hists[1][blob].sum(), blob
            moved = np.abs(hists[0][blob].astype(np.int64) - hists[1][blob].astype(np.int64))
            assert moved.sum() <= 4, blob
        else:
            np.testing.assert_array_equal(hists[0][blob], hists[1][blob], err_msg=blob)


@pytest.mark.parametrize("runtime", ["calibration", "deployed"])
@pytest.mark.parametrize("blobs", [["1"], ["3", "1"]])
def test_timed_runs_give_the_untimed_outputs_and_a_latency_per_sample(
    agents: tuple[LocalDevice, LocalDevice], runtime: str, blobs: list[str], tmp_path: Path
) -> None:
    case = load_case("npy")
    shards = write_shards(case.samples[:5], case.specs, tmp_path)
    work = Workload(case.param, case.bin, case.specs, shards, blobs, runtime, 2)
    got = []
    for dev in agents:
        outs, latency = run_shard_timed(dev, work)
        plain = list(run_outputs(dev, work))
        assert len(outs) == len(plain) == len(latency) == 5
        assert all(0 < s < 10 for s in latency)
        for a, b in zip(outs, plain, strict=True):
            assert list(a) == blobs
            for blob in blobs:
                np.testing.assert_array_equal(a[blob], b[blob])
        got.append(outs)
    for a, b in zip(*got, strict=True):
        for blob in blobs:
            assert a[blob].dtype == b[blob].dtype == np.float32
            np.testing.assert_array_equal(a[blob], b[blob])  # npy: the same ncnn results
