"""How one model input is fed: the host-side name for the agent protocol's input description,
and the typed descriptions a caller gives (:class:`ImageInput`, :class:`TensorInput`).

The agent's messages (``edgecal_agent.messages``) are the single source of truth for message
shapes, so the host uses its ``InputDesc`` directly:

``kind="image"``: samples are uint8 ``(rows, cols, 3)`` BGR arrays (what ``cv::imread`` gives);
the agent applies ``Mat.from_pixels_resize(bgr, PIXEL_BGR[2X], cols, rows, w, h)`` with
``(w, h) = target_size(cols, rows)`` and then ``substract_mean_normalize(mean, norm)``.

``kind="npy"``: samples are float32 C-order arrays whose numpy shape is ``shape`` reversed
(``shape`` is given in ncnn's ``w,h,(d),c`` order as on ncnn2table's command line).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from edgecal.errors import UsageError
from edgecal_agent.messages import PIXEL_TYPES
from edgecal_agent.messages import InputDesc as InputSpec

__all__ = ["PIXEL_TYPES", "ImageInput", "InputSpec", "TensorInput", "input_specs"]

#: Channels of each pixel type.
CHANNELS = {"GRAY": 1, "BGR": 3, "RGB": 3, "RGBA": 4, "BGRA": 4}


@dataclass(frozen=True)
class ImageInput:
    """An image input: its samples (a list file, one path per line, or a folder) and the
    preprocessing the app applies (``None``: ncnn2table's default -- BGR, mean 0, norm 1, the
    image's own size)."""

    images: str | os.PathLike[str]
    pixel: str | None = None  # BGR, RGB, GRAY, RGBA or BGRA
    mean: Sequence[float] | None = None  # per channel
    norm: Sequence[float] | None = None  # per channel
    shape: Sequence[int] | None = None  # W,H or W,H,C

    @property
    def samples(self) -> str | os.PathLike[str]:
        return self.images


@dataclass(frozen=True)
class TensorInput:
    """A tensor input: a list of float32 ``.npy`` files, of ``shape`` in ncnn's ``w,h,(d),c``
    order (``None``: any shape)."""

    npy: str | os.PathLike[str]
    shape: Sequence[int] | None = None

    @property
    def samples(self) -> str | os.PathLike[str]:
        return self.npy


def input_specs(
    model: str, blobs: Sequence[str], inputs: Sequence[ImageInput | TensorInput], where: str = ""
) -> list[InputSpec]:
    """One :class:`InputSpec` per input ``blobs`` of ``model`` (in Input layer order)."""
    if len(inputs) != len(blobs):
        raise UsageError(
            f"{model} has {len(blobs)} input(s) ({', '.join(blobs)}) but {len(inputs)} "
            f"sample list(s) were given{where}",
            hint="give one --images/--npy list per input, in the order of the Input layers",
        )
    specs: list[InputSpec] = []
    for blob, inp in zip(blobs, inputs, strict=True):
        shp = tuple(int(v) for v in inp.shape) if inp.shape else ()
        if isinstance(inp, TensorInput):
            specs.append(InputSpec(blob=blob, kind="npy", shape=shp))
            continue
        px = (inp.pixel or "BGR").upper()
        if px not in PIXEL_TYPES:
            raise UsageError(
                f"pixel type {px!r} for input {blob} is not supported",
                hint=f"use one of {', '.join(PIXEL_TYPES)}",
            )
        channels = CHANNELS[px]
        m = tuple(float(v) for v in inp.mean) if inp.mean else (0.0,) * channels
        s = tuple(float(v) for v in inp.norm) if inp.norm else (1.0,) * channels
        for name, vals in (("mean", m), ("norm", s)):
            if len(vals) < channels:
                raise UsageError(
                    f"{name} for input {blob} has {len(vals)} value(s) but "
                    f"pixel={px} has {channels} channel(s)"
                )
        if len(shp) not in (0, 2, 3):
            raise UsageError(f"--shape for image input {blob} must be W,H or W,H,C")
        specs.append(
            InputSpec(
                blob=blob, kind="image", pixel=px, mean=m[:channels], norm=s[:channels], shape=shp
            )
        )
    return specs


def defaults_used(
    specs: Sequence[InputSpec], inputs: Sequence[ImageInput | TensorInput]
) -> list[str]:
    """One line per image input for the preprocessing not given, naming the values used
    instead."""

    def nums(values: Sequence[float]) -> str:
        return ",".join(f"{v:g}" for v in values)

    out = []
    for spec, inp in zip(specs, inputs, strict=True):
        if not isinstance(inp, ImageInput):
            continue
        used = [
            (name, value)
            for name, given, value in (
                ("--pixel", inp.pixel, spec.pixel),
                ("--mean", inp.mean, nums(spec.mean)),
                ("--norm", inp.norm, nums(spec.norm)),
            )
            if not given
        ]
        if used:
            out.append(
                f"no {'/'.join(n for n, _ in used)} for image input {spec.blob}: using "
                + " ".join(f"{n} {v}" for n, v in used)
                + " (give them as the app preprocesses its input)"
            )
    return out
