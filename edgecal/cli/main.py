"""The ``edgecal`` command line: the only place that prints results and maps errors to exits."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from edgecal import __version__
from edgecal.calib.build import format_scale_line
from edgecal.calib.methods import OFFLINE_NAMES, RULE_NAMES, Method
from edgecal.cli.calibrate import devices_from_options, layer_lines
from edgecal.cli.help import ArgumentParser
from edgecal.cli.inputs import make_inputs, say_on_stderr
from edgecal.cli.logsetup import configure_logging
from edgecal.cli.ncnnargs import parse_ncnn2table
from edgecal.cli.options import Once, add_device, add_json, check_boards_file, err, print_json
from edgecal.cli.progress import ProgressBars
from edgecal.cli.stdout import guarded_stdout
from edgecal.errors import EdgecalError, UsageError
from edgecal.files.outputs import Output, check_outputs, input_paths
from edgecal_agent.messages import RUNTIMES

log = logging.getLogger("edgecal")

SUCCESS_LINE = (
    "ncnn int8 calibration table create success, best wish for your int8 inference has a low "
    "accuracy loss...\\(^0^)/...233..."
)


# ----------------------------------------------------------------------------- helpers
# ----------------------------------------------------------------------------- commands


DROPIN_HELP = {
    "ncnn2table": "ncnn2table's own: PARAM BIN [LIST[,LIST...]] TABLE [mean=[...]] "
    "[norm=[...]] [shape=[w,h,c]] [pixel=BGR|RGB|GRAY|...] [thread=N] (default: "
    "every core) [method=kl|aciq|eq] (default: kl) [type=0|1] (default: 0, image "
    "lists); without a LIST, a weight-only table",
    "ncnn2int8": "ncnn2int8's own: INPARAM INBIN OUTPARAM OUTBIN [TABLE] (default: no table, "
    "as ncnn2int8: weights stored as fp16, only Gemm and SDPA quantized)",
}
DROPIN_OPTIONS = ("--device", "--runtime", "--boards")
DROPIN_FLAGS = ("--accept-new-host-key",)


def _pop_options(
    args: argparse.Namespace, names: Sequence[str], flags: Sequence[str] = DROPIN_FLAGS
) -> list[str]:
    """Take ``--device X`` style options (and ``flags``) from anywhere in a drop-in's
    ncnn-style argument list."""
    rest: list[str] = []
    items = list(args.rest)
    while items:
        item = items.pop(0)
        key, eq, value = item.partition("=")
        if item in flags:
            setattr(args, item.lstrip("-").replace("-", "_"), True)
        elif key in names:
            if not eq:
                if not items:
                    raise UsageError(f"{key} needs a value")
                value = items.pop(0)
            setattr(args, key.lstrip("-").replace("-", "_"), value)
        else:
            rest.append(item)
    check_boards_file(getattr(args, "boards", None))
    return rest


def cmd_ncnn2table(args: argparse.Namespace) -> int:
    from edgecal.api.calibrate import calibrate
    from edgecal.api.table import weight_table
    from edgecal.fleet.prepare import Devices, usable_cores
    from edgecal.inputs.model import load_model
    from edgecal.inputs.spec import input_specs

    a = parse_ncnn2table(_pop_options(args, DROPIN_OPTIONS))
    for w in a.warnings:
        err(f"edgecal: warning: {w}")
    outs = [Output("table", a.table, text=True)]
    ins = [
        *input_paths("param", [a.param]),
        *input_paths("bin", [a.bin]),
        *input_paths("list", a.lists or []),
    ]
    check_outputs(outs, ins)  # before any work
    model = load_model(Path(a.param), Path(a.bin))
    if a.lists is None:
        weight_table(model, method=a.method, out=a.table)
        if model.calibrated_layers:
            err(
                "warning: calibration dataset not provided, skip activation calibration and "
                "generate weight-only table"
            )
        return 0
    n_in = len(model.input_blobs)
    kind = "npy" if a.type == 1 else "image"
    if a.type == 0:
        for name, values in (("means", a.mean), ("norms", a.norm), ("pixels", a.pixel)):
            if len(values) != n_in:
                raise UsageError(
                    f"expect {n_in} {name}, but got {len(values)}",
                    hint="give one bracket group per input, e.g. mean=[0],[127.5]",
                )
    if len(a.shape) != n_in:
        raise UsageError(f"expect {n_in} shapes, but got {len(a.shape)}")
    where = f" (lists: {','.join(a.lists)})"
    inputs = make_inputs(
        [(kind, p) for p in a.lists],
        mean=[tuple(m) for m in a.mean] if a.type == 0 else [],
        norm=[tuple(m) for m in a.norm] if a.type == 0 else [],
        shape=[tuple(s) for s in a.shape],
        pixel=a.pixel if a.type == 0 else [],
        where=where,
    )
    input_specs(str(model.param_path), model.input_blobs, inputs, where)  # checked now
    for name, groups in (("mean", a.mean), ("norm", a.norm), ("shape", a.shape)):
        if groups:
            err(
                f"{name} = "
                + ",".join(
                    "[" + ",".join(f"{v:f}" if name != "shape" else str(v) for v in g) + "]"
                    for g in groups
                )
            )
    if a.pixel:
        err("pixel = " + ",".join(a.pixel))
    threads = a.thread if a.thread else usable_cores()
    err(f"thread = {threads}\nmethod = {a.method}\n---------------------------------------")
    devices = Devices.of(
        args.device,
        boards=args.boards,
        accept_new_host_key=bool(getattr(args, "accept_new_host_key", False)),
        threads_label="thread={}",
    )
    with ProgressBars(enabled=not args.quiet) as bars:
        run = calibrate(
            model,
            inputs,
            out=a.table,
            method=a.method,
            devices=devices,
            runtime=args.runtime,
            threads=threads,
            resumable=False,
            ncnn_compat=True,
            progress=bars.task,
            say=say_on_stderr(),
        )
    for w in run.warnings:
        err(f"edgecal: warning: {w}")
    for line in layer_lines(run):
        err(line)
    err(SUCCESS_LINE)
    counts = [len(model.calibrated_layers)] + [
        sum(1 for layer in model.param.layers if layer.type == t)
        for t in ("Embed", "MultiHeadAttention", "RNN", "LSTM", "GRU")
    ]
    for c in counts:
        print(f"param:{c}", file=sys.stderr if a.table == "-" else sys.stdout)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgecal.api.quantize import quantize

    if args.table and args.no_table:
        raise UsageError("give --table or --no-table, not both")
    if not args.table and not args.no_table:
        raise UsageError(
            f"quantize {args.in_param} needs --table TABLE: without a table no layer is made "
            "int8 (only the weights are stored as fp16)",
            hint="give --table model.table (from `edgecal calibrate`), or --no-table for "
            "what ncnn2int8 does without a table",
        )
    result = quantize(
        (args.in_param, args.in_bin),
        args.out_param,
        args.out_bin,
        table=args.table or None,
        keep_fp32=args.keep_fp32,
        ncnn_compat=args.ncnn_compat,
    )
    for w in result.warnings:
        err(f"edgecal: warning: {w}")
    if args.json:
        print_json(result.to_dict())
    else:
        print(
            f"wrote {args.out_param} and {args.out_bin}: {len(result.quantized)} layer(s) "
            f"int8, {len(result.kept_float)} kept in float"
            + (f" ({', '.join(result.kept_float)})" if result.kept_float else "")
        )
    return 0


def cmd_ncnn2int8(args: argparse.Namespace) -> int:
    from edgecal.api.quantize import quantize

    rest = _pop_options(args, DROPIN_OPTIONS, (*DROPIN_FLAGS, "--ncnn-compat"))
    if len(rest) not in (4, 5):
        raise UsageError(
            "usage: edgecal ncnn2int8 [inparam] [inbin] [outparam] [outbin] [calibration table]"
        )
    if rest[1] == "null":
        raise UsageError(
            "inbin 'null' (random weights) is not supported", hint="pass the model's real .bin"
        )
    result = quantize(
        (rest[0], rest[1]),
        rest[2],
        rest[3],
        table=rest[4] if len(rest) == 5 else None,
        ncnn_compat=getattr(args, "ncnn_compat", False),
    )
    for w in result.warnings:
        err(f"edgecal: warning: {w}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from edgecal.api.table import table_from_histograms

    result = table_from_histograms(
        args.histograms, method=args.method, param=args.param, bin=args.bin, out=args.out
    )
    for w in result.warnings:
        err(f"edgecal: warning: {w}")
    for info in result.build.per_layer:
        err(format_scale_line(info))
    print(
        f"wrote {args.out} ({args.method}, from {args.histograms})",
        file=sys.stderr if args.out == "-" else sys.stdout,
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Two tables (per-layer scale differences) or two histogram files (.npz)."""
    from edgecal.api.compare import compare_files
    from edgecal.cli.render import render_histogram_diff, render_table_diff

    a, b = Path(args.a), Path(args.b)
    rows = compare_files(a, b)
    if args.json:
        print_json([r.to_dict() for r in rows.rows])
    else:
        print(f"a = {a}\nb = {b}")
        print(
            render_histogram_diff(rows.histograms)
            if rows.histograms is not None
            else render_table_diff(rows.tables or [])
        )
    return 0


