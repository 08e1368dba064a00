"""``edgecal calibrate``: one device or a fleet, with a run directory that survives faults.

``--device`` repeated (or ``--group NAME`` of the boards file) shares the shards between the
boards; every shard's answer lands in the run directory (``--run-dir``, else a temporary one
kept only when the run fails), so ``--resume RUN`` finishes an interrupted run without redoing
finished shards and writes the table an uninterrupted run would have written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgecal.calib.build import format_scale_line
from edgecal.calib.methods import CALIBRATE_NAMES, Method
from edgecal.cli.inputs import inputs_from_args
from edgecal.cli.options import TRIES, NumberOption, Once, add_inputs, add_json, err, print_json
from edgecal.cli.progress import run_hooks
from edgecal.errors import UsageError
from edgecal.files.outputs import Output
from edgecal.fleet.scheduler import RetryPolicy
from edgecal_agent.messages import RUNTIMES

if TYPE_CHECKING:
    from edgecal.api.calibrate import Calibration
    from edgecal.fleet.prepare import Devices


def add_calibrate_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "calibrate", help="write an ncnn calibration table (one device or a fleet; resumable)"
    )
    p.add_argument("param", nargs="?", default=None, metavar="MODEL.param")
    p.add_argument("bin", nargs="?", default=None, metavar="MODEL.bin")
    add_inputs(p, multi_device=True)
    p.add_argument(
        "--group", metavar="NAME", help="the boards of this group of the boards file (a fleet)"
    )
    p.add_argument("--method", choices=CALIBRATE_NAMES, default=Method.KL.value)
    p.add_argument("--runtime", choices=RUNTIMES, default="calibration")
    p.add_argument("--out", "-o", action=Once, help="table file to write")
    p.add_argument("--histograms-out", help="also save the merged histograms (.npz)")
    p.add_argument("--allow-zero-blobs", action="store_true")
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="keep the manifest and every shard's answer here (default: a "
        "temporary folder, kept only if the run fails)",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="finish the run of this run directory (model, images and options come "
        "from its manifest; --device may name other boards)",
    )
    p.add_argument(
        "--mixed-boards",
        action="store_true",
        help="allow boards of different profiles in one run (their activations "
        "differ, so the table is a blend)",
    )
    p.add_argument(
        "--golden",
        action="store_true",
        help="first run a small reference model on every board and leave out a "
        "board whose results differ from this machine's",
    )
    p.add_argument(
        "--retries",
        action=NumberOption,
        within=TRIES,
        default=RetryPolicy().attempts,
        metavar="N",
        help=f"tries per shard on a board before the board is given up and its "
        f"shards go to the others (default {RetryPolicy().attempts})",
    )
    add_json(p)
    p.set_defaults(func=cmd_calibrate, lists=[])


# ----------------------------------------------------------------------------- the command


def devices_from_options(args: argparse.Namespace) -> Devices:
    """``--device``/``--group``/``--boards`` and their flags as :class:`Devices`."""
    from edgecal.fleet.prepare import Devices

    device = getattr(args, "device", None)
    matches = [f"labgrid:{m}" for m in getattr(args, "labgrid_match", None) or []]
    if matches:
        device = [*([device] if isinstance(device, str) else device or []), *matches]
    return Devices.of(
        device,
        labgrid_wait_s=getattr(args, "labgrid_wait", None),
        group=getattr(args, "group", None),
        boards=getattr(args, "boards", None),
        accept_new_host_key=bool(getattr(args, "accept_new_host_key", False)),
        mixed_boards=bool(getattr(args, "mixed_boards", False)),
        golden=bool(getattr(args, "golden", False)),
    )


def layer_lines(result: Calibration) -> list[str]:
    return [format_scale_line(info) for info in result.layers]


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edgecal.api.calibrate import calibrate, resume

    json_out = [Output("--json", "-", text=True)] if args.json else []
    with run_hooks(args) as hooks:
        if args.resume:
            given = [
                name
                for name, v in (
                    ("MODEL", args.param),
                    ("--images/--npy", args.lists),
                    ("--out", args.out),
                    ("--run-dir", args.run_dir),
                )
                if v
            ]
            if given:
                raise UsageError(
                    f"--resume takes the model, samples and outputs from the run; "
                    f"do not give {', '.join(given)}",
                    hint="give only --resume RUN [--device …]",
                )
            result = resume(
                args.resume,
                devices=devices_from_options(args),
                retries=args.retries,
                also_writes=json_out,
                **hooks,
            )
        else:
            if args.param is None or args.bin is None:
                raise UsageError("give the model (MODEL.param MODEL.bin), or --resume RUN")
            if not args.out:
                raise UsageError("give --out TABLE (the table file to write)")
            if not args.lists:
                raise UsageError("give the calibration samples: --images LIST|DIR (or --npy LIST)")
            result = calibrate(
                (args.param, args.bin),
                inputs_from_args(args, (args.param, args.bin)),
                out=args.out,
                method=args.method,
                devices=devices_from_options(args),
                runtime=args.runtime,
                threads=args.threads,
                histograms_out=args.histograms_out,
                run_dir=args.run_dir,
                allow_zero_blobs=args.allow_zero_blobs,
                retries=args.retries,
                also_writes=json_out,
                **hooks,
            )
    for w in result.warnings:
        err(f"edgecal: warning: {w}")
    if len(result.fleet) > 1 or any(a["retried"] or a["lost"] for a in result.fleet):
        for line in fleet_lines(result.fleet):
            err(line)
    if args.json:
        print_json(result.to_dict())
    else:
        for line in layer_lines(result):
            err(line)
        for r in result.eq:
            err(f"eq {r.layer}: single-layer cosine {r.cosine_kl:.6f} (kl) -> {r.cosine_eq:.6f}")
        print(
            f"wrote {result.table_path} ({result.method}, {result.n_samples} samples)",
            file=sys.stderr if result.table_path == "-" else sys.stdout,
        )
    return 0


def fleet_lines(accounts: Sequence[dict[str, Any]]) -> list[str]:
    from edgecal.cli.render import table_lines

    return table_lines(
        ("board", "shards", "samples", "retried", "taken over", "collected", "busy s", "state"),
        [
            (
                a["board"],
                a["shards"],
                a["samples"],
                a["retried"],
                a["reassigned"],
                a["collected"],
                f"{a['seconds']:.1f}",
                f"LOST: {a['lost']}" if a["lost"] else "ok",
            )
            for a in accounts
        ],
        right=range(1, 7),
    )
