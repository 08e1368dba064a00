"""Command-line plumbing every command shares: option groups (inputs, devices), the input
specs and devices they name, and writing outputs (atomically) and JSON."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

from edgecal.cli.ncnnargs import bracket_groups
from edgecal.errors import UsageError
from edgecal.files.fsnames import printable
from edgecal.files.outputs import write_outputs as write_outputs  # one place for output files
from edgecal.inputs.arguments import MAX_THREADS
from edgecal.quality.rundoc import json_text


def command_line(args: argparse.Namespace) -> list[str]:
    """The command as typed (recorded in run directories)."""
    return ["edgecal", *getattr(args, "argv", sys.argv[1:])]


def err(text: str) -> None:
    sys.stderr.write(printable(text) + "\n")  # a non-UTF-8 file name shows as \xNN


def _floats(text: str, what: str) -> tuple[float, ...]:
    groups = bracket_groups(text, what)
    if len(groups) != 1 or not groups[0]:
        raise UsageError(f"{what} {text!r}: give comma-separated numbers, e.g. 104,117,123")
    return tuple(groups[0])


def _ints(text: str, what: str) -> tuple[int, ...]:
    values = _floats(text, what)
    if any(v != int(v) for v in values):
        raise UsageError(f"{what} {text!r}: sizes must be whole numbers")
    return tuple(int(v) for v in values)


def print_json(obj: Any) -> None:
    """``obj`` on standard output as strict JSON (every command's ``--json``): inf/nan as the
    strings "inf", "-inf", "nan", as every run document writes them."""
    sys.stdout.write(json_text(obj))


@dataclass(frozen=True)
class Number:
    """What a float option may be: finite and within ``lo``..``hi`` (``lo`` itself excluded
    when ``above``); ``what`` says so in the error (``give a fraction in 0..1``)."""

    what: str
    lo: float = 0.0
    hi: float = math.inf
    above: bool = False
    whole: bool = False  # an int option: whole numbers only

    def parse(self, text: str, option: str) -> float:
        """``text`` (the value of ``option``) as a float (an int when :attr:`whole`), else a
        :class:`UsageError` naming the option and what to give."""
        try:
            value: float = int(text) if self.whole else float(text)
        except ValueError:
            kind = "a whole number" if self.whole else "a number"
            raise UsageError(f"{option} {text!r}: not {kind}", hint=f"give {self.what}") from None
        low_ok = value > self.lo if self.above else value >= self.lo
        if not (math.isfinite(value) and low_ok and value <= self.hi):
            raise UsageError(f"{option} {text}: give {self.what}")
        return value


class NumberOption(argparse.Action):
    """A float option within its :class:`Number` (``add_argument(..., action=NumberOption,
    within=POINTS)``): NaN, inf or a value outside it is a usage error naming the option (one
    line, exit 2) while the arguments are read, before any work."""

    def __init__(self, option_strings: list[str], dest: str, *, within: Number, **kw: Any) -> None:
        super().__init__(option_strings, dest, **kw)
        self.within = within

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        setattr(ns, self.dest, self.within.parse(str(values), opt or self.dest))


#: The option numbers: points, seconds, MiB, tolerances (0 or more); a speed-up factor (more
#: than 0); fractions (accuracy, agreement, a probability); cosines.
NON_NEGATIVE = Number("a finite number >= 0")
POINTS = Number("points, a finite number >= 0 (e.g. 0.5)")
SECONDS = Number("seconds, a finite number >= 0")
MIB = Number("a number of MiB >= 0 (finite)")
THREADS = Number(f"a whole number from 1 to {MAX_THREADS}", lo=1, hi=MAX_THREADS, whole=True)
TRIES = Number("a whole number >= 1", lo=1, whole=True)
COUNT = Number("a whole number >= 0", whole=True)
POSITIVE = Number("a finite number > 0", above=True)
FRACTION = Number("a fraction in 0..1 (e.g. 0.95 for 95%)", hi=1.0)
PROBABILITY = Number("a probability in 0..1", hi=1.0)
COSINE = Number("a cosine in -1..1", lo=-1.0, hi=1.0)


class Once(argparse.Action):
    """A value option given at most once: ``--table A --table B`` is a usage error, not B."""

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        if getattr(ns, f"_given_{self.dest}", False):
            raise argparse.ArgumentError(self, "given twice: give it once")
        setattr(ns, f"_given_{self.dest}", True)
        setattr(ns, self.dest, values)


class ListAction(argparse.Action):
    """--images and --npy append (kind, path) to one ordered list: inputs in given order."""

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        items = list(getattr(ns, self.dest) or [])
        items.append(("npy" if opt == "--npy" else "image", values))
        setattr(ns, self.dest, items)


def add_inputs(p: argparse.ArgumentParser, *, multi_device: bool = False) -> None:
    p.add_argument(
        "--images",
        dest="lists",
        action=ListAction,
        metavar="LIST|DIR",
        help="image list file (one path per line) or folder; once per input",
    )
    p.add_argument(
        "--npy",
        dest="lists",
        action=ListAction,
        metavar="LIST",
        help="list of float32 .npy files, for a tensor input",
    )
    p.add_argument(
        "--mean",
        action="append",
        default=[],
        help="per image input, one value per channel of --pixel, e.g. 104,117,123 (default: 0 "
        "for every channel)",
    )
    p.add_argument(
        "--norm",
        action="append",
        default=[],
        help="per image input, one value per channel of --pixel, e.g. 0.017,... (default: 1 "
        "for every channel)",
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        help="per input: W,H[,C] for images (C: the --pixel type's channels; a 0 side follows "
        "the image's aspect ratio, 0,0 is its own size), w,h,(d),c for npy (default: images at "
        "their own size, npy files of any shape)",
    )
    p.add_argument(
        "--pixel",
        action="append",
        default=[],
        help="BGR|RGB|GRAY|RGBA|BGRA, per image input (default: BGR)",
    )
    p.add_argument(
        "--threads",
        action=NumberOption,
        within=THREADS,
        default=None,
        help="calibration runtime: agent workers over the images (default 1; on "
        "this machine at most one per core); "
        "deployed runtime: ncnn threads (default: the board profile's, or all cores)",
    )
    add_device(p, multi=multi_device)


def add_device(p: argparse.ArgumentParser, *, multi: bool = False) -> None:
    p.add_argument(
        "--device",
        default=None,
        metavar="NAME|USER@HOST[:PORT]|adb:SERIAL|labgrid:PLACE|local",
        action="append" if multi else "store",
        help="where to run: a board or phone of the boards file, user@host[:port] over SSH, "
        "adb:SERIAL (an Android phone over adb), labgrid:PLACE (a place of a labgrid farm), "
        "local (default) or local:native (this machine, the native agent)"
        + ("; repeat it for several boards" if multi else ""),
    )
    if multi:
        p.add_argument(
            "--labgrid-match",
            action="append",
            default=[],
            metavar="PATTERN",
            help="every labgrid place PATTERN matches (a glob over the names, or "
            "key=value,... of their tags), as --device labgrid:PATTERN",
        )
    p.add_argument(
        "--labgrid-wait",
        action=NumberOption,
        within=SECONDS,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for a labgrid place another client holds (default: the "
        "boards file's [labgrid] wait_s, else 0: refused at once)",
    )
    add_boards_file(p, whose_key="a board's")


def add_boards_file(p: argparse.ArgumentParser, *, whose_key: str) -> None:
    """``--boards FILE`` and ``--accept-new-host-key``: how the boards are reached."""
    p.add_argument(
        "--boards", default=None, metavar="FILE", help="boards file (default: $EDGECAL_BOARDS)"
    )
    p.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help=f"accept and record {whose_key} unknown SSH host key (never a changed one)",
    )


def check_boards_file(path: str | None) -> None:
    """``--boards FILE`` read at once, whether or not a device of it is used: a file that is
    missing or is not a boards file is an error naming it, never quietly ignored (the API's
    rule: :func:`edgecal.boards.open.boards_arg`)."""
    from edgecal.boards.open import boards_arg

    boards_arg(path, "--boards")


def add_json(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--json``: print the command's result as a JSON document."""
    p.add_argument("--json", action="store_true", help=help)


def add_metric(p: argparse.ArgumentParser, what: str = "also measure") -> None:
    """``--metric``, ``--charset``, ``--iou-threshold``: the task metric (the ``metric``,
    ``charset`` and ``iou_threshold`` of the API's use cases); ``what`` the command does with
    it (tune: "tune for")."""
    p.add_argument(
        "--metric",
        metavar="NAME|MODULE:FUNCTION",
        help=f"{what} a task metric on all of the model's outputs: top1, fidelity "
        "(cosine/SQNR of every output), ctc (greedy CTC text, exact-string rate), iou "
        "(dense-map IoU), or your own fn(fp32_outputs, int8_outputs, labels) as module:function "
        "or path/to/file.py:function (default: none; the top-1 figures as always)",
    )
    p.add_argument(
        "--charset",
        metavar="FILE",
        help="--metric ctc: the character list, one per line (line i is class i+1; class 0 is "
        "the blank); default: classes shown as numbers",
    )
    p.add_argument(
        "--iou-threshold",
        action=NumberOption,
        within=PROBABILITY,
        default=None,
        metavar="P",
        help="--metric iou: a one-channel map's binarization threshold (default 0.3)",
    )
