"""The arithmetic of EQ's fast search (edgecal_agent.eqsearch), against plain Python loops."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecal.calib.eq import pick_best, pick_pruned
from edgecal.device.capture import Workload, eq_search_layer
from edgecal.errors import ProtocolError
from edgecal_agent import eqsearch
from edgecal_agent.messages import EQ_PRUNE_SLACK, EQ_SIMILARITY
from edgecal_agent.npzio import npz_bytes

F32 = st.floats(-1e3, 1e3, width=32, allow_subnormal=False)


def _cos_sum(dots: np.ndarray, qqs: np.ndarray, ref_norm: np.ndarray) -> float:
    """Per sample the units summed in order, the cosine, the cosines summed in order."""
    total = 0.0
    for d_row, q_row, rn in zip(dots.tolist(), qqs.tolist(), ref_norm.tolist(), strict=True):
        d = q = 0.0
        for a, b in zip(d_row, q_row, strict=True):
            d += a
            q += b
        total += d / math.sqrt(rn) / math.sqrt(q) if rn > 0.0 and q > 0.0 else math.nan
    return total


@st.composite
def terms(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    steps = draw(st.integers(1, 5))
    samples = draw(st.integers(1, 4))
    rows = draw(st.integers(1, 4))
    units = rows * draw(st.integers(1, 3))
    shape = (steps + 1, samples, units)
    dots = draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10, width=32)))
    qqs = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 10, width=32)))
    ref_norm = draw(hnp.arrays(np.float64, (samples,), elements=st.floats(0, 100, width=32)))
    return dots, qqs, ref_norm, rows


@given(terms())
def test_greedy_weights_is_the_per_candidate_arithmetic(
    t: tuple[np.ndarray, np.ndarray, np.ndarray, int],
) -> None:
    """Row j's sum at candidate k: row j's units at k, every other unit at its current choice
    (index ``steps``: the starting scales), the first strict maximum above 0 kept."""
    dots, qqs, ref_norm, rows = t
    steps, units = dots.shape[0] - 1, dots.shape[2]
    per = units // rows
    sim, picks, end_d, end_q = eqsearch.greedy_weights(dots, qqs, ref_norm, rows)
    choice = [steps] * units
    for j in range(rows):
        want = []
        for k in range(steps):
            trial = [k if j * per <= u < (j + 1) * per else c for u, c in enumerate(choice)]
            d = np.stack([dots[c, :, u] for u, c in enumerate(trial)], axis=1)
            q = np.stack([qqs[c, :, u] for u, c in enumerate(trial)], axis=1)
            want.append(_cos_sum(d, q, ref_norm))
        assert np.array_equal(sim[j], np.array(want), equal_nan=True)
        best = pick_best(np.array(want))
        assert picks[j] == best
        if best is not None:
            choice[j * per : (j + 1) * per] = [best] * per
    assert np.array_equal(end_d, np.stack([dots[c, :, u] for u, c in enumerate(choice)], axis=1))
    assert np.array_equal(end_q, np.stack([qqs[c, :, u] for u, c in enumerate(choice)], axis=1))


@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 300),
    st.integers(0, 2**32 - 1),
)
def test_unit_terms_depend_on_the_unit_alone(
    samples: int, units: int, values: int, seed: int
) -> None:
    """A unit's terms are the same whether one unit, one sample or all are reduced at once."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 1, (samples, units, values)).astype(np.float32).astype(np.float64)
    q = rng.normal(0, 1, (samples, units, values)).astype(np.float32)
    dot, qq = eqsearch.unit_terms(ref, q)
    d32, q32 = eqsearch.unit_terms(ref.astype(np.float32), q)  # float32 fp32 refs: the same
    assert np.array_equal(d32, dot) and np.array_equal(q32, qq)
    for s in range(samples):
        d1, q1 = eqsearch.unit_terms(ref[s], q[s], np.empty((2, units, values)))
        assert np.array_equal(d1, dot[s]) and np.array_equal(q1, qq[s])
        for u in range(units):
            d2, q2 = eqsearch.unit_terms(ref[s, u].copy(), q[s, u].copy())
            assert d2 == dot[s, u] and q2 == qq[s, u]
    # the products are exact: the terms are within float64 rounding of the exact sums
    exact = [
        math.fsum(a * b for a, b in zip(r, x, strict=True))
        for r, x in zip(
            ref.reshape(-1, values).tolist(),
            q.astype(np.float64).reshape(-1, values).tolist(),
            strict=True,
        )
    ]
    np.testing.assert_allclose(dot.reshape(-1), exact, rtol=1e-12, atol=1e-12)


