"""How one model input is fed: the host-side description shared by the pipeline and devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PIXEL_TYPES = ("BGR", "RGB", "GRAY", "RGBA", "BGRA")


@dataclass(frozen=True)
class InputSpec:
    """One ncnn ``Input`` blob and how calibration samples become a Mat for it.

    ``kind="image"``: samples are uint8 ``(rows, cols, 3)`` BGR arrays (what ``cv::imread``
    gives); the agent applies ``Mat.from_pixels_resize(bgr, PIXEL_BGR[2X], cols, rows, w, h)``
    with ``(w, h) = target_size(cols, rows)`` and then ``substract_mean_normalize(mean, norm)``.

    ``kind="npy"``: samples are float32 C-order arrays whose numpy shape is ``shape`` reversed
    (``shape`` is given in ncnn's ``w,h,(d),c`` order as on ncnn2table's command line).
    """

    blob: str
    kind: Literal["image", "npy"] = "image"
    pixel: str = "BGR"
    mean: tuple[float, ...] = ()
    norm: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()

    @property
    def channels(self) -> int:
        if self.kind == "npy":
            return self.shape[-1] if self.shape else 0
        return {"GRAY": 1, "BGR": 3, "RGB": 3, "RGBA": 4, "BGRA": 4}[self.pixel]

    def target_size(self, cols: int, rows: int) -> tuple[int, int]:
        """ncnn2table's resize rule (spec 2.3): the ``(w, h)`` an image of ``cols x rows`` gets."""
        w = self.shape[0] if len(self.shape) > 0 else 0
        h = self.shape[1] if len(self.shape) > 1 else 0
        if w > 0 and h > 0:
            return w, h
        if w <= 0 and h <= 0:
            return cols, rows
        if h <= 0:
            s = cols / w
            return w, int(rows / s)
        s = rows / h
        return int(cols / s), h

    def to_dict(self) -> dict[str, object]:
        return {
            "blob": self.blob,
            "kind": self.kind,
            "pixel": self.pixel,
            "mean": list(self.mean),
            "norm": list(self.norm),
            "shape": list(self.shape),
        }
