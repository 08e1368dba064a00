"""EQ's per-layer search spread over several devices (``refine_eq`` on a fleet): every layer is
searched exactly once, by any device, the table does not depend on how many devices searched
nor in which order they answered, and a device lost mid-search gives its layer to another.

Scripted fake devices (no agent, no ncnn): a device answers an ``eq_layer`` job with similarity
sums that are a fixed function of the job's own inputs (its candidates), as the real search is
a function of the layer alone.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecal.calib.table import CalibrationTable, weight_key
from edgecal.device.base import DEFAULT_JOB_TIMEOUT_S, Device, JobResult, Progress, Submission
from edgecal.errors import AgentError, TransportError
from edgecal.fleet.scheduler import RetryPolicy
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.workflows.calibrate import refine_eq
from edgecal_agent.messages import EQ_SIMILARITY
from edgecal_agent.npzio import load_npz, npz_bytes

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
GRAY32 = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))


def fake_sums(candidates: np.ndarray) -> np.ndarray:
    """Similarity sums depending only on the layer's candidates (one row per scale): row ``j``
    peaks at a candidate that depends on the row and the layer's values."""
    steps = candidates.shape[1]
    rows = np.arange(candidates.shape[0])
    peak = (rows * 7 + int(np.float32(candidates[0, 0]).view(np.uint32))) % steps
    k = np.arange(steps)
    return 1.0 - np.abs(k[None, :] - peak[:, None]) / steps


def pick_like_agent(sums: np.ndarray) -> int | None:
    best, best_val = None, 0.0
    for k, v in enumerate(sums.tolist()):
        if best_val < v:
            best_val, best = v, k
    return best


@dataclass(eq=False)
class FakeAgent(Device):
    """Answers ``eq_layer`` jobs; ``cut_at``: its run_job calls (1-based) that lose the link;
    ``dead_from``: from this call on the device is gone; ``hold``: seconds each job takes."""

    name: str
    out_dir: Path
    cut_at: frozenset[int] = frozenset()
    dead_from: int | None = None
    hold: float = 0.0
    layers: list[str] = field(default_factory=list)  # the bottoms of the layers it answered
    _runs: int = 0

    def hello(self) -> dict[str, Any]:
        return {"agent": "fake"}

    def push(self, local: Path) -> str:
        return f"files/{local.name}"

    def discard(self, locals_: Sequence[Path]) -> None:
        raise AssertionError("EQ's distribution discards nothing")

    def run_job(
        self,
        op: str,
        params: Mapping[str, Any],
        *,
        timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
        progress: Progress | None = None,
        files: Mapping[str, bytes] | None = None,
        job_id: str | None = None,
    ) -> JobResult:
        assert op == "eq_layer" and files is not None and job_id is not None
        self._runs += 1
        if self._runs in self.cut_at or (
            self.dead_from is not None and self._runs >= self.dead_from
        ):
            raise TransportError(f"{self.name}: connection reset by peer during job {job_id}")
        time.sleep(self.hold)
        with load_npz(io.BytesIO(files["candidates.npz"]), "candidates.npz") as npz:
            cand = np.asarray(npz["candidates"], dtype=np.float32)
            scales = np.append(npz["weight_scales"], npz["bottom_scale"]).astype(np.float32)
        sim = fake_sums(cand)
        for j in range(cand.shape[0]):
            k = pick_like_agent(sim[j])
            if k is not None:
                scales[j] = cand[j, k]
        path = self.out_dir / f"{job_id}.npz"
        path.write_bytes(
            npz_bytes(
                {
                    "sim": sim,
                    "weight_scales": scales[:-1],
                    "bottom_scale": scales[-1:],
                    "sim_start": np.float64(1.0),
                    "sim_end": np.float64(2.0),
                }
            )
        )
        self.layers.append(str(params["bottom"]))
        return JobResult(
            {"op": op, "job_id": job_id, "ok": True, "result": {"similarity": EQ_SIMILARITY}},
            {"eq.npz": path},
        )

    def _submit(self, job: Submission) -> None:
        raise AssertionError("not used: run_job above is the fake")

    def collect_job(self, job_id: str) -> JobResult | None:
        return None

    def recover(self) -> None:
        if self.dead_from is not None and self._runs >= self.dead_from:
            raise TransportError(f"{self.name}: ssh: no route to host")

    @property
    def bytes_pushed(self) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def digits() -> tuple[Any, Any, CalibrationTable]:
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    source = make_sample_source([GRAY32], [read_list(DIGITS / "images.txt")])
    records: dict[str, np.ndarray] = {}
    for i, layer in enumerate(model.calibrated_layers):
        # one weight scale per output channel, per group of a depthwise layer
        n = int(layer.params[7 if layer.type == "ConvolutionDepthWise" else 0].value)
        records[weight_key(layer.name)] = np.linspace(50.0 + i, 90.0 + i, n, dtype=np.float32)
        records[layer.name] = np.array([10.0 + i], dtype=np.float32)
    return model, source, CalibrationTable(records=records)