@given(
    hnp.arrays(
        np.float64, st.integers(0, 8), elements=st.floats(allow_infinity=False) | st.just(math.nan)
    )
)
def test_pick_is_pick_best(sums: np.ndarray) -> None:
    assert eqsearch.pick(sums) == pick_best(sums)


def test_unit_rows_layouts() -> None:
    a3 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert eqsearch.unit_rows(a3).shape == (2, 12)
    a2 = np.arange(6, dtype=np.float32).reshape(2, 3)  # InnerProduct on rows: units are columns
    assert (
        np.array_equal(eqsearch.unit_rows(a2), a2.T) and eqsearch.unit_rows(a2).flags.c_contiguous
    )
    assert eqsearch.unit_rows(np.arange(5, dtype=np.float32)).shape == (5, 1)
    a4 = np.arange(48, dtype=np.float32).reshape(2, 2, 3, 4)  # first depth slice, as ncnn reads
    assert np.array_equal(eqsearch.unit_rows(a4), a4[:, 0].reshape(2, 12))


def test_unit_rows_into_writes_unit_rows_widened() -> None:
    """The search widens the probe's output straight into its float64 chunk: the same values
    as ``unit_rows``, for every layout, padded ncnn Mats (channel stride > h*w) included."""
    import ncnn

    rng = np.random.default_rng(3)
    mat = ncnn.Mat(5, 3, 7)  # w=5 h=3 c=7: 15 values a channel, stored 16 apart
    np.asarray(mat)[...] = rng.normal(size=(7, 3, 5)).astype(np.float32)
    outs = [
        np.asarray(mat),
        rng.normal(size=(2, 3)).astype(np.float32),
        rng.normal(size=5).astype(np.float32),
        rng.normal(size=(2, 2, 3, 4)).astype(np.float32),
    ]
    assert not outs[0].flags.c_contiguous
    for out in outs:
        want = eqsearch.unit_rows(out).astype(np.float64)
        dst = np.full(want.shape, np.nan)
        eqsearch.unit_rows_into(out, dst)
        assert np.array_equal(dst, want)
    ref = rng.normal(size=(4, 6))
    q = rng.normal(size=(4, 6)).astype(np.float32)
    got = eqsearch.unit_terms64(ref, q.astype(np.float64), np.empty((4, 6)))
    want_terms = eqsearch.unit_terms(ref, q)
    assert all(np.array_equal(g, w) for g, w in zip(got, want_terms, strict=True))


def test_similarity_is_nan_for_a_zero_norm() -> None:
    dots = np.array([[1.0, 2.0], [0.5, 0.5]])
    qqs = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert math.isnan(float(eqsearch.similarity(dots, qqs, np.array([4.0, 1.0]))))
    assert float(eqsearch.similarity(dots[:1], qqs[:1], np.array([4.0]))) == 3.0 / 2.0 / math.sqrt(
        2.0
    )


def test_the_host_refuses_eq_sums_of_another_definition(tmp_path: Path) -> None:
    """An agent that does not name this similarity (an older one, float32 whole-blob sums) is a
    protocol error, not a silent change of EQ's choices."""

    class OldAgent:
        name = "old"

        def push_many(self, paths: list[Path]) -> list[str]:
            return [f"files/{path.name}" for path in paths]

        def run_job(self, op: str, params: object, **kw: object) -> SimpleNamespace:
            return SimpleNamespace(result={"n_samples": 1}, artifacts={}, response={})

    f = tmp_path / "m.param"
    f.write_text("x")
    cands = np.ones((2, 3), np.float32)
    with pytest.raises(ProtocolError, match="similarity sums of kind None"):
        eq_search_layer(
            OldAgent(),  # type: ignore[arg-type]
            Workload(f, f, (), []),
            "a",
            "b",
            "param",
            b"",
            cands,
            np.ones(1, np.float32),
            np.float32(1),
        )


