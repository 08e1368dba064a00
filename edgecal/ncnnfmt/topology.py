"""Cross-check a parsed ``.param`` against the network pyncnn actually loaded."""

from __future__ import annotations

from typing import Any

from edgecal.errors import ModelFormatError
from edgecal.ncnnfmt.param import ParamFile


def check_topology(pf: ParamFile, net: Any) -> None:
    """Compare layer names/types/bottoms/tops and blob names with ``net.layers()``/``net.blobs()``.

    ``net`` is an ``ncnn.Net`` with the same ``.param`` loaded (passed in, so ncnn is imported
    only by the caller).  Raises ModelFormatError describing the first mismatch.
    """
    blobs = [b.name for b in net.blobs()]
    expected_blobs = pf.blob_names()
    if blobs != expected_blobs:
        raise ModelFormatError(
            f"blob names differ from ncnn's: parsed {expected_blobs[:8]}..., ncnn {blobs[:8]}..."
        )
    layers = list(net.layers())
    if len(layers) != len(pf.layers):
        raise ModelFormatError(f"ncnn loaded {len(layers)} layers, the parse has {len(pf.layers)}")
    for ours, theirs in zip(pf.layers, layers, strict=True):
        got = (
            theirs.type,
            theirs.name,
            [blobs[i] for i in theirs.bottoms],
            [blobs[i] for i in theirs.tops],
        )
        want = (ours.type, ours.name, ours.bottoms, ours.tops)
        if got != want:
            raise ModelFormatError(f"layer mismatch: parsed {want}, ncnn loaded {got}")
