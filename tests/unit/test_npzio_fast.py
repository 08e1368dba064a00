"""The npz fast paths (a run's outputs are tens of thousands of members): ``NpzWriter`` writes
each member's .npy header once per dtype and shape, byte for byte what numpy's ``write_array``
writes; ``load_npz`` parses a header once per distinct header and reads the data straight
after it, every array as numpy's own ``np.load`` gives it -- dtype, byte order, shape, C or
Fortran order, writable."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecal_agent.npzio import NpzWriter, load_npz

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


@settings(max_examples=100, deadline=None)
@given(st.lists(arrays(), min_size=1, max_size=6))
def test_writer_members_are_numpys_bytes(members: list[np.ndarray]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "out.npz"
        with NpzWriter(path) as w:
            for i, a in enumerate(members):
                w.add(f"m{i}", a)
                w.add(f"again{i}", a)  # the header from the writer's memo
        with zipfile.ZipFile(path) as zf:
            for i, a in enumerate(members):
                want = io.BytesIO()
                np.lib.format.write_array(want, np.ascontiguousarray(a) if a.ndim else a)
                assert zf.read(f"m{i}.npy") == want.getvalue()
                assert zf.read(f"again{i}.npy") == want.getvalue()
        with load_npz(path) as got:
            for i, a in enumerate(members):
                assert got[f"m{i}"].tobytes() == np.ascontiguousarray(a).tobytes()
