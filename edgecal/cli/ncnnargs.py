"""ncnn2table's own ``key=value`` command line, parsed exactly as the C++ tool parses it.

Keys match by prefix (``threads=4`` is ``thread``), bracket groups are split like
``strtok(value, "[]")``, unknown keys are ignored (we also say so, which ncnn2table does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgecal.calib.methods import METHOD_NAMES, METHOD_NAMES_TEXT, Method
from edgecal.errors import UsageError
from edgecal.inputs.arguments import MAX_THREADS

NCNN2TABLE_KEYS = ("mean", "norm", "shape", "pixel", "thread", "method", "type")
NCNN2TABLE_USAGE = (
    "usage: edgecal ncnn2table [--device NAME] <param> <bin> <list0[,list1,...]> <table> "
    "[mean=[104,117,123],...] [norm=[0.017,...],...] [shape=[224,224,3],...] "
    "[pixel=BGR,...] [thread=8] [method=kl|aciq|eq] [type=0|1]"
)


def bracket_groups(value: str, what: str) -> list[list[float]]:
    """``[a,b,c],[d]`` -> ``[[a, b, c], [d]]``; a bare ``a,b,c`` is one group.  ``what``: the
    option or key the value was given to (``--mean``, ``mean=``), named in errors."""
    groups: list[list[float]] = []
    for token in value.replace("]", "[").split("["):
        token = token.strip()
        if not token or set(token) <= {","}:
            continue
        items = token.split(",")
        if any(not x.strip() for x in items):
            raise UsageError(
                f"{what} {value!r}: an empty item (two commas in a row, or one at an end)",
                hint="give one number between commas, e.g. 104,117,123",
            )
        try:
            groups.append([float(x) for x in items])
        except ValueError:
            raise UsageError(
                f"{what} {value!r} is not a list of numbers",
                hint="give numbers between commas, e.g. 104,117,123",
            ) from None
    return groups


@dataclass
class Ncnn2TableArgs:
    param: str
    bin: str
    lists: list[str] | None  # None: weight-only table
    table: str
    mean: list[list[float]] = field(default_factory=list)
    norm: list[list[float]] = field(default_factory=list)
    shape: list[list[int]] = field(default_factory=list)
    pixel: list[str] = field(default_factory=list)
    thread: int | None = None
    method: str = Method.KL.value
    type: int = 0
    warnings: list[str] = field(default_factory=list)


def parse_ncnn2table(argv: list[str]) -> Ncnn2TableArgs:
    if len(argv) < 3 or any(a.startswith("-") and a != "-" for a in argv):
        raise UsageError(NCNN2TABLE_USAGE)
    if len(argv) >= 4 and "=" not in argv[3]:
        args = Ncnn2TableArgs(argv[0], argv[1], argv[2].split(","), argv[3])
        rest = argv[4:]
    else:
        args = Ncnn2TableArgs(argv[0], argv[1], None, argv[2])
        rest = argv[3:]
    for arg in rest:
        if "=" not in arg:
            raise UsageError(f"unrecognized arg {arg!r}", hint=NCNN2TABLE_USAGE)
        key, value = arg.split("=", 1)
        name = next((k for k in NCNN2TABLE_KEYS if key.startswith(k)), None)
        if name is None:
            args.warnings.append(
                f"unknown key {key!r} ignored (ncnn2table ignores it too); "
                f"known keys: {', '.join(NCNN2TABLE_KEYS)}"
            )
        elif name in ("mean", "norm"):
            setattr(args, name, bracket_groups(value, f"{name}="))
        elif name == "shape":
            groups = bracket_groups(value, "shape=")
            if any(not math.isfinite(v) or v != int(v) for g in groups for v in g):
                raise UsageError(f"shape={value}: sizes must be whole numbers")
            args.shape = [[int(v) for v in g] for g in groups]
        elif name == "pixel":
            args.pixel = [p.strip() for p in value.split(",") if p.strip()]
        elif name == "thread":
            try:
                args.thread = int(value)
            except ValueError:
                raise UsageError(f"thread={value} is not a whole number") from None
            if not 0 <= args.thread <= MAX_THREADS:
                raise UsageError(
                    f"thread={value}: give a whole number from 0 to {MAX_THREADS} (0: every core)"
                )
        elif name == "method":
            if value not in METHOD_NAMES:
                raise UsageError(
                    f"method={value} not implemented yet !", hint=f"use {METHOD_NAMES_TEXT}"
                )
            args.method = value
        elif name == "type":
            if value not in ("0", "1"):
                raise UsageError(f"type={value}: use 0 (image lists) or 1 (npy lists)")
            args.type = int(value)
    return args
