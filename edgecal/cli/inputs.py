"""The typed values of the options every validating command shares: ``--images``/``--npy`` with
``--pixel``/``--mean``/``--norm``/``--shape`` as :class:`~edgecal.inputs.spec.ImageInput` /
:class:`~edgecal.inputs.spec.TensorInput`, and a ``say`` for notes on standard error."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from edgecal.cli.options import _floats, _ints, err
from edgecal.errors import UsageError
from edgecal.inputs.model import load_model
from edgecal.inputs.spec import ImageInput, TensorInput, input_specs


def _model_first(model: tuple[str, str] | None, args: argparse.Namespace, where: str, *,
                 lists: bool) -> None:
    """Before an option's error, the model's own (it does not load) and, with ``lists``, that
    of the number of lists (not one per model input): as the command checks them first."""
    if model is None:
        return
    m = load_model(Path(model[0]), Path(model[1]))
    if lists:
        input_specs(str(m.param_path), m.input_blobs, [TensorInput(p) for _, p in args.lists],
                    where)


def inputs_from_args(args: argparse.Namespace, model: tuple[str, str] | None = None,
                     where: str = "") -> list[ImageInput | TensorInput]:
    """One input per ``--images``/``--npy``, in the order given, with its share of the
    per-image-input options (each given once per image input, or not at all) and of
    ``--shape`` (once per input, or not at all).  With the ``model``'s files, an option count
    that does not fit says first what is wrong with the model or the number of lists."""
    kinds = [kind for kind, _ in args.lists]
    try:
        mean = [_floats(v, "--mean") for v in args.mean]
        norm = [_floats(v, "--norm") for v in args.norm]
        shape = [_ints(v, "--shape") for v in args.shape]
    except UsageError:
        _model_first(model, args, where, lists=False)
        raise
    pixel = list(args.pixel)
    n_img = sum(1 for k in kinds if k == "image")
    for name, values in (("--mean", mean), ("--norm", norm), ("--pixel", pixel)):
        if values and len(values) != n_img:
            _model_first(model, args, where, lists=True)
            raise UsageError(f"{len(values)} {name} value(s) given for {n_img} image input(s)"
                             f"{where}", hint=f"give one {name} per image input, in input order")
    if shape and len(shape) != len(kinds):
        _model_first(model, args, where, lists=True)
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
