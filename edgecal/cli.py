"""The ``edgecal`` command line: the only place that prints results and maps errors to exits."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgecal import __version__
from edgecal.atomicfile import write_bytes_atomic
from edgecal.calib.build import format_scale_line
from edgecal.calib.table import CalibrationTable, parse_table, render_table
from edgecal.errors import EdgecalError, TableError, UsageError
from edgecal.inputs import SampleSource, make_sample_source, read_list
from edgecal.inputspec import PIXEL_TYPES, InputSpec
from edgecal.model import Model, load_model
from edgecal.ncnnargs import bracket_groups, parse_ncnn2table
from edgecal.userfile import read_text

log = logging.getLogger("edgecal")

SUCCESS_LINE = (
    "ncnn int8 calibration table create success, best wish for your int8 inference has a low "
    "accuracy loss...\\(^0^)/...233..."
)


# ----------------------------------------------------------------------------- helpers


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def write_outputs(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write several outputs so that none is left half-written (each is atomic)."""
    for path, data in files:
        try:
            write_bytes_atomic(path, data)
        except FileNotFoundError:
            raise UsageError(f"cannot write {path}: its folder does not exist") from None
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None


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
    """The InputSpecs of ``calibrate``/``validate`` style options (--images/--npy, --mean, ...)."""
    return build_specs(
        model, [kind for kind, _ in args.lists],
        mean=[_floats(v, "--mean") for v in args.mean],
        norm=[_floats(v, "--norm") for v in args.norm],
        shape=[_ints(v, "--shape") for v in args.shape],
        pixel=args.pixel,
    )


def open_device(args: argparse.Namespace, threads: int | None) -> Any:
    """The device named by ``--device`` (the local machine by default; a boards-file name or
    ``user@host[:port]`` for a board, see ``--boards`` and ``--accept-new-host-key``)."""
    from edgecal.boards import boards_file
    from edgecal.device.select import open_device as open_named

    return open_named(getattr(args, "device", None),
                      boards=boards_file(getattr(args, "boards", None)), threads=threads,
                      accept_new_host_key=bool(getattr(args, "accept_new_host_key", False)))


def effective_threads(args: argparse.Namespace, runtime: str) -> int:
    """``--threads``, or its default: 1 worker for calibration; for the deployed runtime the
    thread count the app would use (the board profile's, or every core of this machine)."""
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: must be at least 1")
        return int(args.threads)
    if runtime == "calibration":
        return 1
    from edgecal.boards import boards_file, resolve_board
    from edgecal.device.select import is_local

    if not is_local(getattr(args, "device", None)):
        board = resolve_board(args.device, boards_file(getattr(args, "boards", None)))
        profile = board.load_profile() if board is not None else None
        if profile is not None:
            return int(profile.threads)
    return os.cpu_count() or 1


@contextlib.contextmanager
def open_workers(args: argparse.Namespace, threads: int, runtime: str) -> Iterator[list[Any]]:
    """The devices a calibration runs on.  ``--threads N`` in the calibration runtime means N
    local agent workers over the images (ncnn2table's ``thread=``: each image runs
    single-threaded, images in parallel); in the deployed runtime it is the app's ncnn thread
    count.  A board is always one device (one SSH connection, one agent)."""
    from edgecal.device.select import is_local

    local = is_local(getattr(args, "device", None))
    workers = max(1, threads) if runtime == "calibration" and local else 1
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(open_device(args, threads)) for _ in range(workers)]


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


# ----------------------------------------------------------------------------- commands


