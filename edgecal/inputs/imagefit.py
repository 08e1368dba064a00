"""Fitting decoded images to the model's input size on the host, before they are shipped.

The agent feeds every image through ``Mat.from_pixels_resize(bgr, ..., cols, rows, w, h)``
(ncnn2table's rule, spec 2.3): ncnn resizes the 3-channel BGR uint8 buffer first and converts
the colour after.  An image far larger than the input (a 100-megapixel photo for a 224x224
net) would otherwise travel to the board at full resolution, so above
:data:`HOST_RESIZE_PIXELS` the host does that same resize itself, with ncnn's own
``from_pixels_resize`` on the BGR buffer; the agent then finds the target size and does not
resize again, so the input Mat is the same.  Images at or below the limit are shipped as
decoded, exactly as before (the board resizes them with its own ncnn build).

:class:`ResizeNotes` collects, per input, which sizes were resized to which, so a run says it
once instead of once per image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from edgecal.inputs.spec import InputSpec

#: Decoded images with more pixels than this are resized to the input size on the host.
HOST_RESIZE_PIXELS = 4_000_000


def host_resize(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``bgr`` (uint8 ``(rows, cols, 3)``) resized to ``spec.target_size`` with ncnn's resize,
    as uint8 ``(h, w, 3)`` BGR."""
    import ncnn

    rows, cols = int(bgr.shape[0]), int(bgr.shape[1])
    w, h = spec.target_size(cols, rows)
    mat = ncnn.Mat.from_pixels_resize(
        np.ascontiguousarray(bgr), ncnn.Mat.PixelType.PIXEL_BGR, cols, rows, w, h
    )
    chw = np.array(mat, dtype=np.float32)  # (3, h, w), whole numbers 0..255
    return np.ascontiguousarray(chw.transpose(1, 2, 0).astype(np.uint8))


@dataclass
class ResizeNotes:
    """Per input blob: ``{(cols, rows): count}`` of images resized to ``target``."""

    sizes: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)
    target: dict[str, tuple[int, int]] = field(default_factory=dict)
    on_host: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, spec: InputSpec, cols: int, rows: int, host: bool) -> None:
        w, h = spec.target_size(cols, rows)
        if (w, h) == (cols, rows):
            return
        with self._lock:
            by_size = self.sizes.setdefault(spec.blob, {})
            by_size[(cols, rows)] = by_size.get((cols, rows), 0) + 1
            self.target.setdefault(spec.blob, (w, h))
            if host:
                self.on_host[spec.blob] = self.on_host.get(spec.blob, 0) + 1

    def lines(self) -> list[str]:
        """One line per input whose images were resized (none when nothing was)."""
        out = []
        with self._lock:
            for blob, by_size in self.sizes.items():
                n = sum(by_size.values())
                (cols, rows), _ = max(by_size.items(), key=lambda kv: kv[1])
                w, h = self.target[blob]
                others = len(by_size) - 1
                host = self.on_host.get(blob, 0)
                out.append(
                    f"input {blob}: {n} image(s) resized from {cols}x{rows}"
                    + (f" (and {others} other size(s))" if others else "")
                    + f" to {w}x{h} as --shape asks"
                    + (
                        f"; {host} larger than {HOST_RESIZE_PIXELS // 1_000_000} MP resized on "
                        "this host before shipping"
                        if host
                        else ""
                    )
                )
        return out


def fit_image(bgr: np.ndarray, spec: InputSpec, notes: ResizeNotes | None = None) -> np.ndarray:
    """The array to ship for a decoded image: ``bgr`` itself, or for a very large one its
    host-side resize to the input size."""
    rows, cols = int(bgr.shape[0]), int(bgr.shape[1])
    w, h = spec.target_size(cols, rows)
    host = rows * cols > HOST_RESIZE_PIXELS and (w, h) != (cols, rows) and w > 0 and h > 0
    if notes is not None:
        notes.record(spec, cols, rows, host)
    return host_resize(bgr, spec) if host else bgr
