"""ACIQ Gaussian clipping (ncnn2table ``compute_aciq_gaussian_clip``, spec 2.8)."""

from __future__ import annotations

import numpy as np

#: ``const float alpha_gaussian[8]``: float constants, promoted to double in the product.
ALPHA_GAUSSIAN = np.array(
    [0, 1.71063519, 2.15159277, 2.55913646, 2.93620062, 3.28691474, 3.6151146, 3.92403714],
    dtype=np.float32,
)
#: ``(0.5 * 0.35) * (1 + sqrt(3.14159265358979323846 * log(4)))`` in double.
GAUSSIAN_CONST = (0.5 * 0.35) * (1 + float(np.sqrt(3.14159265358979323846 * np.log(4.0))))


def aciq_clip(absmax: float | np.float32, n: int, bits: int = 8) -> np.float32:
    """``(float)(alpha[bits-1] * (absmax*2*gaussian_const) / sqrt(2*log(N)))`` with C semantics.

    ``absmax * 2`` is a float product, the rest double.  IEEE edge cases as in C: ``N = 1``
    gives ``inf`` (so a scale of 0), ``absmax = 0`` gives 0 (so an infinite scale).
    """
    if not 1 <= bits <= 8:
        raise ValueError("bits must be in 1..8")
    with np.errstate(divide="ignore", invalid="ignore"):
        a2 = np.float64(np.float32(absmax) * np.float32(2))
        std = (a2 * np.float64(GAUSSIAN_CONST)) / np.sqrt(np.float64(2) * np.log(np.float64(n)))
        return np.float32(np.float64(ALPHA_GAUSSIAN[bits - 1]) * std)