# -- exact pruning of the bottom scale's candidates ----------------------------------------------
#: per-sample cosines: a few values (ties between candidates are common), NaN, and any in [-1, 1]
COSINES = st.sampled_from([1.0, 0.999, 0.99, 0.5, 0.0, -0.25, math.nan]) | st.floats(-1.0, 1.0)


@st.composite
def cosine_rows(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    """Per-sample cosines ``(candidates, samples)`` and an order to try the candidates in."""
    steps = draw(st.integers(1, 8))
    n = draw(st.integers(1, 6))
    cos = draw(hnp.arrays(np.float64, (steps, n), elements=COSINES))
    if draw(st.booleans()):  # whole candidates equal: ties of complete sums
        cos[draw(st.integers(0, steps - 1))] = cos[draw(st.integers(0, steps - 1))]
    order = draw(st.permutations(range(steps)))
    return cos, list(order)


def _seq(row: np.ndarray) -> float:
    total = 0.0
    for i, c in enumerate(row.tolist()):
        total = c if i == 0 else total + c
    return total


@given(cosine_rows())
def test_pruned_row_picks_what_the_full_row_picks(t: tuple[np.ndarray, list[int]]) -> None:
    """Whatever the order, the pruned row's pick is the full row's (first strict maximum above
    0, ties and NaN included); a complete sum is the full sum bit for bit, a pruned one the sum
    of the samples it read; the host's check of the bounds accepts it."""
    cos, order = t
    steps, n = cos.shape
    read: list[int] = [0] * steps

    def cosines_of(k: int) -> Iterator[float]:
        for c in cos[k].tolist():
            read[k] += 1
            yield c

    sums, counts = eqsearch.pruned_row(order, n, cosines_of)
    full = np.array([_seq(r) for r in cos])
    assert eqsearch.pick_complete(sums, counts, n) == pick_best(full)
    assert pick_pruned(sums, counts, n, EQ_PRUNE_SLACK) == pick_best(full)
    assert counts.tolist() == read  # a pruned candidate's remaining samples are not read
    for k in range(steps):
        assert 1 <= counts[k] <= n
        want = _seq(cos[k, : counts[k]])
        assert np.array_equal(sums[k], want, equal_nan=True)
    # the pick from the raw row (partial sums included) is the same: a partial sum is below it
    assert pick_best(sums) == pick_best(full)


def test_pruning_stops_reading_a_hopeless_candidate() -> None:
    cos = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.999]])
    sums, counts = eqsearch.pruned_row([0, 1, 2], 4, lambda k: iter(cos[k].tolist()))
    assert counts.tolist() == [4, 1, 4] and sums.tolist() == [4.0, 0.5, 3.999]
    # a tie with the best is never pruned: the first strict maximum wins
    sums, counts = eqsearch.pruned_row([1, 0], 2, lambda k: iter([1.0, 1.0]))
    assert counts.tolist() == [2, 2] and eqsearch.pick_complete(sums, counts, 2) == 0
    # nothing above 0: a candidate that cannot end above 0 is pruned, nothing is picked
    sums, counts = eqsearch.pruned_row([0, 1], 3, lambda k: iter([-1.0, -1.0, 0.5]))
    assert counts.tolist() == [2, 2] and eqsearch.pick_complete(sums, counts, 3) is None
    assert pick_pruned(sums, counts, 3, EQ_PRUNE_SLACK) is None


def test_search_order_is_nearest_the_start_first() -> None:
    cands = np.array([0.5, 0.75, 1.0, 1.25, 1.5], np.float32)
    assert eqsearch.search_order(cands, 1.1) == [2, 3, 1, 4, 0]
    assert eqsearch.search_order(cands, 0.875) == [1, 2, 0, 3, 4]  # tie: the lower index


