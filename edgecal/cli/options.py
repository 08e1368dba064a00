"""Command-line plumbing every command shares: option groups (inputs, devices), the input
specs and devices they name, and writing outputs (atomically) and JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from edgecal.cli.ncnnargs import bracket_groups
from edgecal.errors import UsageError
from edgecal.files.fsnames import printable
from edgecal.files.outputs import write_outputs as write_outputs  # one place for output files
from edgecal.inputs.model import Model
from edgecal.inputs.spec import PIXEL_TYPES, InputSpec


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


def build_specs(
    model: Model,
    kinds: Sequence[str],
    *,
    mean: Sequence[tuple[float, ...]],
    norm: Sequence[tuple[float, ...]],
    shape: Sequence[tuple[int, ...]],
    pixel: Sequence[str],
    where: str = "",
) -> list[InputSpec]:
    """One InputSpec per model input, from per-input option lists, with count checks."""
    blobs = model.input_blobs
    n_in = len(blobs)
    if len(kinds) != n_in:
        raise UsageError(
            f"{model.param_path} has {n_in} input(s) ({', '.join(blobs)}) but {len(kinds)} "
            f"sample list(s) were given{where}",
            hint="give one --images/--npy list per input, in the order of the Input layers",
        )
    n_img = sum(1 for k in kinds if k == "image")
    for name, values in (("--mean", mean), ("--norm", norm), ("--pixel", pixel)):
        if values and len(values) != n_img:
            raise UsageError(
                f"{len(values)} {name} value(s) given for {n_img} image input(s){where}",
                hint=f"give one {name} per image input, in input order",
            )
    if shape and len(shape) != n_in:
        raise UsageError(
            f"{len(shape)} --shape value(s) given for {n_in} input(s){where}",
            hint="give one --shape per input, in input order",
        )
    specs: list[InputSpec] = []
    img = 0
    for i, (blob, kind) in enumerate(zip(blobs, kinds, strict=True)):
        shp = tuple(shape[i]) if shape else ()
        if kind == "npy":
            specs.append(InputSpec(blob=blob, kind="npy", shape=shp))
            continue
        px = pixel[img].upper() if pixel else "BGR"
        if px not in PIXEL_TYPES:
            raise UsageError(
                f"pixel type {px!r} for input {blob} is not supported",
                hint=f"use one of {', '.join(PIXEL_TYPES)}",
            )
        channels = {"GRAY": 1, "BGR": 3, "RGB": 3, "RGBA": 4, "BGRA": 4}[px]
        m = tuple(mean[img]) if mean else (0.0,) * channels
        s = tuple(norm[img]) if norm else (1.0,) * channels
        for name, vals in (("mean", m), ("norm", s)):
            if len(vals) < channels:
                raise UsageError(
                    f"{name} for input {blob} has {len(vals)} value(s) but pixel={px} has "
                    f"{channels} channel(s)"
                )
        if len(shp) not in (0, 2, 3):
            raise UsageError(f"--shape for image input {blob} must be W,H or W,H,C")
        specs.append(
            InputSpec(blob=blob, kind="image", pixel=px, mean=m[:channels], norm=s[:channels],
                      shape=shp)
        )
        img += 1
    return specs


def specs_from_options(model: Model, args: argparse.Namespace) -> list[InputSpec]:
    """The InputSpecs of ``calibrate``/``validate`` style options (--images/--npy, --mean, ...);
    the defaults used for a missing --pixel/--mean/--norm are said on stderr."""
    specs = build_specs(
        model, [kind for kind, _ in args.lists],
        mean=[_floats(v, "--mean") for v in args.mean],
        norm=[_floats(v, "--norm") for v in args.norm],
        shape=[_ints(v, "--shape") for v in args.shape],
        pixel=args.pixel,
    )
    for line in defaults_used(specs, pixel=bool(args.pixel), mean=bool(args.mean),
                              norm=bool(args.norm)):
        err(line)
    return specs


def defaults_used(specs: Sequence[InputSpec], *, pixel: bool, mean: bool, norm: bool
                  ) -> list[str]:
    """One line per image input for the preprocessing options not given (``pixel``, ``mean``,
    ``norm``: whether each was), naming the values used instead."""
    def nums(values: Sequence[float]) -> str:
        return ",".join(f"{v:g}" for v in values)

    out = []
    for spec in specs:
        if spec.kind != "image":
            continue
        used = [(name, value) for name, given, value in (
            ("--pixel", pixel, spec.pixel), ("--mean", mean, nums(spec.mean)),
            ("--norm", norm, nums(spec.norm))) if not given]
        if used:
            out.append(f"edgecal: no {'/'.join(n for n, _ in used)} for image input "
                       f"{spec.blob}: using " + " ".join(f"{n} {v}" for n, v in used)
                       + " (give them as the app preprocesses its input)")
    return out


def open_device(args: argparse.Namespace, threads: int | None, spec: str | None = None) -> Any:
    """The device named by ``spec`` or ``--device`` (the local machine by default; a
    boards-file name or ``user@host[:port]`` for a board, see ``--boards`` and
    ``--accept-new-host-key``)."""
    from edgecal.boards.config import boards_file
    from edgecal.boards.open import open_device as open_named

    return open_named(spec if spec is not None else device_spec(args),
                      boards=boards_file(getattr(args, "boards", None)), threads=threads,
                      accept_new_host_key=bool(getattr(args, "accept_new_host_key", False)))


def device_spec(args: argparse.Namespace) -> str | None:
    """The one ``--device`` of a single-device command (the last one given)."""
    spec = getattr(args, "device", None)
    if isinstance(spec, list):
        return spec[-1] if spec else None
    return spec


def effective_threads(args: argparse.Namespace, runtime: str, spec: str | None = None) -> int:
    """``--threads``, or its default: 1 worker for calibration; for the deployed runtime the
    thread count the app would use (the board profile's, or every core of this machine)."""
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: must be at least 1")
        return int(args.threads)
    if runtime == "calibration":
        return 1
    from edgecal.boards.config import boards_file, resolve_board
    from edgecal.boards.open import is_local

    spec = spec if spec is not None else device_spec(args)
    if not is_local(spec):
        board = resolve_board(spec, boards_file(getattr(args, "boards", None)))
        profile = board.load_profile() if board is not None else None
        if profile is not None:
            return int(profile.threads)
    return os.cpu_count() or 1


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_workers(threads: int, what: str, say: Callable[[str], None] | None = None) -> int:
    """How many agents the calibration runtime starts on this machine for ``threads`` workers
    (``what``: the option as typed, for the message): one per core at most -- more only
    compete for the cores and each holds the model -- said in one line when capped."""
    cores = usable_cores()
    if threads <= cores:
        return max(1, threads)
    if say is not None:
        say(f"warning: {what} is more than the {cores} core(s) of this machine: calibrating "
            f"with {cores} agent worker(s), one per core (the table does not depend on it)")
    return cores


def transfer_summary(devices: Sequence[Any]) -> dict[str, Any]:
    """Bytes moved to/from the devices and, for boards, the time spent connecting/moving."""
    out: dict[str, Any] = {
        "bytes_pushed": sum(d.bytes_pushed for d in devices),
        "bytes_fetched": sum(d.bytes_fetched for d in devices),
    }
    timings: dict[str, float] = {}
    for d in devices:
        for k, v in getattr(d, "timings_s", {}).items():
            timings[k] = timings.get(k, 0.0) + v
    if timings:
        out["transfer_timings_s"] = timings
    return out


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