def run(digits: Any, devices: list[FakeAgent], **kw: Any) -> tuple[CalibrationTable, list[Any]]:
    model, source, table = digits
    return refine_eq(
        model,
        table,
        source,
        [],
        devices,
        progress=lambda what, total: lambda done, total: None,
        retry=RetryPolicy(attempts=2, backoff_s=()),
        **kw,
    )


def same_tables(a: CalibrationTable, b: CalibrationTable) -> bool:
    return a.records.keys() == b.records.keys() and all(
        a.records[k].tobytes() == b.records[k].tobytes() for k in a.records
    )


def test_every_layer_once_and_the_same_table_on_one_or_three_devices(
    digits: Any, tmp_path: Path
) -> None:
    model = digits[0]
    one = FakeAgent("one", tmp_path)
    t1, r1 = run(digits, [one])
    three = [FakeAgent(f"b{i}", tmp_path, hold=0.02 * (3 - i)) for i in range(3)]
    t3, r3 = run(digits, three)
    bottoms = sorted(layer.bottoms[0] for layer in model.calibrated_layers)
    assert sorted(one.layers) == bottoms
    assert sorted(b for d in three for b in d.layers) == bottoms  # each layer exactly once
    assert sum(1 for d in three if d.layers) >= 2  # the slow first device did not do it all
    assert same_tables(t1, t3)
    assert [r.layer for r in r3] == [layer.name for layer in model.calibrated_layers]
    assert [vars(r) for r in r3] == [vars(r) for r in r1]
    # the search changed scales (the fake peaks are not at the starting scales)
    assert not same_tables(t1, digits[2])


def test_a_device_lost_mid_search_gives_its_layer_to_another(digits: Any, tmp_path: Path) -> None:
    t1, _ = run(digits, [FakeAgent("one", tmp_path)])
    said: list[str] = []
    lost = FakeAgent("lost", tmp_path, dead_from=2, hold=0.01)
    other = FakeAgent("other", tmp_path, hold=0.01)
    t2, _ = run(digits, [lost, other], say=said.append)
    assert same_tables(t1, t2)
    assert len(lost.layers) == 1  # its first layer; the second went to the other device
    assert len(other.layers) == len(digits[0].calibrated_layers) - 1
    assert any("lost: given up" in s for s in said)


def test_a_cut_link_is_retried_on_the_same_device(digits: Any, tmp_path: Path) -> None:
    t1, _ = run(digits, [FakeAgent("one", tmp_path)])
    flaky = FakeAgent("flaky", tmp_path, cut_at=frozenset({1}))
    t2, _ = run(digits, [flaky])
    assert same_tables(t1, t2)
    assert len(flaky.layers) == len(digits[0].calibrated_layers)


def test_a_job_error_stops_the_search(digits: Any, tmp_path: Path) -> None:
    class Broken(FakeAgent):
        def run_job(self, op: str, params: Mapping[str, Any], **kw: Any) -> JobResult:
            raise AgentError("b: probe failed", kind="BadRequest")

    with pytest.raises(AgentError, match="probe failed"):
        run(digits, [Broken("b", tmp_path), FakeAgent("ok", tmp_path)])


def test_calibrate_gives_eq_one_agent_per_core_only_by_default_on_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgecal.api import calibrate as api
    from edgecal.calib.methods import Method
    from edgecal.fleet.prepare import Devices

    monkeypatch.setattr(api, "usable_cores", lambda: 4)
    here, board = Devices.of(None), Devices.of(["local", "user@example.org"])
    one = [object()]
    assert api._eq_extra_workers(here, Method.EQ, "calibration", None, one) == 3
    assert api._eq_extra_workers(here, Method.EQ, "calibration", None, one * 4) == 0
    assert api._eq_extra_workers(here, Method.EQ, "calibration", 2, one * 2) == 0  # --threads
    assert api._eq_extra_workers(here, Method.KL, "calibration", None, one) == 0
    assert api._eq_extra_workers(here, Method.EQ, "deployed", None, one) == 0
    assert api._eq_extra_workers(board, Method.EQ, "calibration", None, one * 2) == 0


@pytest.mark.parametrize("first_only", [False, True])
def test_a_mixed_fleet_searches_eq_on_its_first_board_only(
    first_only: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boards of different profiles choose differently: with ``eq_first_board_only`` (the API
    sets it for a fleet of several profiles) EQ's layers go to the first board alone, so the
    table does not depend on which board took which layer."""
    from edgecal.device.local import LocalDevice
    from edgecal.workflows import calibrate as wf

    seen: list[list[Device]] = []

    def record(model: Any, table: Any, source: Any, shards: Any, devices: Any, **kw: Any) -> Any:
        seen.append(list(devices))
        return table, []

    monkeypatch.setattr(wf, "refine_eq", record)
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    images = read_list(DIGITS / "images.txt")[:4]
    source = make_sample_source([GRAY32], [images])
    with LocalDevice() as a, LocalDevice() as b:
        wf.calibrate(model, source, [a, b], method="eq", eq_first_board_only=first_only)
        assert seen == [[a] if first_only else [a, b]]
