"""How ``Scorer.score_many`` groups variants into jobs: in order, at most ``BATCH`` of them and
``BATCH_BYTES`` of their files (a larger one alone), each batch as full as those bounds let."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from edgecal.workflows.scoring import BATCH, BATCH_BYTES, _batches

sizes = st.lists(st.integers(min_value=0, max_value=BATCH_BYTES + 5), max_size=40)


@given(sizes)
def test_batches_keep_order_and_bounds(items: list[int]) -> None:
    batches = list(_batches(items, lambda n: n))
    assert [n for b in batches for n in b] == items
    for b in batches:
        assert 1 <= len(b) <= BATCH and (len(b) == 1 or sum(b) <= BATCH_BYTES)
    for b, after in itertools.pairwise(batches):  # greedy: the next did not fit
        assert len(b) == BATCH or sum(b) + after[0] > BATCH_BYTES


def test_a_large_model_is_scored_a_few_variants_at_a_time() -> None:
    big = BATCH_BYTES // 3 + 1
    assert [len(b) for b in _batches([big] * 7, lambda n: n)] == [2, 2, 2, 1]
    assert [len(b) for b in _batches([1] * 20, lambda n: n)] == [BATCH, BATCH, 4]
