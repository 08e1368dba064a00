"""Per-blob activation statistics and their exact reductions over shards (images, boards)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgecal.errors import CalibrationError

NUM_BINS = 2048


@dataclass(frozen=True)
class BlobHistogram:
    """ncnn2table's statistics of one conv layer's input blob.

    ``counts``: uint64[2048], zeros skipped, bin width ``absmax/2048`` of the *global* absmax.
    ``absmax``: float32 max |x| over all samples.  ``elements_per_sample``: ``c*h*w`` of the
    blob (ACIQ's N; ncnn takes it from the last sample processed).
    """

    counts: np.ndarray
    absmax: np.float32
    elements_per_sample: int

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.shape != (NUM_BINS,):
            raise CalibrationError(f"a histogram has {NUM_BINS} bins, got shape {counts.shape}")
        object.__setattr__(self, "counts", counts.astype(np.uint64))
        object.__setattr__(self, "absmax", np.float32(self.absmax))
        object.__setattr__(self, "elements_per_sample", int(self.elements_per_sample))

    @property
    def total(self) -> int:
        return int(self.counts.sum(dtype=np.uint64))


def merge_counts(shards: Iterable[np.ndarray]) -> np.ndarray:
    """Integer sum of 2048-bin count arrays (exact; order does not matter)."""
    out = np.zeros(NUM_BINS, dtype=np.uint64)
    for c in shards:
        arr = np.asarray(c)
        if arr.shape != (NUM_BINS,):
            raise CalibrationError(f"a histogram has {NUM_BINS} bins, got shape {arr.shape}")
        if arr.dtype.kind == "f" or (arr.dtype.kind == "i" and (arr < 0).any()):
            raise CalibrationError("histogram counts must be non-negative integers")
        out += arr.astype(np.uint64)
    return out


def reduce_absmax(shards: Iterable[float]) -> np.float32:
    """Max of float32 absmax values, NaN ignored as ``std::max`` ignores it; 0 when empty."""
    best = np.float32(0.0)
    for v in shards:
        f = np.float32(v)
        if f > best:
            best = f
    return best


def merge_histograms(shards: Iterable[BlobHistogram]) -> BlobHistogram:
    """Combine histograms built against the same global absmax (pass 2 of ncnn2table).

    ``elements_per_sample`` is taken from the last shard, like ncnn's ``total``.
    """
    items = list(shards)
    if not items:
        raise CalibrationError("no histograms to merge")
    absmax = items[0].absmax
    for h in items[1:]:
        if h.absmax.view(np.uint32) != absmax.view(np.uint32):
            raise CalibrationError(
                f"histograms binned against different absmax ({absmax!r} and {h.absmax!r})",
                hint="bin every shard against the global absmax from pass 1",
            )
    return BlobHistogram(
        merge_counts(h.counts for h in items), absmax, items[-1].elements_per_sample
    )
