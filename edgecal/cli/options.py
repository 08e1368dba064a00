"""Command-line plumbing every command shares: option groups (inputs, devices), the input
specs and devices they name, and writing outputs (atomically) and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from edgecal.cli.ncnnargs import bracket_groups
from edgecal.errors import UsageError
from edgecal.files.fsnames import printable
from edgecal.files.outputs import write_outputs as write_outputs  # one place for output files
from edgecal.inputs.spec import ImageInput, TensorInput


def command_line(args: argparse.Namespace) -> list[str]:
    """The command as typed (recorded in run directories)."""
    return ["edgecal", *getattr(args, "argv", sys.argv[1:])]


def err(text: str) -> None:
    sys.stderr.write(printable(text) + "\n")  # a non-UTF-8 file name shows as \xNN


def _floats(text: str, what: str) -> tuple[float, ...]:
    groups = bracket_groups(text)
    if len(groups) != 1 or not groups[0]:
        raise UsageError(f"{what} {text!r}: give comma-separated numbers, e.g. 104,117,123")
    return tuple(groups[0])


def _ints(text: str, what: str) -> tuple[int, ...]:
    values = _floats(text, what)
    if any(v != int(v) for v in values):
        raise UsageError(f"{what} {text!r}: sizes must be whole numbers")
    return tuple(int(v) for v in values)


def check_option_counts(kinds: Sequence[str], *, mean: Sequence[Any], norm: Sequence[Any],
                        pixel: Sequence[Any], shape: Sequence[Any], where: str = "") -> None:
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


def make_inputs(lists: Sequence[tuple[str, str]], *, mean: Sequence[tuple[float, ...]],
                norm: Sequence[tuple[float, ...]], shape: Sequence[tuple[int, ...]],
                pixel: Sequence[str], where: str = "") -> list[ImageInput | TensorInput]:
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
        out.append(ImageInput(path, pixel=pixel[img] if pixel else None,
                              mean=mean[img] if mean else None,
                              norm=norm[img] if norm else None, shape=shp))
        img += 1
    return out


def inputs_from_options(args: argparse.Namespace) -> list[ImageInput | TensorInput]:
    """The inputs of ``calibrate``/``validate`` style options (--images/--npy, --mean, ...)."""
    return make_inputs(args.lists, mean=[_floats(v, "--mean") for v in args.mean],
                       norm=[_floats(v, "--norm") for v in args.norm],
                       shape=[_ints(v, "--shape") for v in args.shape], pixel=args.pixel)


# ----------------------------------------------------------------- until validate/tune use the API


def specs_from_options(model: Any, args: argparse.Namespace) -> list[Any]:
    from edgecal.inputs.spec import defaults_used, input_specs

    inputs = inputs_from_options(args)
    specs = input_specs(str(model.param_path), model.input_blobs, inputs)
    for line in defaults_used(specs, inputs):
        err(f"edgecal: {line}")
    return specs


def open_device(args: argparse.Namespace, threads: int | None, spec: str | None = None) -> Any:
    from edgecal.cli.calibrate import devices_from_options

    name = spec if spec is not None else device_spec(args)
    return devices_from_options(args).open_one(name, threads)


def device_spec(args: argparse.Namespace) -> str | None:
    spec = getattr(args, "device", None)
    if isinstance(spec, list):
        return spec[-1] if spec else None
    return spec


def effective_threads(args: argparse.Namespace, runtime: str, spec: str | None = None) -> int:
    from edgecal.cli.calibrate import devices_from_options

    return devices_from_options(args).threads_for(
        runtime, spec if spec is not None else device_spec(args), args.threads)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")



class ListAction(argparse.Action):
    """--images and --npy append (kind, path) to one ordered list: inputs in given order."""

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        items = list(getattr(ns, self.dest) or [])
        items.append(("npy" if opt == "--npy" else "image", values))
        setattr(ns, self.dest, items)


def add_inputs(p: argparse.ArgumentParser, *, multi_device: bool = False) -> None:
    p.add_argument("--images", dest="lists", action=ListAction, metavar="LIST|DIR",
                   help="image list file (one path per line) or folder; once per input")
    p.add_argument("--npy", dest="lists", action=ListAction, metavar="LIST",
                   help="list of float32 .npy files, for a tensor input")
    p.add_argument("--mean", action="append", default=[],
                   help="per image input, e.g. 104,117,123 (default: 0 for every channel)")
    p.add_argument("--norm", action="append", default=[],
                   help="per image input, e.g. 0.017,... (default: 1 for every channel)")
    p.add_argument("--shape", action="append", default=[],
                   help="per input: W,H[,C] for images, w,h,(d),c for npy (default: images at "
                        "their own size, npy files of any shape)")
    p.add_argument("--pixel", action="append", default=[],
                   help="BGR|RGB|GRAY|RGBA|BGRA, per image input (default: BGR)")
    p.add_argument("--threads", type=int, default=None,
                   help="calibration runtime: agent workers over the images (default 1; on "
                   "this machine at most one per core); "
                   "deployed runtime: ncnn threads (default: the board profile's, or all cores)")
    add_device(p, multi=multi_device)


def add_device(p: argparse.ArgumentParser, *, multi: bool = False) -> None:
    p.add_argument("--device", default=None, metavar="NAME|USER@HOST[:PORT]|local",
                   action="append" if multi else "store",
                   help="where to run: a board of the boards file, user@host[:port] over SSH, "
                        "or local (default)" + ("; repeat it for several boards" if multi
                                                else ""))
    p.add_argument("--boards", default=None, metavar="FILE",
                   help="boards file (default: $EDGECAL_BOARDS)")
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="accept and record a board's unknown SSH host key (never a changed one)")