def test_the_host_refuses_a_pruning_it_cannot_confirm() -> None:
    """An agent's pruned candidate whose bound reaches the pick, or a sample count out of
    range, is refused: the pick could have been another candidate."""
    sums = np.array([2.0, 1.5, 1.9])
    assert pick_pruned(sums, np.array([2, 2, 2]), 2, EQ_PRUNE_SLACK) == 0
    assert pick_pruned(np.array([2.0, 0.5, 1.9]), np.array([2, 1, 2]), 2, EQ_PRUNE_SLACK) == 0
    with pytest.raises(ValueError, match="pruned after 1 of 2"):
        pick_pruned(np.array([2.0, 1.0, 1.9]), np.array([2, 1, 2]), 2, EQ_PRUNE_SLACK)
    with pytest.raises(ValueError, match="not within"):
        pick_pruned(sums, np.array([2, 0, 2]), 2, EQ_PRUNE_SLACK)
    with pytest.raises(ValueError, match="not within"):
        pick_pruned(sums, np.array([2, 3, 2]), 2, EQ_PRUNE_SLACK)


@given(
    st.floats(-1e3, 1e3) | st.just(math.nan),
    st.floats(0, 1e3) | st.just(math.nan),
    st.floats(0, 1e3) | st.just(math.nan),
)
def test_cosine_is_cosines_of_one_sample(dot: float, ref_norm: float, q_norm: float) -> None:
    want = eqsearch.cosines(np.array([dot]), np.array([ref_norm]), np.array([q_norm]))[0]
    assert np.array_equal(eqsearch.cosine(dot, ref_norm, q_norm), want, equal_nan=True)


def test_the_host_checks_an_agents_pruning(tmp_path: Path) -> None:
    """An ``eq_layer`` answer of form 2 is read with its sample counts and every pruned
    candidate's bound is checked before the pick is trusted; an unknown form is refused."""
    from edgecal.device.base import JobResult
    from edgecal.device.capture import parse_eq_layer
    from edgecal.ncnnfmt.param import Layer
    from edgecal.workflows.calibrate import _EqPlan

    cands = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    ws0, bs0 = np.array([1.5], np.float32), np.float32(5.5)
    plan = _EqPlan(Layer("Convolution", "conv", ["a"], ["b"], {}), (), cands, ws0, bs0, 4)

    def answer(bottom_sims: list[float], counts: list[int], form: int = 2) -> JobResult:
        path = tmp_path / f"eq{len(list(tmp_path.iterdir()))}.npz"
        k = pick_best(np.where(np.array(counts) == 4, bottom_sims, np.nan))
        path.write_bytes(
            npz_bytes(
                {
                    "sim": np.array([[3.9, 3.99, 3.5], bottom_sims]),
                    "sim_samples": np.array([[4, 4, 4], counts], np.int64),
                    "weight_scales": cands[0, 1:2],
                    "bottom_scale": np.array([bs0 if k is None else cands[1, k]], np.float32),
                    "sim_start": np.float64(3.0),
                    "sim_end": np.float64(3.99),
                    "n_samples": np.int64(4),
                }
            )
        )
        result = {"similarity": EQ_SIMILARITY, "eq_result": form}
        return JobResult({"result": result}, {"eq.npz": path})

    class Agent:
        name = "agent"

    def choose(job: JobResult) -> tuple[np.ndarray, np.float32, object]:
        return plan.choose(parse_eq_layer(Agent(), job, cands.shape, ws0.shape))  # type: ignore[arg-type]

    ws, bs, _ = choose(answer([3.9, 0.8, 3.95], [4, 2, 4]))  # 0.8 + 2 x 1: cannot reach 3.95
    assert ws.tolist() == [2.0] and bs == np.float32(6.0)
    with pytest.raises(ProtocolError, match="pruned a candidate it could not rule out"):
        choose(answer([3.9, 1.99, 3.95], [4, 2, 4]))  # 1.99 + 2 x 1 could have beaten 3.95
    with pytest.raises(ProtocolError, match="answered in form 3"):
        choose(answer([3.9, 0.8, 3.95], [4, 2, 4], form=3))
