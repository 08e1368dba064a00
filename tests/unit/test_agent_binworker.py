"""The forked statistics worker gives exactly the statistics of the agent alone."""

from __future__ import annotations

import os
import signal
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecal_agent import binworker, jobs, stats
from edgecal_agent.errors import JobError

N_BLOBS = 5


def _blob(rng: np.random.Generator, i: int, b: int) -> np.ndarray:
    """Sample ``i``'s blob ``b``: ReLU-like zeros, -0.0, a 4-D strided view, a sample (40)
    larger than the first (so it does not fit a slot), NaN and inf in blob 4 now and then."""
    n = 300 + 50 * b + (4000 if i == 40 else 0)
    x = rng.standard_normal(n).astype(np.float32) * np.float32(1 + b)
    x[x < -0.5] = 0.0
    x[::17] = -0.0
    if b == 4 and i % 13 == 5:
        x[3] = np.nan
        x[7] = np.inf if i % 2 else -np.inf
    if b == 3:
        return x[: (n // 4) * 4].reshape(2, 2, -1)[:, ::2]  # a non-contiguous view
    return x


class _FakeModel:
    """``for_each_visited`` of a fake net: the blobs of :func:`_blob`, read-only."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def for_each_visited(
        self,
        sample: Any,
        inputs: Any,
        blobs: Any,
        fn: Callable[[int, np.ndarray], None],
        where: str,
    ) -> None:
        i = int(sample[0])
        rng = np.random.default_rng([self.seed, i])
        for b in range(len(blobs)):
            v = _blob(rng, i, b)
            v.flags.writeable = False
            fn(b, v)


class _Samples:
    def __init__(self, n: int) -> None:
        self.total = n

    def __iter__(self) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
        for i in range(self.total):
            yield i, (np.array(i),)


def _ctx() -> Any:
    return types.SimpleNamespace(progress=lambda done, total: None, timing_s={})


def _params() -> Any:
    return types.SimpleNamespace(
        inputs=(), blobs=[f"b{b}" for b in range(N_BLOBS)], runtime="calibration", threads=4
    )


class _Counting(binworker.BinWorker):
    handed_total: ClassVar[list[int]] = []

    def close(self) -> None:
        _Counting.handed_total.append(self.handed)
        super().close()


def _run(
    monkeypatch: pytest.MonkeyPatch, worker: str, make: Callable[[], Any], n: int = 90
) -> tuple[Any, list[int]]:
    monkeypatch.setenv("EDGECAL_AGENT_BIN_WORKER", worker)
    monkeypatch.setattr(binworker, "BinWorker", _Counting)
    _Counting.handed_total = []
    seen = [0] * N_BLOBS

    def note(b: int, count: int) -> None:
        seen[b] = count

    reducer = make()
    model: Any = _FakeModel(7)  # duck-typed stand-ins for the net and the shards
    samples: Any = _Samples(n)
    jobs._run_stats(_ctx(), model, samples, _params(), reducer, make, note)
    return reducer, seen


def test_worker_absmax_equals_the_agent_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    alone, seen_alone = _run(monkeypatch, "0", lambda: stats.AbsMaxSet(N_BLOBS))
    assert _Counting.handed_total == []
    split, seen_split = _run(monkeypatch, "1", lambda: stats.AbsMaxSet(N_BLOBS))
    assert _Counting.handed_total and _Counting.handed_total[0] > 0
    assert seen_split == seen_alone
    values_a, bad_a = alone.state()
    values_s, bad_s = split.state()
    assert bad_a == bad_s == [False, False, False, False, True]
    assert np.array_equal(np.float32(values_a), np.float32(values_s))
    # and both are the literal abs max of every element (NaN ignored, inf kept)
    literal = np.zeros(N_BLOBS, dtype=np.float32)
    for i in range(90):
        rng = np.random.default_rng([7, i])
        for b in range(N_BLOBS):
            a = np.abs(_blob(rng, i, b))
            literal[b] = max(literal[b], np.fmax.reduce(a.reshape(-1)))
    assert np.array_equal(literal, np.float32(values_s))


@pytest.mark.parametrize("slot_max", [binworker.SLOT_MAX_FLOATS, 1000])
def test_worker_histograms_equal_the_agent_alone(
    monkeypatch: pytest.MonkeyPatch, slot_max: int
) -> None:
    """Also with slots too small for a whole sample: the blobs that do not fit are reduced
    by the agent."""
    monkeypatch.setattr(binworker, "SLOT_MAX_FLOATS", slot_max)
    ranges = [np.float32(v) for v in (2.5, 3.0, 1.25, 4.0, 0.5)]  # values above absmax too
    alone, _ = _run(monkeypatch, "0", lambda: stats.HistogramSet(ranges))
    split, _ = _run(monkeypatch, "1", lambda: stats.HistogramSet(ranges))
    assert _Counting.handed_total and _Counting.handed_total[0] > 0
    for a, s in zip(alone.state(), split.state(), strict=True):
        assert a.dtype == s.dtype == np.uint64
        assert np.array_equal(a, s)
    literal = [np.zeros(stats.NUM_BINS, dtype=np.uint64) for _ in ranges]
    for i in range(90):
        rng = np.random.default_rng([7, i])
        for b, r in enumerate(ranges):
            literal[b] += stats._histogram_reference(_blob(rng, i, b), r)
    for want, got in zip(literal, split.state(), strict=True):
        assert np.array_equal(want, got)


def test_few_samples_run_in_the_agent_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    _run(monkeypatch, "1", lambda: stats.AbsMaxSet(N_BLOBS), n=binworker.MIN_SAMPLES)
    assert _Counting.handed_total == []


class _FailsInWorker(stats.AbsMaxSet):
    def __init__(self, parent: int) -> None:
        super().__init__(N_BLOBS)
        self.parent = parent

    def add(self, b: int, values: np.ndarray) -> None:
        if os.getpid() != self.parent:
            raise ValueError("broken reducer")
        super().add(b, values)


def test_a_failing_worker_fails_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    with pytest.raises(JobError, match="statistics worker process failed: ValueError: broken"):
        _run(monkeypatch, "1", lambda: _FailsInWorker(me))


class _DiesInWorker(stats.AbsMaxSet):
    def __init__(self, parent: int) -> None:
        super().__init__(N_BLOBS)
        self.parent = parent

    def add(self, b: int, values: np.ndarray) -> None:
        if os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        super().add(b, values)


def test_a_killed_worker_fails_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    with pytest.raises(JobError, match=r"worker process \(pid \d+\) ended unexpectedly"):
        _run(monkeypatch, "1", lambda: _DiesInWorker(me))


def test_no_worker_without_a_core_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binworker.CpuShare, "alone", lambda self: False)
    _run(monkeypatch, "", lambda: stats.AbsMaxSet(N_BLOBS))
    assert _Counting.handed_total == []


def test_the_agent_stops_sharing_once_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that starts, then a busy device: the agent reduces the rest alone."""
    alone, _ = _run(monkeypatch, "0", lambda: stats.AbsMaxSet(N_BLOBS))
    answers = iter([True])
    monkeypatch.setattr(binworker.CpuShare, "alone", lambda self: next(answers, False))
    monkeypatch.setattr(binworker, "spare_core", lambda threads: True)
    split, _ = _run(monkeypatch, "", lambda: stats.AbsMaxSet(N_BLOBS))
    assert 0 < _Counting.handed_total[0] <= binworker.CHECK_SAMPLES
    assert alone.state() == split.state()


@settings(deadline=None, max_examples=100)
@given(
    st.lists(
        hnp.arrays(
            np.float32,
            st.integers(0, 50),
            elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
        ),
        max_size=6,
    ),
    st.sampled_from([0, 1, 20, 1 << 30]),
)
def test_absmax_in_place_and_staged_agree(parts: list[np.ndarray], direct: int) -> None:
    """Blobs from ``direct`` floats up are reduced in place, smaller ones staged: the value
    (bit for bit, -0.0 included) and the non-finite flag are the literal ones either way."""
    old = stats.DIRECT_FLOATS
    stats.DIRECT_FLOATS = direct
    try:
        acc = stats.AbsMaxAccumulator(stats._Scratch(), stage=32)
        for p in parts:
            acc.add(p[::-1])  # a strided view
        value = acc.value
    finally:
        stats.DIRECT_FLOATS = old
    want = np.float32(0.0)
    for p in parts:
        if p.size:
            m = np.fmax.reduce(np.abs(p))
            if m > want:
                want = np.float32(m)
    assert value.tobytes() == want.tobytes()
    assert acc.nonfinite == any(not np.isfinite(p).all() for p in parts)


def test_a_spare_core_is_one_ncnn_does_not_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(binworker, "_busy_until", [0.0])
    monkeypatch.delenv("EDGECAL_AGENT_BIN_WORKER", raising=False)
    assert binworker.spare_core(1)
    assert not binworker.spare_core(2)  # deployed runtime, ncnn on both cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert not binworker.spare_core(1)
    monkeypatch.setenv("EDGECAL_AGENT_BIN_WORKER", "1")
    assert binworker.spare_core(1)
    monkeypatch.setenv("EDGECAL_AGENT_BIN_WORKER", "0")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert not binworker.spare_core(1)


def test_a_busy_verdict_holds_for_later_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(binworker, "_busy_until", [0.0])
    monkeypatch.delenv("EDGECAL_AGENT_BIN_WORKER", raising=False)
    clock = binworker.CpuShare()
    clock.wall -= 10.0  # 10 s of wall time with (almost) no CPU time: another process ran
    assert not clock.alone()
    assert not binworker.spare_core(1)
    monkeypatch.setattr(binworker.time, "monotonic", lambda: binworker._busy_until[0] + 1)
    assert binworker.spare_core(1)  # BUSY_HOLD_S later
