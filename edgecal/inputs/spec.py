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

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgecal.errors import UsageError
from edgecal_agent.messages import PIXEL_TYPES
from edgecal_agent.messages import InputDesc as InputSpec

if TYPE_CHECKING:
    from edgecal.ncnnfmt.param import Layer, ParamFile

__all__ = [
    "PIXEL_TYPES",
    "ImageInput",
    "InputSpec",
    "ModelChannels",
    "TensorInput",
    "input_specs",
    "model_channels",
]

#: Channels of each pixel type.
CHANNELS = {"GRAY": 1, "BGR": 3, "RGB": 3, "RGBA": 4, "BGRA": 4}
#: Pixel types by channel count (for a hint naming the ones that fit a model).
PIXELS_OF = {1: "GRAY", 3: "BGR or RGB", 4: "BGRA or RGBA"}


@dataclass(frozen=True)
class ImageInput:
    """An image input: its samples (a list file, one path per line, or a folder) and the
    preprocessing the app applies (``None``: ncnn2table's default -- BGR, mean 0, norm 1, the
    image's own size)."""

    images: str | os.PathLike[str]
    pixel: str | None = None  # BGR, RGB, GRAY, RGBA or BGRA
    mean: Sequence[float] | None = None  # one per channel of the pixel type
    norm: Sequence[float] | None = None  # one per channel of the pixel type
    #: W,H or W,H,C (C: the pixel type's channels); a 0 side follows from the image's aspect
    #: ratio, 0,0 is the image's own size (ncnn2table's rule)
    shape: Sequence[int] | None = None

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


@dataclass(frozen=True)
class ModelChannels:
    """The channel count a model input takes, and where the model says so (for messages)."""

    count: int
    source: str  # e.g. "its Input layer declares c=3" or "layer conv0 (Convolution) takes 3"


def _conv_channels(layer: Layer) -> int | None:
    """The input channels a Convolution/ConvolutionDepthWise layer's weights are for (None:
    not known from its params, e.g. dynamic weights)."""
    if layer.type not in ("Convolution", "ConvolutionDepthWise") or layer.param_int(19, 0):
        return None
    num_output, kernel_w = layer.param_int(0, 0), layer.param_int(1, 0)
    maxk = kernel_w * layer.param_int(11, kernel_w)
    group = layer.param_int(7, 1) if layer.type == "ConvolutionDepthWise" else 1
    size = layer.param_int(6, 0)
    if num_output <= 0 or maxk <= 0 or size <= 0 or group <= 0:
        return None
    whole, rest = divmod(size * group, num_output * maxk)
    return whole if whole > 0 and not rest else None


def model_channels(param: ParamFile) -> dict[str, ModelChannels]:
    """Per input blob of ``param``, the channels it takes when the model says so: its Input
    layer's ``c`` (param 2, when above 0), else the weights of the first convolution reading
    it (through Split layers).  Inputs the model says nothing about are left out."""
    out: dict[str, ModelChannels] = {}
    for layer in param.layers:
        if layer.type != "Input":
            continue
        declared = layer.param_int(2, 0)
        for blob in layer.tops:
            if declared > 0:
                out[blob] = ModelChannels(
                    declared, f"its Input layer {layer.name} declares c={declared}"
                )
                continue
            todo, seen = [blob], set()
            while todo and blob not in out:
                b = todo.pop(0)
                seen.add(b)
                for user in param.consumers(b):
                    if user.type == "Split":
                        todo.extend(t for t in user.tops if t not in seen)
                        continue
                    c = _conv_channels(user)
                    if c is not None:
                        out[blob] = ModelChannels(
                            c,
                            f"layer {user.name} ({user.type}), which reads it, has weights "
                            f"for {c} channel(s)",
                        )
                        break
    return out


def _numbers(values: Sequence[object], what: str, blob: str) -> tuple[float, ...]:
    """``values`` as floats; an item that is not a number is an error naming it."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                f = float(v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise UsageError(
                    f"{what} of input {blob}: item {i + 1} is {v!r}, not a number",
                    hint=f"give one number per channel, e.g. {what}=127.5,127.5,127.5",
                ) from None
        else:
            f = float(v)
        out.append(f)
    return tuple(out)


def _field(
    inp: ImageInput | TensorInput, field: str, blob: str, what: str, example: str
) -> tuple[object, ...]:
    """The sequence field ``field`` of ``inp`` (``mean``, ``norm``, ``shape``) as a tuple
    (empty: not given); a value that is not a sequence (a number, a text) is an error naming
    the field."""
    value = getattr(inp, field)
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        kind = type(inp).__name__
        raise UsageError(
            f"{kind} {field} for input {blob} takes a sequence of {what}, not "
            f"{type(value).__name__} {value!r}",
            hint=f"e.g. {kind}(..., {field}={example})",
        )
    return tuple(value)


def _sizes(values: Sequence[object], blob: str) -> tuple[int, ...]:
    """``--shape`` values as whole numbers, else an error naming the input."""
    out = []
    for v in values:
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            f = math.nan
        if isinstance(v, bool) or not math.isfinite(f) or f != int(f):
            raise UsageError(
                f"--shape for input {blob}: {v!r} is not a whole number",
                hint="give sizes as whole numbers, e.g. --shape 224,224",
            )
        out.append(int(f))
    return tuple(out)


def _check_image_shape(blob: str, shp: tuple[int, ...], px: str, channels: int) -> None:
    text = ",".join(map(str, shp))
    if len(shp) not in (0, 2, 3):
        raise UsageError(
            f"--shape {text} for image input {blob}: give W,H or W,H,C",
            hint="e.g. --shape 224,224 (0 for a side: kept in the image's aspect ratio; "
            "0,0: the image's own size)",
        )
    if any(v < 0 for v in shp[:2]):
        raise UsageError(
            f"--shape {text} for image input {blob}: a size cannot be negative",
            hint="give the width and height the app feeds, e.g. --shape 224,224 (0 for a side: "
            "kept in the image's aspect ratio; 0,0 or no --shape: the image's own size)",
        )
    if len(shp) == 3 and shp[2] != channels:
        raise UsageError(
            f"--shape {text} for image input {blob}: C={shp[2]}, but pixel {px} feeds "
            f"{channels} channel(s)",
            hint=f"give --shape {shp[0]},{shp[1]} (or {shp[0]},{shp[1]},{channels}), or the "
            f"pixel type with {shp[2]} channel(s)"
            + (f" ({PIXELS_OF[shp[2]]})" if shp[2] in PIXELS_OF else ""),
        )


def _check_tensor_shape(blob: str, shp: tuple[int, ...]) -> None:
    if not shp:
        return
    text = ",".join(map(str, shp))
    if len(shp) > 4:
        raise UsageError(
            f"--shape {text} for npy input {blob}: ncnn takes at most 4 dimensions",
            hint="give w,h,(d),c: the .npy's numpy shape reversed",
        )
    if any(v <= 0 for v in shp):
        raise UsageError(
            f"--shape {text} for npy input {blob}: every size must be 1 or more",
            hint="give w,h,(d),c: the .npy's numpy shape reversed (or no --shape: any shape)",
        )


def _check_model_channels(
    blob: str, given: int, what: str, model: str, known: ModelChannels | None, fix: str
) -> None:
    """``given`` channels (``what`` feeds them) against the model's, when it says."""
    if known is None or given == known.count:
        return
    raise UsageError(
        f"input {blob} of {model}: {what} {given} channel(s), but the model takes "
        f"{known.count} ({known.source})",
        hint=fix,
    )