def cmd_hello(args: argparse.Namespace) -> int:
    with devices_from_options(args).open_one(args.device, 1) as device:
        info = device.hello()
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="edgecal", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgecal {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    from edgecal.cli.calibrate import add_calibrate_command

    add_calibrate_command(sub)

    p = sub.add_parser("table", help="thresholds from saved histograms, no device")
    p.add_argument("--histograms", required=True)
    p.add_argument("--method", choices=OFFLINE_NAMES + RULE_NAMES, default=Method.KL.value)
    p.add_argument("--param")
    p.add_argument("--bin")
    p.add_argument("--out", "-o", action=Once, required=True)
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("quantize", help="write the int8 model (what ncnn2int8 does)")
    p.add_argument("in_param")
    p.add_argument("in_bin")
    p.add_argument("out_param")
    p.add_argument("out_bin")
    p.add_argument(
        "--table",
        action=Once,
        help="the calibration table (of `edgecal calibrate` or "
        "ncnn2table); required unless --no-table",
    )
    p.add_argument(
        "--no-table",
        action="store_true",
        help="no table, as ncnn2int8 without one: weights stored as fp16, only Gemm "
        "and SDPA quantized (an error for Embed, MHA, RNN, LSTM, GRU)",
    )
    p.add_argument(
        "--keep-fp32",
        nargs="+",
        default=[],
        metavar="LAYER",
        help="layers to keep in float (default: none)",
    )
    add_json(p)
    p.add_argument(
        "--ncnn-compat",
        action="store_true",
        help="write ncnn2int8's bytes exactly, its quirks included (README: 'What is "
        "exact'); default off: edgecal's safer numbers",
    )
    p.set_defaults(func=cmd_quantize)

    from edgecal.cli.validate import add_validate_command

    add_validate_command(sub)

    from edgecal.cli.tune import add_tune_command

    add_tune_command(sub)

    from edgecal.cli.gate import add_check_command
    from edgecal.cli.validate import add_validation_args

    add_check_command(sub, lambda q: add_validation_args(q, optional_model=True))

    from edgecal.cli.report import add_report_command

    add_report_command(sub)

    p = sub.add_parser("compare", help="per-layer differences of two tables or histogram files")
    p.add_argument("a", metavar="A.table|A.npz")
    p.add_argument("b", metavar="B.table|B.npz")
    add_json(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("hello", help="what the device's agent reports")
    add_device(p)
    add_json(p)
    p.set_defaults(func=cmd_hello)

    for name, func in (("ncnn2table", cmd_ncnn2table), ("ncnn2int8", cmd_ncnn2int8)):
        extra = "; --ncnn-compat: its exact bytes, quirks included" if name == "ncnn2int8" else ""
        p = sub.add_parser(name, help=f"drop-in for ncnn's {name} (same arguments{extra})")
        add_device(p)
        p.add_argument("--runtime", choices=RUNTIMES, default="calibration")
        if name == "ncnn2int8":  # anywhere: before the arguments here, among them (_pop_options)
            p.add_argument(
                "--ncnn-compat",
                action="store_true",
                help="write ncnn2int8's bytes exactly, its quirks included (README: 'What is "
                "exact'); default off: edgecal's safer numbers",
            )
        p.add_argument("rest", nargs=argparse.REMAINDER, metavar="ARG", help=DROPIN_HELP[name])
        p.set_defaults(func=func)

    from edgecal.cli.board import add_board_commands

    add_board_commands(sub)

    from edgecal.cli.agent import add_agent_commands

    add_agent_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="surrogateescape")  # non-UTF-8 file names print as given
    # standard output guarded from here on: a write that fails is an error naming it (exit 2,
    # as any output that cannot be written), a reader gone (`| head -1`) ends nothing
    with guarded_stdout():
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, bad usage: argparse printed it
            return _flushed(int(exc.code or 0))
        except EdgecalError as exc:  # --help or --version could not be printed
            return _report(exc)
        args.argv = argv  # what run directories record
        configure_logging(args.debug)  # libraries that log secrets stay at WARNING
        return _run(args)


def _report(exc: EdgecalError, debug: bool = False) -> int:
    """``exc`` on stderr, one line (and its detail below); its exit code."""
    if debug:
        traceback.print_exc()
    # one line: what went wrong (naming the file or board) and the fix; more detail (an
    # agent's last stderr lines) below it
    first, _, more = exc.message.partition("\n")
    err(f"edgecal: error: {first}" + (f" (fix: {exc.hint})" if exc.hint else ""))
    if more:
        err(more)
    return exc.exit_code


def _flushed(code: int) -> int:
    """``code`` once standard output holds what was printed, else the write error's."""
    try:
        sys.stdout.flush()
    except EdgecalError as exc:
        return _report(exc)
    return code


def _run(args: argparse.Namespace) -> int:
    """The command of ``args``, its errors mapped to exit codes."""
    from edgecal.cli.interrupt import Terminated, sigterm_raises

    try:
        with sigterm_raises():
            check_boards_file(getattr(args, "boards", None))
            code = int(args.func(args))
            sys.stdout.flush()  # the output is the command's: failing to write it is its error
        return code
    except EdgecalError as exc:
        return _report(exc, args.debug)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM (Terminated)
        term = isinstance(exc, Terminated)
        note = getattr(exc, "edgecal_note", None)
        err(f"edgecal: {'terminated' if term else 'interrupted'}" + (f" ({note})" if note else ""))
        return 143 if term else 130
    finally:
        with contextlib.suppress(EdgecalError):  # what an error left unprinted, if it can be
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
