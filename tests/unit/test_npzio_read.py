"""``load_npz`` reads each member's header once and its data straight after it (a run's outputs
are tens of thousands of members): every array comes back as numpy's own ``np.load`` gives it
-- dtype, byte order, shape, C or Fortran order, writable."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecal_agent.npzio import load_npz

DTYPES = st.sampled_from(["<f4", ">f4", "<f8", "<i4", ">i8", "|u1", "|b1", "<U3", "|S2", "<c8"])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    a = draw(
        hnp.arrays(
            np.dtype(draw(DTYPES)),
            hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
        )
    )
    return np.asfortranarray(a) if draw(st.booleans()) else a


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), arrays(), max_size=5))
def test_members_read_as_numpy_reads_them(members: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **members)
    want = np.load(io.BytesIO(buf.getvalue()), allow_pickle=False)
    with load_npz(io.BytesIO(buf.getvalue()), "t.npz") as got:
        assert sorted(got.files) == sorted(members)
        for name in members:
            a, b = got[name], want[name]
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert a.tobytes(order="A") == b.tobytes(order="A"), name
            assert a.flags.c_contiguous == b.flags.c_contiguous, name
            assert a.flags.f_contiguous == b.flags.f_contiguous, name
            assert a.flags.writeable, name
            assert name in got and name + "x" not in got
