"""The typed values of the options every validating command shares: ``--images``/``--npy`` with
``--pixel``/``--mean``/``--norm``/``--shape`` as :class:`~edgecal.inputs.spec.ImageInput` /
:class:`~edgecal.inputs.spec.TensorInput`, and a ``say`` for notes on standard error."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgecal.cli.options import _floats, _ints, err
from edgecal.errors import UsageError
from edgecal.inputs.spec import ImageInput, TensorInput, input_specs


def _model_first(
    model: tuple[str, str] | None, args: argparse.Namespace, where: str, *, lists: bool
) -> None:
    """Before an option's error, the model's own (it does not load) and, with ``lists``, that
    of the number of lists (not one per model input): as the command checks them first."""
    if model is None:
        return
    from edgecal.inputs.model import load_model

    m = load_model(Path(model[0]), Path(model[1]))
    if lists:
        input_specs(
            str(m.param_path), m.input_blobs, [TensorInput(p) for _, p in args.lists], where
        )


def check_option_counts(
    kinds: Sequence[str],
    *,
    mean: Sequence[Any],
    norm: Sequence[Any],
    pixel: Sequence[Any],
    shape: Sequence[Any],
    where: str = "",
) -> None:
    """Per-input options given once per image input (``--mean``, ``--norm``, ``--pixel``) or
    once per input (``--shape``)."""
    n_img = sum(1 for k in kinds if k == "image")
    for name, values in (("--mean", mean), ("--norm", norm), ("--pixel", pixel)):
        if values and len(values) != n_img:
            raise UsageError(
                f"{len(values)} {name} value(s) given for {n_img} image input(s){where}",
                hint=f"give one {name} per image input, in input order",
            )
    if shape and len(shape) != len(kinds):
        raise UsageError(
            f"{len(shape)} --shape value(s) given for {len(kinds)} input(s){where}",
            hint="give one --shape per input, in input order",
        )


def make_inputs(
    lists: Sequence[tuple[str, str]],
    *,
    mean: Sequence[tuple[float, ...]],
    norm: Sequence[tuple[float, ...]],
    shape: Sequence[tuple[int, ...]],
    pixel: Sequence[str],
    where: str = "",
) -> list[ImageInput | TensorInput]:
    """One input description per ``(kind, list)``, the per-input options in input order."""
    kinds = [kind for kind, _ in lists]
    check_option_counts(kinds, mean=mean, norm=norm, pixel=pixel, shape=shape, where=where)
    out: list[ImageInput | TensorInput] = []
    img = 0
    for i, (kind, path) in enumerate(lists):
        shp = tuple(shape[i]) if shape else None
        if kind == "npy":
            out.append(TensorInput(path, shape=shp))
            continue
        out.append(
            ImageInput(
                path,
                pixel=pixel[img] if pixel else None,
                mean=mean[img] if mean else None,
                norm=norm[img] if norm else None,
                shape=shp,
            )
        )
        img += 1
    return out


def inputs_from_args(
    args: argparse.Namespace, model: tuple[str, str] | None = None, where: str = ""
) -> list[ImageInput | TensorInput]:
    """One input per ``--images``/``--npy``, in the order given, with its share of the
    per-image-input options (each given once per image input, or not at all) and of
    ``--shape`` (once per input, or not at all).  With the ``model``'s files, an option count
    that does not fit says first what is wrong with the model or the number of lists."""
    try:
        mean = [_floats(v, "--mean") for v in args.mean]
        norm = [_floats(v, "--norm") for v in args.norm]
        shape = [_ints(v, "--shape") for v in args.shape]
    except UsageError:
        _model_first(model, args, where, lists=False)
        raise
    try:
        return make_inputs(
            args.lists, mean=mean, norm=norm, shape=shape, pixel=list(args.pixel), where=where
        )
    except UsageError:
        _model_first(model, args, where, lists=True)
        raise


def say_on_stderr(quiet: bool = False) -> Callable[[str], None]:
    """Notes as ``edgecal: TEXT`` lines on standard error (none when ``quiet``)."""
    if quiet:
        return lambda text: None
    return lambda text: err(f"edgecal: {text}")
