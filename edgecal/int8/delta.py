"""What a variant of a converted model changes, and what it must be fed to compute only that.

tune and sensitivity score many int8 variants of one model that differ from a *base* (the
current int8 model, or the model with every layer in float) in a layer or two: one layer kept in
fp32, another scale for one layer.  A layer whose line and bytes are the same in both, and whose
inputs are the same, computes the same blob; so a variant needs only its *recomputed* layers --
the changed ones and every layer that reads, directly or not, what they make -- given the
unchanged blobs those layers read (the *feed*), which the base computed.

The changed layers are found by comparing the two converted models layer by layer: the
``.param`` line and the layer's bytes of the ``.bin``.  A scale changed for one layer can change
another's line too (the requantize fusion writes the consumer's input scale into the producer),
which is why the comparison is of the converted models, not of the tables.  Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgecal.int8.convert import QuantizedModel
from edgecal.ncnnfmt.param import ParamFile, render_layer


@dataclass(frozen=True)
class Delta:
    """``changed``: the variant's layers that differ from the base's; ``recomputed``: those and
    every layer downstream of them, in the model's order; ``feed``: the blobs the variant takes
    from the base -- each unchanged blob a recomputed layer reads, and each of ``outputs`` no
    recomputed layer makes -- in the model's blob order."""

    changed: tuple[str, ...]
    recomputed: tuple[str, ...]
    feed: tuple[str, ...]


def recomputed_layers(pf: ParamFile, changed: set[str]) -> set[str]:
    """``changed`` and every layer that reads a blob one of them (or of these) makes."""
    out = set(changed)
    made: set[str] = set()
    grew = True
    while grew:  # a fixpoint: no reliance on the layers' order in the file
        grew = False
        for layer in pf.layers:
            if layer.name not in out and any(b in made for b in layer.bottoms):
                out.add(layer.name)
                grew = True
            if layer.name in out and not made.issuperset(layer.tops):
                made.update(layer.tops)
                grew = True
    return out


def feed_blobs(pf: ParamFile, recomputed: set[str], outputs: Sequence[str]) -> tuple[str, ...]:
    """The blobs computed outside ``recomputed`` that a layer in it reads, and the ``outputs``
    none of them makes, in blob order."""
    made = {t for layer in pf.layers if layer.name in recomputed for t in layer.tops}
    read = {b for layer in pf.layers if layer.name in recomputed for b in layer.bottoms}
    want = (read | set(outputs)) - made
    return tuple(b for b in pf.blob_names() if b in want)


def delta(base: QuantizedModel, variant: QuantizedModel, outputs: Sequence[str]) -> Delta | None:
    """What ``variant`` changes against ``base`` and what it must be fed to compute
    ``outputs``; None when the two do not have the same layers and blobs (same names, types,
    inputs and outputs, in the same order): then nothing of the base can be reused."""
    a, b = base.param.layers, variant.param.layers
    if len(a) != len(b) or any(
        (x.name, x.type, x.bottoms, x.tops) != (y.name, y.type, y.bottoms, y.tops)
        for x, y in zip(a, b, strict=True)
    ):
        return None
    changed = {
        y.name
        for x, y, cx, cy in zip(a, b, base.chunks, variant.chunks, strict=True)
        if cx != cy or render_layer(x) != render_layer(y)
    }
    again = recomputed_layers(variant.param, changed)
    return Delta(
        changed=tuple(x.name for x in b if x.name in changed),
        recomputed=tuple(x.name for x in b if x.name in again),
        feed=feed_blobs(variant.param, again, outputs),
    )


#: Where a piece of a patched ``.bin`` comes from (``edgecal_agent.messages.BinPatch``).
FROM_BASE, FROM_DATA = 0, 1


def bin_patch(
    base: QuantizedModel, variant: QuantizedModel
) -> tuple[bytes, tuple[tuple[int, int, int], ...]]:
    """``variant``'s ``.bin`` as pieces ``(source, offset, length)`` of ``base``'s ``.bin``
    (:data:`FROM_BASE`) and of the returned data (:data:`FROM_DATA`: the layers whose bytes
    differ), adjacent pieces of one source merged; the two have the same layers (:func:`delta`
    is not None)."""
    data = bytearray()
    pieces: list[list[int]] = []
    at = 0
    for old, new in zip(base.chunks, variant.chunks, strict=True):
        source, offset = (FROM_BASE, at) if old == new else (FROM_DATA, len(data))
        if old != new:
            data += new
        last = pieces[-1] if pieces else None
        if last is not None and last[0] == source and last[1] + last[2] == offset:
            last[2] += len(new)
        elif new:
            pieces.append([source, offset, len(new)])
        at += len(old)
    return bytes(data), tuple((s, o, n) for s, o, n in pieces)