def _calibrate_and_write(
    model: Model,
    source: SampleSource,
    *,
    method: str,
    threads: int,
    runtime: str,
    out: Path,
    histograms_out: Path | None,
    device_args: argparse.Namespace,
    allow_zero_blobs: bool,
    quiet: bool,
) -> tuple[Any, dict[str, Any]]:
    from edgecal.histfile import histograms_to_bytes
    from edgecal.pipeline import calibrate
    from edgecal.progress import ProgressBars

    with open_workers(device_args, threads, runtime) as devices, \
            ProgressBars(enabled=not quiet) as bars:
        run = calibrate(
            model, source, devices, method=method, threads=threads, runtime=runtime,
            keep_histograms=histograms_out is not None, allow_zero_blobs=allow_zero_blobs,
            progress=bars.task,
        )
        transfer = transfer_summary(devices)
    files = [(out, render_table(run.table).encode())]
    if histograms_out is not None:
        files.append((histograms_out, histograms_to_bytes(run.histograms)))
    write_outputs(files)
    return run, transfer


def _layer_lines(run: Any) -> list[str]:
    lines = []
    for info in run.build.per_layer:
        scale = run.table.blob_scale(info.name)
        if scale is not None and run.method == "eq":
            info = type(info)(info.name, info.absmax, 127.0 / float(scale), float(scale))
        lines.append(format_scale_line(info))
    return lines


def cmd_calibrate(args: argparse.Namespace) -> int:
    model = load_model(Path(args.param), Path(args.bin))
    specs = specs_from_options(model, args)
    lists = [read_list(Path(p)) for _, p in args.lists]
    source = make_sample_source(specs, lists)
    run, transfer = _calibrate_and_write(
        model, source, method=args.method, threads=effective_threads(args, args.runtime),
        runtime=args.runtime,
        out=Path(args.out), histograms_out=Path(args.histograms_out) if args.histograms_out
        else None, device_args=args, allow_zero_blobs=args.allow_zero_blobs,
        quiet=args.quiet,
    )
    for w in run.warnings:
        _err(f"edgecal: warning: {w}")
    if args.json:
        print_json(
            {
                "table": args.out,
                "histograms": args.histograms_out,
                "method": run.method,
                "n_samples": run.n_samples,
                "runtime": args.runtime,
                "layers": [
                    {"name": i.name, "absmax": float(i.absmax), "threshold": float(i.threshold),
                     "scale": float(i.scale)}
                    for i in run.build.per_layer
                ],
                "eq": [vars(r) for r in run.eq],
                "warnings": run.warnings,
                "timings_s": run.timings_s,
                "device": run.device,
                **transfer,
            }
        )
    else:
        for line in _layer_lines(run):
            _err(line)
        for r in run.eq:
            _err(f"eq {r.layer}: single-layer cosine {r.cosine_kl:.6f} (kl) -> {r.cosine_eq:.6f}")
        print(f"wrote {args.out} ({run.method}, {run.n_samples} samples)")
    return 0


DROPIN_OPTIONS = ("--device", "--runtime", "--boards")
DROPIN_FLAGS = ("--accept-new-host-key",)


def _pop_options(args: argparse.Namespace, names: Sequence[str],
                 flags: Sequence[str] = DROPIN_FLAGS) -> list[str]:
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
    return rest


