"""Weights that cannot be calibrated: NaN or inf in a layer whose weights get int8 scales.

ncnn2table takes ``|inf|`` as a channel's abs-max and writes the scale ``127/inf = 0``, and
ignores NaN; the fp32 model already computes inf/NaN there, so no scale can make the int8 model
right.  ``calibrate`` refuses such a model before any device work, naming the layer, the
weight record and where in it the first bad value is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from edgecal.calib.weights import CALIBRATED_TYPES, STATIC_TYPES
from edgecal.errors import CalibrationError
from edgecal.ncnnfmt.param import Layer

#: The weight records whose values set int8 scales, per layer type.
SCALED_RECORDS = {
    "Convolution": ("weight",),
    "ConvolutionDepthWise": ("weight",),
    "InnerProduct": ("weight",),
    "Embed": ("weight",),
    "MultiHeadAttention": ("q_weight", "k_weight", "v_weight", "out_weight"),
    "RNN": ("weight_xc", "weight_hc"),
    "LSTM": ("weight_xc", "weight_hc"),
    "GRU": ("weight_xc", "weight_hc"),
}


def nonfinite_weights(layer: Layer, weights: Mapping[str, Any]) -> list[str]:
    """One line per scaled weight record of ``layer`` holding NaN or inf."""
    found = []
    for name in SCALED_RECORDS.get(layer.type, ()):
        rec = weights.get(name)
        if rec is None:
            continue
        arr = np.asarray(getattr(rec, "values", rec))
        if arr.dtype.kind != "f":
            continue
        flat = arr.reshape(-1)
        bad = ~np.isfinite(flat)
        if not bad.any():
            continue
        n_nan = int(np.count_nonzero(np.isnan(flat)))
        n_inf = int(np.count_nonzero(bad)) - n_nan
        first = int(np.flatnonzero(bad)[0])
        what = ", ".join(f"{n} {k}" for n, k in ((n_nan, "NaN"), (n_inf, "inf")) if n)
        found.append(
            f"layer {layer.name!r} ({layer.type}): {name!r} holds {what} "
            f"(first at element {first}, value {flat[first]})"
        )
    return found


def refuse_nonfinite_weights(layers: Iterable[tuple[Layer, Mapping[str, Any]]], model: str) -> None:
    """Raise :class:`CalibrationError` naming ``model`` and every layer whose scaled weights
    hold NaN or inf."""
    lines = [
        line
        for layer, w in layers
        if layer.type in (*CALIBRATED_TYPES, *STATIC_TYPES)
        for line in nonfinite_weights(layer, w)
    ]
    if lines:
        raise CalibrationError(
            f"{model}: weights are NaN or inf, no int8 scale can represent them "
            f"(ncnn2table would write scale 0 or ignore them):\n  " + "\n  ".join(lines),
            hint="fix the model's weights (re-export it, or check the training run); the fp32 "
            "model already computes NaN/inf at those layers",
        )
