"""The typed values of the options every validating command shares: ``--images``/``--npy`` with
``--pixel``/``--mean``/``--norm``/``--shape`` as :class:`~edgecal.inputs.spec.ImageInput` /
:class:`~edgecal.inputs.spec.TensorInput`, and a ``say`` for notes on standard error."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edgecal.cli.options import _floats, _ints, err
from edgecal.errors import UsageError
from edgecal.inputs.spec import ImageInput, TensorInput


def inputs_from_args(args: argparse.Namespace, where: str = "") -> list[ImageInput | TensorInput]:
    """One input per ``--images``/``--npy``, in the order given, with its share of the
    per-image-input options (each given once per image input, or not at all) and of
    ``--shape`` (once per input, or not at all)."""
    kinds = [kind for kind, _ in args.lists]
    mean = [_floats(v, "--mean") for v in args.mean]
    norm = [_floats(v, "--norm") for v in args.norm]
    shape = [_ints(v, "--shape") for v in args.shape]
    pixel = list(args.pixel)
    n_img = sum(1 for k in kinds if k == "image")
    for name, values in (("--mean", mean), ("--norm", norm), ("--pixel", pixel)):
        if values and len(values) != n_img:
            raise UsageError(f"{len(values)} {name} value(s) given for {n_img} image input(s)"
                             f"{where}", hint=f"give one {name} per image input, in input order")
    if shape and len(shape) != len(kinds):
        raise UsageError(f"{len(shape)} --shape value(s) given for {len(kinds)} input(s){where}",
                         hint="give one --shape per input, in input order")
    out: list[ImageInput | TensorInput] = []
    img = 0
    for i, (kind, path) in enumerate(args.lists):
        shp = shape[i] if shape else None
        if kind == "npy":
            out.append(TensorInput(npy=path, shape=shp))
            continue
        out.append(ImageInput(images=path, pixel=pixel[img] if pixel else None,
                              mean=mean[img] if mean else None,
                              norm=norm[img] if norm else None, shape=shp))
        img += 1
    return out


def say_on_stderr(quiet: bool = False) -> Callable[[str], None]:
    """Notes as ``edgecal: TEXT`` lines on standard error (none when ``quiet``)."""
    if quiet:
        return lambda text: None
    return lambda text: err(f"edgecal: {text}")