def cmd_ncnn2table(args: argparse.Namespace) -> int:
    from edgecal.calib.build import build_table

    a = parse_ncnn2table(_pop_options(args, DROPIN_OPTIONS))
    for w in a.warnings:
        _err(f"edgecal: warning: {w}")
    model = load_model(Path(a.param), Path(a.bin))
    if a.lists is None:
        layers = [(layer, model.weights.get(layer.name, {})) for layer in model.param.layers]
        build = build_table(layers, None, a.method)
        if model.calibrated_layers:
            _err("warning: calibration dataset not provided, skip activation calibration and "
                 "generate weight-only table")
        write_outputs([(Path(a.table), render_table(build.table).encode())])
        return 0
    n_in = len(model.input_blobs)
    kind = "npy" if a.type == 1 else "image"
    if a.type == 0:
        for name, values in (("means", a.mean), ("norms", a.norm), ("pixels", a.pixel)):
            if len(values) != n_in:
                raise UsageError(f"expect {n_in} {name}, but got {len(values)}",
                                 hint="give one bracket group per input, e.g. mean=[0],[127.5]")
    if len(a.shape) != n_in:
        raise UsageError(f"expect {n_in} shapes, but got {len(a.shape)}")
    specs = build_specs(
        model, [kind] * len(a.lists),
        mean=[tuple(m) for m in a.mean] if a.type == 0 else [],
        norm=[tuple(m) for m in a.norm] if a.type == 0 else [],
        shape=[tuple(s) for s in a.shape], pixel=a.pixel if a.type == 0 else [],
        where=f" (lists: {','.join(a.lists)})",
    )
    for name, values in (("mean", a.mean), ("norm", a.norm), ("shape", a.shape)):
        if values:
            _err(f"{name} = " + ",".join("[" + ",".join(f"{v:f}" if name != "shape" else str(v)
                                                         for v in g) + "]" for g in values))
    if a.pixel:
        _err("pixel = " + ",".join(a.pixel))
    threads = a.thread if a.thread else (os.cpu_count() or 1)
    _err(f"thread = {threads}\nmethod = {a.method}\n---------------------------------------")
    lists = [read_list(Path(p), ncnn_compat=True) for p in a.lists]
    source = make_sample_source(specs, lists)
    run, _ = _calibrate_and_write(
        model, source, method=a.method, threads=threads, runtime=args.runtime,
        out=Path(a.table), histograms_out=None, device_args=args,
        allow_zero_blobs=False, quiet=args.quiet,
    )
    for w in run.warnings:
        _err(f"edgecal: warning: {w}")
    for line in _layer_lines(run):
        _err(line)
    _err(SUCCESS_LINE)
    counts = [len(model.calibrated_layers)] + [
        sum(1 for layer in model.param.layers if layer.type == t)
        for t in ("Embed", "MultiHeadAttention", "RNN", "LSTM", "GRU")
    ]
    for c in counts:
        print(f"param:{c}")
    return 0


def _quantize_and_write(
    in_param: Path, in_bin: Path, out_param: Path, out_bin: Path,
    table_path: Path | None, keep_fp32: Sequence[str],
) -> Any:
    from edgecal.int8.convert import quantize_model

    model = load_model(in_param, in_bin)
    table: CalibrationTable | None = None
    if table_path is not None:
        table = parse_table(read_text(table_path, "table"), source=str(table_path))
    try:
        text, data, report = quantize_model(
            model.param, model.weights, table, keep_fp32=keep_fp32
        )
    except TableError as exc:
        raise TableError(f"{table_path}: {exc.message}", hint=exc.hint) from None
    write_outputs([(out_param, text.encode()), (out_bin, data)])
    return report


def cmd_quantize(args: argparse.Namespace) -> int:
    report = _quantize_and_write(
        Path(args.in_param), Path(args.in_bin), Path(args.out_param), Path(args.out_bin),
        Path(args.table) if args.table else None, args.keep_fp32,
    )
    for w in report.warnings:
        _err(f"edgecal: warning: {w}")
    if args.json:
        print_json({"param": args.out_param, "bin": args.out_bin, "quantized": report.quantized,
                    "kept_float": report.kept_float, "fused": report.fused,
                    "warnings": report.warnings})
    else:
        print(f"wrote {args.out_param} and {args.out_bin}: {len(report.quantized)} layer(s) int8, "
              f"{len(report.kept_float)} kept in float"
              + (f" ({', '.join(report.kept_float)})" if report.kept_float else ""))
    return 0