def input_specs(
    model: str,
    blobs: Sequence[str],
    inputs: Sequence[ImageInput | TensorInput],
    where: str = "",
    *,
    channels: Mapping[str, ModelChannels] | None = None,
) -> list[InputSpec]:
    """One :class:`InputSpec` per input ``blobs`` of ``model`` (in Input layer order).

    Image inputs: ``mean``/``norm`` hold one value per channel of the pixel type; a ``shape``
    is W,H or W,H,C with C the pixel type's channels, no size negative.  Npy inputs: a
    ``shape`` has 1 to 4 sizes, each 1 or more.  ``channels``: what the model says its inputs
    take (:func:`model_channels`); the channels fed must match."""
    if len(inputs) != len(blobs):
        raise UsageError(
            f"{model} has {len(blobs)} input(s) ({', '.join(blobs)}) but {len(inputs)} "
            f"sample list(s) were given{where}",
            hint="give one --images/--npy list per input, in the order of the Input layers",
        )
    known = channels or {}
    specs: list[InputSpec] = []
    for blob, inp in zip(blobs, inputs, strict=True):
        sizes = _field(inp, "shape", blob, "whole numbers", "(224, 224)")
        shp = _sizes(sizes, blob) if sizes else ()
        if isinstance(inp, TensorInput):
            _check_tensor_shape(blob, shp)
            if len(shp) >= 3:
                _check_model_channels(
                    blob,
                    shp[-1],
                    f"--shape {','.join(map(str, shp))} gives",
                    model,
                    known.get(blob),
                    f"give c={known[blob].count} as --shape's last value (w,h,(d),c)"
                    if blob in known
                    else "",
                )
            specs.append(InputSpec(blob=blob, kind="npy", shape=shp))
            continue
        if inp.pixel is not None and not isinstance(inp.pixel, str):
            raise UsageError(
                f"ImageInput pixel for input {blob} takes a pixel type name "
                f"({', '.join(PIXEL_TYPES)}), not {type(inp.pixel).__name__} {inp.pixel!r}",
                hint="e.g. ImageInput(..., pixel='RGB')",
            )
        px = (inp.pixel or "BGR").upper()
        if px not in PIXEL_TYPES:
            raise UsageError(
                f"pixel type {px!r} for input {blob} is not supported",
                hint=f"use one of {', '.join(PIXEL_TYPES)}",
            )
        n_ch = CHANNELS[px]
        given = {
            f: _field(inp, f, blob, "numbers", "(127.5, 127.5, 127.5)") for f in ("mean", "norm")
        }
        m = _numbers(given["mean"], "mean", blob) if given["mean"] else (0.0,) * n_ch
        s = _numbers(given["norm"], "norm", blob) if given["norm"] else (1.0,) * n_ch
        for name, vals in (("mean", m), ("norm", s)):
            if len(vals) != n_ch:
                shown = ",".join(f"{v:g}" for v in vals[:8]) + (",..." if len(vals) > 8 else "")
                raise UsageError(
                    f"{name} {shown} for input {blob} has {len(vals)} value(s) but "
                    f"pixel {px} has {n_ch} channel(s){where}",
                    hint=f"give {n_ch} {name} value(s), one per channel of {px}"
                    + (f", e.g. {','.join(f'{vals[0]:g}' for _ in range(n_ch))}" if vals else ""),
                )
        _check_image_shape(blob, shp, px, n_ch)
        model_c = known.get(blob)
        _check_model_channels(
            blob,
            n_ch,
            f"pixel {px} feeds",
            model,
            model_c,
            f"give the pixel type the app feeds: {PIXELS_OF[model_c.count]}"
            if model_c is not None and model_c.count in PIXELS_OF
            else "an image input feeds 1 (GRAY), 3 (BGR, RGB) or 4 (BGRA, RGBA) channels: "
            "give this input as --npy samples",
        )
        specs.append(InputSpec(blob=blob, kind="image", pixel=px, mean=m, norm=s, shape=shp))
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
