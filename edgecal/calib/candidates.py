"""Every threshold rule's answer for one blob, side by side: what a per-layer search chooses from.

:func:`candidate_scales` runs each offline rule (ncnn's ``kl`` and ``aciq``, then
:data:`edgecal.calib.methods.RULES`) through :func:`edgecal.calib.scales.blob_scale`, so each
entry is exactly the blob's line of the whole-model table of that rule (zero-blob guard and
warnings included).  ``eq`` is not here: it is a search on the device.

KL's bin is remembered per histogram (the last :data:`_KL_CACHE` distinct count arrays), so the
tables of every rule from one set of histograms (what ``tune`` builds) search KL once per blob.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.kl import kl_best_bin
from edgecal.calib.methods import RULES, Method
from edgecal.calib.scales import BlobScale, blob_scale

_KL_CACHE = 256  # histograms (16 KiB of counts each as the key)

#: The rules :func:`candidate_scales` computes, in order (their values are its keys).
CANDIDATE_RULES: tuple[Method, ...] = (Method.KL, Method.ACIQ, *RULES)


def candidate_scales(hist: BlobHistogram, layer: str = "") -> dict[str, BlobScale]:
    """Per rule value (``"kl"``, ``"aciq"``, ``"mse"``, ``"p99.9"``, ``"p99.99"``,
    ``"p99.999"``): the blob's threshold, scale and warnings as that rule's table has them."""
    kl_bin = _kl_bin(hist.counts.tobytes()) if hist.total > 0 else None
    return {m.value: blob_scale(m, hist, layer, kl_bin=kl_bin) for m in CANDIDATE_RULES}


@lru_cache(maxsize=_KL_CACHE)
def _kl_bin(counts: bytes) -> int:
    return kl_best_bin(np.frombuffer(counts, dtype=np.uint64))


def candidate_thresholds(hist: BlobHistogram) -> dict[str, np.float32]:
    """Per rule value, the blob's float32 threshold (:func:`candidate_scales`'s ``threshold``).

    The table's scale is ``127 / threshold`` except where :func:`blob_scale` guards a
    degenerate blob (all zero: threshold 127, scale 1; ACIQ with one element: scale 1): take
    :func:`candidate_scales` when the scale is what matters.
    """
    return {name: s.threshold for name, s in candidate_scales(hist).items()}