def cmd_ncnn2int8(args: argparse.Namespace) -> int:
    rest = _pop_options(args, DROPIN_OPTIONS)
    if len(rest) not in (4, 5):
        raise UsageError("usage: edgecal ncnn2int8 [inparam] [inbin] [outparam] [outbin] "
                         "[calibration table]")
    if rest[1] == "null":
        raise UsageError("inbin 'null' (random weights) is not supported",
                         hint="pass the model's real .bin")
    report = _quantize_and_write(
        Path(rest[0]), Path(rest[1]), Path(rest[2]), Path(rest[3]),
        Path(rest[4]) if len(rest) == 5 else None, (),
    )
    for w in report.warnings:
        _err(f"edgecal: warning: {w}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from edgecal.histfile import load_histograms
    from edgecal.pipeline import table_from_histograms

    hs = load_histograms(Path(args.histograms))
    param = Path(args.param or hs.meta.get("param", ""))
    binf = Path(args.bin or hs.meta.get("bin", ""))
    model = load_model(param, binf)
    if (model.param_sha256, model.bin_sha256) != (hs.meta.get("param_sha256"),
                                                  hs.meta.get("bin_sha256")):
        raise UsageError(
            f"{args.histograms} was measured on another model than {param} / {binf}",
            hint="pass --param/--bin of the model the histograms were measured on",
        )
    if args.method == "eq":
        raise UsageError("method eq needs the device", hint="use 'edgecal calibrate --method eq'")
    build = table_from_histograms(model, hs, args.method)
    write_outputs([(Path(args.out), render_table(build.table).encode())])
    for w in build.warnings:
        _err(f"edgecal: warning: {w}")
    for info in build.per_layer:
        _err(format_scale_line(info))
    print(f"wrote {args.out} ({args.method}, from {args.histograms})")
    return 0


def _int8_for_validate(args: argparse.Namespace, model: Model, tmp: Path) -> Model:
    """The int8 model to validate: the given pair, or ``--table`` converted into ``tmp``."""
    from edgecal.int8.convert import quantize_model

    given = args.int8_param is not None
    if given == bool(args.table) or (given and args.int8_bin is None):
        raise UsageError("give either INT8.param INT8.bin or --table TABLE",
                         hint="with --table the int8 model is made in memory from the table")
    if given:
        return load_model(Path(args.int8_param), Path(args.int8_bin))
    table = parse_table(read_text(Path(args.table), "table"), source=str(args.table))
    try:
        text, data, _ = quantize_model(model.param, model.weights, table)
    except TableError as exc:
        raise TableError(f"{args.table}: {exc.message}", hint=exc.hint) from None
    param, binf = tmp / "int8.param", tmp / "int8.bin"
    write_outputs([(param, text.encode()), (binf, data)])
    return load_model(param, binf)


def _n_classes(model: Model) -> int | None:
    producer = model.param.producer(model.output_blobs[0])
    if producer is not None and producer.type == "InnerProduct":
        return producer.param_int(0, 0) or None
    return None


def cmd_validate(args: argparse.Namespace) -> int:
    import tempfile

    from edgecal.labels import labels_for, parse_labels
    from edgecal.progress import ProgressBars
    from edgecal.validate import check_same_network, validate

    model = load_model(Path(args.param), Path(args.bin))
    specs = specs_from_options(model, args)
    source = make_sample_source(specs, [read_list(Path(p)) for _, p in args.lists])
    labels = None
    if args.labels:
        mapping = parse_labels(read_text(Path(args.labels), "labels file"), args.labels)
        labels = labels_for(mapping, list(source.paths[0]), args.labels, _n_classes(model))
    threads = effective_threads(args, args.runtime)
    with tempfile.TemporaryDirectory(prefix="edgecal-int8-") as tmp:
        int8 = _int8_for_validate(args, model, Path(tmp))
        check_same_network(model.param, int8.param, args.param,
                           args.int8_param or f"the int8 model of {args.table}")
        with open_device(args, threads) as device, ProgressBars(not args.quiet) as bars:
            res = validate(device, model, int8, source, labels=labels, runtime=args.runtime,
                           threads=threads, progress=bars.task)
            res.device = {"name": device.name, **_device_facts(device)}
    doc = res.to_dict()
    doc.update(fp32={"param": args.param, "bin": args.bin, "param_sha256": model.param_sha256,
                     "bin_sha256": model.bin_sha256},
               int8={"param": args.int8_param, "bin": args.int8_bin, "table": args.table,
                     "param_sha256": int8.param_sha256, "bin_sha256": int8.bin_sha256})
    if args.save_baseline:
        write_outputs([(Path(args.save_baseline),
                        (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())])
    if args.json:
        print_json(doc)
        return 0
    print(f"{res.n_samples} images on {res.device.get('name')} "
          f"(runtime {res.runtime}, {res.threads} thread(s))")
    if res.top1_fp32 is not None and res.top1_int8 is not None:
        print(f"fp32 top-1 accuracy: {res.top1_fp32:.4f}")
        print(f"int8 top-1 accuracy: {res.top1_int8:.4f}  "
              f"(drop {100 * (res.top1_fp32 - res.top1_int8):+.2f} points)")
    print(f"int8 vs fp32 top-1 agreement: {res.agreement:.4f}")
    print(f"output {res.output_blob}: cosine mean {res.cosine_mean:.6f} min {res.cosine_min:.6f}"
          f", SQNR mean {res.sqnr_mean_db:.2f} dB min {res.sqnr_min_db:.2f} dB")
    print(f"median latency per image: fp32 {res.latency_fp32_ms:.3f} ms, "
          f"int8 {res.latency_int8_ms:.3f} ms")
    print(f"{'layer':<24} {'type':<22} {'cosine':>10} {'min':>10} {'SQNR dB':>8}")
    for f in res.layers:
        print(f"{f.name:<24} {f.type:<22} {f.cosine_mean:>10.6f} {f.cosine_min:>10.6f} "
              f"{f.sqnr_db:>8.2f}" + ("  (int8 out)" if f.requantized else ""))
    if args.save_baseline:
        print(f"wrote {args.save_baseline}")
    return 0


def _device_facts(device: Any) -> dict[str, Any]:
    try:
        info = device.hello()
    except EdgecalError:
        return {}
    keep = ("agent_version", "protocol", "ncnn", "machine", "cores", "cpu_features")
    return {k: info[k] for k in keep if k in info}


def cmd_compare(args: argparse.Namespace) -> int:
    """Two tables (per-layer scale differences) or two histogram files (.npz)."""
    from edgecal.compare import (
        compare_histograms,
        compare_tables,
        render_histogram_diff,
        render_table_diff,
    )
    from edgecal.histfile import load_histograms

    a, b = Path(args.a), Path(args.b)
    rows: list[Any]
    if a.suffix == ".npz" or b.suffix == ".npz":
        rows = compare_histograms(load_histograms(a), load_histograms(b))
        text = render_histogram_diff(rows)
    else:
        ta = parse_table(read_text(a, "table"), source=str(a))
        tb = parse_table(read_text(b, "table"), source=str(b))
        rows = compare_tables(ta, tb)
        text = render_table_diff(rows)
    if args.json:
        print_json([r.to_dict() for r in rows])
    else:
        print(f"a = {a}\nb = {b}")
        print(text)
    return 0


def cmd_hello(args: argparse.Namespace) -> int:
    with open_device(args, 1) as device:
        info = device.hello()
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0


# ----------------------------------------------------------------------------- parser


class _ListAction(argparse.Action):
    """--images and --npy append (kind, path) to one ordered list: inputs in given order."""

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        items = list(getattr(ns, self.dest) or [])
        items.append(("npy" if opt == "--npy" else "image", values))
        setattr(ns, self.dest, items)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", dest="lists", action=_ListAction, metavar="LIST|DIR",
                   help="image list file (one path per line) or folder; once per input")
    p.add_argument("--npy", dest="lists", action=_ListAction, metavar="LIST",
                   help="list of float32 .npy files, for a tensor input")
    p.add_argument("--mean", action="append", default=[], help="per image input, e.g. 104,117,123")
    p.add_argument("--norm", action="append", default=[], help="per image input, e.g. 0.017,...")
    p.add_argument("--shape", action="append", default=[],
                   help="per input: W,H[,C] for images, w,h,(d),c for npy")
    p.add_argument("--pixel", action="append", default=[], help="BGR|RGB|GRAY|RGBA|BGRA")
    p.add_argument("--threads", type=int, default=None,
                   help="calibration runtime: agent workers over the images (default 1); "
                   "deployed runtime: ncnn threads (default: the board profile's, or all cores)")
    _add_device(p)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, metavar="NAME|USER@HOST[:PORT]|local",
                   help="where to run: a board of the boards file, user@host[:port] over SSH, "
                        "or local (default)")
    p.add_argument("--boards", default=None, metavar="FILE",
                   help="boards file (default: $EDGECAL_BOARDS)")
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="accept and record a board's unknown SSH host key (never a changed one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgecal", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgecal {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("calibrate", help="write an ncnn calibration table")
    p.add_argument("param")
    p.add_argument("bin")
    _add_inputs(p)
    p.add_argument("--method", choices=("kl", "aciq", "eq"), default="kl")
    p.add_argument("--runtime", choices=("calibration", "deployed"), default="calibration")
    p.add_argument("--out", "-o", required=True, help="table file to write")
    p.add_argument("--histograms-out", help="also save the merged histograms (.npz)")
    p.add_argument("--allow-zero-blobs", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate, lists=[])

    p = sub.add_parser("table", help="thresholds from saved histograms, no device")
    p.add_argument("--histograms", required=True)
    p.add_argument("--method", choices=("kl", "aciq"), default="kl")
    p.add_argument("--param")
    p.add_argument("--bin")
    p.add_argument("--out", "-o", required=True)
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("quantize", help="write the int8 model (what ncnn2int8 does)")
    p.add_argument("in_param")
    p.add_argument("in_bin")
    p.add_argument("out_param")
    p.add_argument("out_bin")
    p.add_argument("--table")
    p.add_argument("--keep-fp32", nargs="+", default=[], metavar="LAYER")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quantize)


    p = sub.add_parser("validate", help="fp32 vs int8 on a device: accuracy, agreement, "
                       "per-layer cosine/SQNR, latency")
    p.add_argument("param")
    p.add_argument("bin")
    p.add_argument("int8_param", nargs="?", default=None, metavar="INT8.param")
    p.add_argument("int8_bin", nargs="?", default=None, metavar="INT8.bin")
    p.add_argument("--table", help="make the int8 model from this table (in memory)")
    _add_inputs(p)
    p.add_argument("--labels", help="CSV with a file,label header")
    p.add_argument("--runtime", choices=("calibration", "deployed"), default="deployed")
    p.add_argument("--json", action="store_true")
    p.add_argument("--save-baseline", metavar="FILE", help="also write the JSON figures here")
    p.set_defaults(func=cmd_validate, lists=[])

    p = sub.add_parser("compare", help="per-layer differences of two tables or histogram files")
    p.add_argument("a", metavar="A.table|A.npz")
    p.add_argument("b", metavar="B.table|B.npz")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("hello", help="what the device's agent reports")
    _add_device(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hello)

    for name, func in (("ncnn2table", cmd_ncnn2table), ("ncnn2int8", cmd_ncnn2int8)):
        p = sub.add_parser(name, help=f"drop-in for ncnn's {name} (same arguments)")
        _add_device(p)
        p.add_argument("--runtime", choices=("calibration", "deployed"), default="calibration")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)

    from edgecal.boardcli import add_board_commands

    add_board_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="edgecal: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except EdgecalError as exc:
        if args.debug:
            traceback.print_exc()
        # one line: what went wrong (naming the file or board) and the fix; more detail (an
        # agent's last stderr lines) below it
        first, _, more = exc.message.partition("\n")
        _err(f"edgecal: error: {first}" + (f" (fix: {exc.hint})" if exc.hint else ""))
        if more:
            _err(more)
        return exc.exit_code
    except KeyboardInterrupt:
        _err("edgecal: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
