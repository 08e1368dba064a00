from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecal.calib.histogram import BlobHistogram
from edgecal.errors import HistogramFileError
from edgecal.runs.histfile import (
    HistogramSet,
    histograms_to_bytes,
    load_histograms,
    save_histograms,
)


def make_set(n: int, seed: int) -> HistogramSet:
    rng = np.random.default_rng(seed)
    stats = {
        f"layer {i}": BlobHistogram(
            counts=rng.integers(0, 2**40, 2048, dtype=np.uint64),
            absmax=np.float32(rng.random() * 10),
            elements_per_sample=int(rng.integers(1, 10**6)),
        )
        for i in range(n)
    }
    return HistogramSet(
        blobs={k: f"blob/{k}" for k in stats},
        stats=stats,
        meta={"param": "m.param", "n_samples": 3},
    )


@given(st.integers(0, 5), st.integers(0, 2**31))
def test_round_trip_is_exact(n: int, seed: int) -> None:
    hs = make_set(n, seed)
    buf = histograms_to_bytes(hs)
    back = load_histograms(io.BytesIO(buf))  # type: ignore[arg-type]
    assert back.blobs == hs.blobs and back.meta == hs.meta and list(back.stats) == list(hs.stats)
    for k, h in hs.stats.items():
        assert np.array_equal(back.stats[k].counts, h.counts)
        assert back.stats[k].absmax == h.absmax
        assert back.stats[k].elements_per_sample == h.elements_per_sample


def test_saved_file_has_no_pickled_members(tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    save_histograms(path, make_set(2, 1))
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            assert z[key].dtype != object


def test_wrong_schema_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    save_histograms(path, make_set(1, 2))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.int64(99))
    members["schema.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(HistogramFileError, match="schema 99"):
        load_histograms(path)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(HistogramFileError, match="not an edgecal histogram file"):
        load_histograms(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(HistogramFileError, match="not a readable histogram file"):
        load_histograms(tmp_path / "text.npz")
    with pytest.raises(HistogramFileError, match="does not exist"):
        load_histograms(tmp_path / "missing.npz")


@pytest.mark.parametrize("bad", [np.inf, np.nan, -1.0, 1e300])
def test_an_absmax_that_is_not_finite_and_non_negative_names_the_file_and_layer(
    tmp_path: Path, bad: float
) -> None:
    """A damaged file's absmax (inf, NaN, negative, beyond float32) is refused on reading,
    naming the file and the layer, without a numpy warning."""
    path = tmp_path / "h.npz"
    save_histograms(path, make_set(3, 4))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.array([1.0, bad, bad], dtype=np.float64))
    members["absmax.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(HistogramFileError, match=r"h\.npz.* layer layer 1 is .*, and 1 more"):
        load_histograms(path)
