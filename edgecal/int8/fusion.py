"""ncnn2int8's ``fuse_requantize``: a conv that feeds an int8 conv emits int8 directly.

Pass 1: conv ``i`` -> the first later Convolution/ConvolutionDepthWise ``j`` whose single bottom
is ``i``'s first top.  Pass 2: conv ``i`` -> Split whose every top feeds an int8 conv; the scale
comes from the *last* consumer of the Split's first top (ncnn's ``Blob::consumer``).  Fused only
if both weights are int8: ``8 += 100`` on ``i`` and ``i``'s top scale = ``j``'s bottom scale.
"""

from __future__ import annotations

import numpy as np

from edgecal.ncnnfmt.param import Layer, int_value

CONV_TYPES = ("Convolution", "ConvolutionDepthWise")


def _find_conv(layers: list[Layer], start: int, blob: str) -> int:
    for j in range(start, len(layers)):
        layer = layers[j]
        if layer.type in CONV_TYPES and len(layer.bottoms) == 1 and layer.bottoms[0] == blob:
            return j
    return -1


def _last_consumer(layers: list[Layer], blob: str) -> int:
    found = -1
    for k, layer in enumerate(layers):
        if blob in layer.bottoms:
            found = k
    return found


def fuse_requantize(
    layers: list[Layer], int8_layers: set[str], bottom_scales: dict[str, np.ndarray]
) -> list[tuple[str, str, np.ndarray]]:
    """Apply both passes in place; returns ``(producer, consumer, top_scale)`` per fusion."""
    fused: list[tuple[str, str, np.ndarray]] = []

    def fuse(i: int, j: int) -> None:
        a, b = layers[i], layers[j]
        if a.name not in int8_layers or b.name not in int8_layers:
            return
        a.set_param(8, int_value(a.param_int(8, 0) + 100))
        fused.append((a.name, b.name, bottom_scales[b.name]))

    for i, layer in enumerate(layers):
        if layer.type not in CONV_TYPES or not layer.tops:
            continue
        j = _find_conv(layers, i + 1, layer.tops[0])
        if j >= 0:
            fuse(i, j)

    for i, layer in enumerate(layers):
        if layer.type not in CONV_TYPES or not layer.tops:
            continue
        j = next(
            (
                k
                for k in range(i + 1, len(layers))
                if layers[k].type == "Split"
                and len(layers[k].bottoms) == 1
                and layers[k].bottoms[0] == layer.tops[0]
            ),
            -1,
        )
        if j < 0:
            continue
        split = layers[j]
        all_conv = True
        for top in split.tops:
            k = _find_conv(layers, j + 1, top)
            if k < 0 or layers[k].name not in int8_layers:
                all_conv = False
                break
        if not all_conv or not split.tops:
            continue
        consumer = _last_consumer(layers, split.tops[0])
        if consumer >= 0 and layers[consumer].type in CONV_TYPES:
            fuse(i, consumer)
    return fused
