"""The arithmetic of EQ's fast search (edgecal_agent.eqsearch), against plain Python loops."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecal.calib.eq import pick_best
from edgecal.device.capture import Workload, eq_search_layer
from edgecal.errors import ProtocolError
from edgecal_agent import eqsearch

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
