"""``edgecal validate``: its arguments, the run over one or several devices, and its output.

:func:`run_validation` is shared with ``edgecal check``: it loads the models and images the
arguments name, validates on every ``--device`` at once (one thread per board), compares the
boards' int8 outputs (cross-board consistency) and returns the validation document (see
``edgecal.runs.rundir``), which ``--save-baseline`` and ``--run-dir`` write.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal.calib.table import parse_table
from edgecal.cli.options import (
    add_inputs,
    command_line,
    effective_threads,
    open_device,
    print_json,
    specs_from_options,
    write_outputs,
)
from edgecal.errors import EdgecalError, TableError, UsageError
from edgecal.files.outputs import (
    Input,
    Output,
    check_folder,
    check_outputs,
    folder_outputs,
    input_paths,
    sample_inputs,
)
from edgecal.files.userfile import read_text
from edgecal.fleet.pool import board_pool
from edgecal.inputs.model import Model, load_model
from edgecal.inputs.samples import SampleSource, make_sample_source, read_list
from edgecal.quality.consistency import TOLERANCE_COSINE, TOLERANCE_DISAGREE, compare_boards
from edgecal.quality.validation import (
    Int8Files,
    ModelFiles,
    ValidationDoc,
    ValidationResult,
    check_same_network,
)
from edgecal.runs.rundir import RUN_JSON, SENSITIVITY, VALIDATION, RunDir, dumps, images_digest
from edgecal.workflows.validate import validate
from edgecal_agent.protocol import RUNTIMES


def add_validation_args(p: argparse.ArgumentParser, *, optional_model: bool = False) -> None:
    """The models, images, labels and devices of ``validate`` (and ``check``)."""
    opt: dict[str, Any] = {"nargs": "?", "default": None} if optional_model else {}
    p.add_argument("param", metavar="MODEL.param", **opt)
    p.add_argument("bin", metavar="MODEL.bin", **opt)
    p.add_argument("int8_param", nargs="?", default=None, metavar="INT8.param")
    p.add_argument("int8_bin", nargs="?", default=None, metavar="INT8.bin")
    p.add_argument("--table", help="make the int8 model from this table (in memory)")
    add_inputs(p, multi_device=True)
    p.add_argument("--labels", help="CSV with a file,label header ('file' is the image's name)")
    p.add_argument("--runtime", choices=RUNTIMES, default="deployed")
    p.add_argument("--divergence-cosine", type=float, default=TOLERANCE_COSINE,
                   metavar="C", help="cross-board: least per-image cosine between two boards' "
                   f"int8 outputs (default {TOLERANCE_COSINE})")
    p.add_argument("--divergence-top1", type=float, default=TOLERANCE_DISAGREE, metavar="F",
                   help="cross-board: largest fraction of images whose top-1 may differ "
                   f"between two boards (default {TOLERANCE_DISAGREE})")
    p.set_defaults(lists=[])


def add_validate_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("validate", help="fp32 vs int8 on one or several devices: accuracy, "
                       "agreement, per-layer cosine/SQNR, latency, sensitivity")
    add_validation_args(p)
    p.add_argument("--sensitivity", action="store_true",
                   help="also measure, on the first device, each layer kept in fp32 alone and "
                        "quantized alone, ranked")
    p.add_argument("--json", action="store_true")
    p.add_argument("--save-baseline", metavar="FILE",
                   help="also write the figures here (for `edgecal check --baseline`)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="record this run (figures, provenance) for `edgecal report DIR`")
    p.set_defaults(func=cmd_validate)


# ----------------------------------------------------------------------------- loading


@dataclass
class ValidationInputs:
    model: Model
    source: SampleSource
    labels: list[int] | None


def n_classes(model: Model) -> int | None:
    producer = model.param.producer(model.output_blobs[0])
    if producer is not None and producer.type == "InnerProduct":
        return producer.param_int(0, 0) or None
    return None


def validation_outputs(args: argparse.Namespace) -> list[Output]:
    """The files ``validate``/``check`` write (``-``: standard output, where the printed
    report then goes to standard error)."""
    outs = [Output(role, getattr(args, attr), text=True)
            for role, attr in (("--save-baseline", "save_baseline"), ("--json-out", "json_out"),
                               ("--junit", "junit"))
            if getattr(args, attr, None)]
    if getattr(args, "json", False):
        outs.append(Output("--json", "-", text=True))
    run_dir = getattr(args, "run_dir", None)
    if run_dir:
        check_folder("--run-dir", run_dir)
        outs += folder_outputs("--run-dir", run_dir, [RUN_JSON, VALIDATION, SENSITIVITY])
    return outs


def validation_inputs(args: argparse.Namespace) -> list[Input]:
    """The files ``validate``/``check`` read (the samples come with the lists)."""
    out: list[Input] = []
    for role, attr in (("MODEL.param", "param"), ("MODEL.bin", "bin"),
                       ("INT8.param", "int8_param"), ("INT8.bin", "int8_bin"),
                       ("--table", "table"), ("--labels", "labels"), ("--baseline", "baseline")):
        out += input_paths(role, [getattr(args, attr, None)])
    out += input_paths("--results", getattr(args, "results", None) or [])
    out += input_paths("sample list", [p for _, p in getattr(args, "lists", None) or []])
    return out


def report_stream(args: argparse.Namespace) -> Any:
    """Where the human-readable report goes: standard error when an output is ``-``."""
    return sys.stderr if any(o.path == "-" for o in validation_outputs(args)) else sys.stdout


def load_inputs(args: argparse.Namespace) -> ValidationInputs:
    from edgecal.inputs.labels import labels_for, parse_labels

    if args.param is None or args.bin is None:
        raise UsageError("give the fp32 model: MODEL.param MODEL.bin")
    model = load_model(Path(args.param), Path(args.bin))
    if not args.lists:
        raise UsageError("give the images to validate on: --images LIST|DIR (or --npy LIST)")
    check_outputs(validation_outputs(args), validation_inputs(args))  # before any work
    specs = specs_from_options(model, args)
    source = make_sample_source(specs, [read_list(Path(p)) for _, p in args.lists])
    check_outputs(validation_outputs(args),
                  [*validation_inputs(args), *sample_inputs(source.paths)])
    labels = None
    if args.labels:
        mapping = parse_labels(read_text(Path(args.labels), "labels file"), args.labels)
        labels = labels_for(mapping, list(source.paths[0]), args.labels, n_classes(model))
    return ValidationInputs(model, source, labels)


def int8_model(args: argparse.Namespace, model: Model, tmp: Path) -> Model:
    """The int8 model to validate: the given pair, or ``--table`` converted into ``tmp``."""
    from edgecal.int8.convert import quantize_model

    given = args.int8_param is not None
    if given == bool(args.table) or (given and args.int8_bin is None):
        raise UsageError("give either INT8.param INT8.bin or --table TABLE",
                         hint="with --table the int8 model is made in memory from the table")
    if given:
        int8 = load_model(Path(args.int8_param), Path(args.int8_bin))
    else:
        table = parse_table(read_text(Path(args.table), "table"), source=str(args.table))
        try:
            text, data, _ = quantize_model(model.param, model.weights, table)
        except TableError as exc:
            raise TableError(f"{args.table}: {exc.message}", hint=exc.hint) from None
        param, binf = tmp / "int8.param", tmp / "int8.bin"
        write_outputs([(param, text.encode()), (binf, data)])
        int8 = load_model(param, binf)
    check_same_network(model.param, int8.param, args.param,
                       args.int8_param or f"the int8 model of {args.table}")
    return int8


def device_facts(device: Any, spec: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """What the report and the gate show of a board: agent, ncnn, CPU, and its profile."""
    from edgecal.boards.config import boards_file, resolve_board

    facts: dict[str, Any] = {"name": device.name}
    with contextlib.suppress(EdgecalError):
        info = device.hello()
        keep = ("agent_version", "protocol", "python", "numpy", "ncnn", "machine", "cores",
                "cpu_features")
        facts.update({k: info[k] for k in keep if k in info})
    board = resolve_board(spec, boards_file(getattr(args, "boards", None)))
    facts["profile"] = board.profile if board is not None else None
    return facts


def device_specs(args: argparse.Namespace) -> list[str | None]:
    specs = getattr(args, "device", None) or [None]
    names = [s or "local" for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"--device {dup[0]} is given twice", hint="name each board once")
    return list(specs)


@contextlib.contextmanager
def progress_bars(args: argparse.Namespace) -> Iterator[Any]:
    from edgecal.cli.progress import ProgressBars

    with ProgressBars(enabled=not getattr(args, "quiet", False)) as bars:
        yield bars


# ----------------------------------------------------------------------------- the run


def provenance(args: argparse.Namespace, inputs: ValidationInputs, int8: Model
               ) -> dict[str, Any]:
    from edgecal.runs.rundir import file_sha256

    out: dict[str, Any] = {
        "fp32_param": {"path": args.param, "sha256": inputs.model.param_sha256},
        "fp32_bin": {"path": args.bin, "sha256": inputs.model.bin_sha256},
        "int8_param": {"path": args.int8_param, "sha256": int8.param_sha256},
        "int8_bin": {"path": args.int8_bin, "sha256": int8.bin_sha256},
        "images": {"count": inputs.source.n_samples,
                   "sha256": images_digest(p for paths in inputs.source.paths for p in paths)},
    }
    if args.table:
        out["table"] = {"path": args.table, "sha256": file_sha256(Path(args.table))}
    if args.labels:
        out["labels"] = {"path": args.labels, "sha256": file_sha256(Path(args.labels))}
    return out


def board_result(res: ValidationResult, args: argparse.Namespace, model: Model, int8: Model
                 ) -> ValidationResult:
    """``res`` with the models' files the arguments name."""
    return dataclasses.replace(
        res, fp32=ModelFiles(args.param, args.bin, model.param_sha256, model.bin_sha256),
        int8=Int8Files(args.int8_param, args.int8_bin, int8.param_sha256, int8.bin_sha256,
                       table=args.table))


@dataclass
class ValidationRun:
    record: ValidationDoc
    doc: dict[str, Any]  # record.to_dict()
    results: list[ValidationResult]
    inputs: ValidationInputs
    int8: Model
    sensitivity: dict[str, Any] | None = None


def run_validation(args: argparse.Namespace) -> dict[str, Any]:
    """The validation document of the arguments (``edgecal check`` gates it)."""
    return run_validation_full(args).doc


def run_validation_full(args: argparse.Namespace, *, sensitivity: bool = False
                        ) -> ValidationRun:
    inputs = load_inputs(args)
    specs = device_specs(args)
    with tempfile.TemporaryDirectory(prefix="edgecal-validate-") as tmp, \
            progress_bars(args) as bars:
        int8 = int8_model(args, inputs.model, Path(tmp))

        def one(spec: str | None) -> ValidationResult:
            threads = effective_threads(args, args.runtime, spec)
            with open_device(args, threads, spec) as device:
                res = validate(device, inputs.model, int8, inputs.source, labels=inputs.labels,
                               runtime=args.runtime, threads=threads, progress=bars.task)
                res.device = device_facts(device, spec, args)
            return res

        with board_pool(len(specs)) as pool:
            results = list(pool.map(one, specs))
        sens = None
        if sensitivity:
            sens = run_sensitivity(args, inputs, int8, specs[0], Path(tmp), bars)
    record = ValidationDoc([board_result(r, args, inputs.model, int8) for r in results])
    if len(results) > 1:
        found = {r.device["name"]: r.int8_outputs for r in results}
        outputs = {k: v for k, v in found.items() if v is not None}
        if len(outputs) < len(found):
            raise UsageError("no images were validated")
        record.consistency = compare_boards(
            outputs, tol_cosine=args.divergence_cosine, tol_disagree=args.divergence_top1)
    return ValidationRun(record, record.to_dict(), results, inputs, int8, sens)


def run_sensitivity(args: argparse.Namespace, inputs: ValidationInputs, int8: Model,
                    spec: str | None, tmp: Path, bars: Any) -> dict[str, Any]:
    """Per-layer sensitivity of the table's int8 model on the first device."""
    from edgecal.workflows.scoring import Scorer
    from edgecal.workflows.sensitivity import measure_sensitivity

    if not args.table:
        raise UsageError("--sensitivity needs --table (the variants are made from the table)",
                         hint="pass the table the int8 model was made from")
    table = parse_table(read_text(Path(args.table), "table"), source=str(args.table))
    threads = effective_threads(args, args.runtime, spec)
    with open_device(args, threads, spec) as device:
        scorer = Scorer(device, inputs.model, inputs.source, tmp / "scoring",
                        labels=inputs.labels, runtime=args.runtime, threads=threads,
                        progress=bars.task)
        sens = measure_sensitivity(scorer, table)
    return sens.to_dict()


# ----------------------------------------------------------------------------- the command


def cmd_validate(args: argparse.Namespace) -> int:
    run = run_validation_full(args, sensitivity=args.sensitivity)
    doc = dict(run.doc)
    if run.sensitivity is not None:
        doc["sensitivity"] = run.sensitivity
    outputs: list[tuple[Path, bytes]] = []
    if args.save_baseline:
        outputs.append((Path(args.save_baseline), dumps(run.doc)))
    write_outputs(outputs)
    if args.run_dir:
        rd = RunDir.create(Path(args.run_dir), "validate", command_line(args),
                           provenance(args, run.inputs, run.int8))
        rd.write_all([(VALIDATION, run.doc)]  # all or nothing
                     + ([(SENSITIVITY, run.sensitivity)] if run.sensitivity is not None else []))
    diverging = (run.doc.get("consistency") or {}).get("diverging") or []
    if args.json:
        print_json(doc)
        return 1 if diverging else 0
    out = report_stream(args)
    print("\n".join(render_validation(run.doc)), file=out)
    if run.sensitivity is not None:
        print("\n".join(render_sensitivity(run.sensitivity)), file=out)
    for path in (args.save_baseline, args.run_dir):
        if path and path != "-":
            print(f"wrote {path}", file=out)
    if diverging:
        sys.stderr.write(f"edgecal: error: board(s) {', '.join(diverging)} give int8 outputs "
                         "unlike the other boards' (fix: re-flash or rebuild them, and check "
                         "their ncnn versions above)\n")
        return 1
    return 0


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(float(x), fmt)


def render_validation(doc: dict[str, Any]) -> list[str]:
    """The human-readable figures of a validation document: one board in full; several side
    by side, then the cross-board check."""
    results = doc["results"]
    if len(results) == 1:
        return render_board(results[0])
    from edgecal.cli.render import table_lines

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("images", lambda r: str(r["n_samples"])),
        ("fp32 top-1", lambda r: _f(r["top1_fp32"], ".4f")),
        ("int8 top-1", lambda r: _f(r["top1_int8"], ".4f")),
        ("agreement", lambda r: _f(r["agreement"], ".4f")),
        ("cosine mean", lambda r: _f(r["cosine_mean"], ".6f")),
        ("cosine min", lambda r: _f(r["cosine_min"], ".6f")),
        ("SQNR mean dB", lambda r: _f(r["sqnr_mean_db"], ".2f")),
        ("fp32 ms", lambda r: _f(r["latency_fp32_ms"], ".3f")),
        ("int8 ms", lambda r: _f(r["latency_int8_ms"], ".3f")),
        ("threads", lambda r: str(r["threads"])),
    ]
    table = [[label, *(get(r) for r in results)] for label, get in rows]
    for name in [x["name"] for x in results[0]["layers"]]:
        vals = []
        for r in results:
            match = [x for x in r["layers"] if x["name"] == name]
            vals.append(_f(match[0]["cosine_mean"], ".6f") if match else "-")
        table.append([name, *vals])
    lines = table_lines(["", *(r["device"]["name"] for r in results)], table,
                        right=range(1, len(results) + 1))
    cons = doc.get("consistency")
    if cons:
        lines.append("cross-board (int8 outputs, per-image cosine / top-1 differences):")
        for p in cons["pairs"]:
            lines.append(f"  {p['a']} vs {p['b']}: cosine mean {float(p['cosine_mean']):.6f} "
                         f"min {float(p['cosine_min']):.6f}, top-1 differs on "
                         f"{100 * float(p['top1_disagree']):.2f} %")
        for b in cons["boards"]:
            if b["diverges"]:
                lines.append(f"  DIVERGES: {b['board']}: {b['why']}")
        if not cons["diverging"]:
            lines.append(f"  consistent: no board diverges (cosine >= "
                         f"{cons['tolerance_cosine']}, top-1 differences <= "
                         f"{100 * float(cons['tolerance_disagree']):.2f} %)")
    return lines


def render_board(r: dict[str, Any]) -> list[str]:
    from edgecal.cli.render import table_lines

    lines = [f"{r['n_samples']} images on {r['device'].get('name')} "
             f"(runtime {r['runtime']}, {r['threads']} thread(s))"]
    if r["top1_fp32"] is not None and r["top1_int8"] is not None:
        fp, i8 = float(r["top1_fp32"]), float(r["top1_int8"])
        lines.append(f"fp32 top-1 accuracy: {fp:.4f}")
        lines.append(f"int8 top-1 accuracy: {i8:.4f}  (drop {100 * (fp - i8):+.2f} points)")
    lines.append(f"int8 vs fp32 top-1 agreement: {float(r['agreement']):.4f}")
    lines.append(f"output {r['output_blob']}: cosine mean {float(r['cosine_mean']):.6f} min "
                 f"{float(r['cosine_min']):.6f}, SQNR mean {float(r['sqnr_mean_db']):.2f} dB "
                 f"min {float(r['sqnr_min_db']):.2f} dB")
    lines.append(f"median latency per image: fp32 {float(r['latency_fp32_ms']):.3f} ms, "
                 f"int8 {float(r['latency_int8_ms']):.3f} ms")
    return lines + table_lines(
        ("layer", "type", "cosine", "min", "SQNR dB", ""),
        [(f["name"], f["type"], f"{float(f['cosine_mean']):.6f}", f"{float(f['cosine_min']):.6f}",
          f"{float(f['sqnr_db']):.2f}", "(int8 out)" if f["requantized"] else "")
         for f in r["layers"]],
        right={2, 3, 4})


def render_sensitivity(sens: dict[str, Any]) -> list[str]:
    from edgecal.cli.render import table_lines

    base = sens["all_int8"]
    lines = [f"sensitivity on {sens['board']} ({sens['n_samples']} images, {sens['metric']}): "
             f"int8 model drop {float(base['drop_points']):.2f} points, cosine "
             f"{float(base['cosine_mean']):.6f}"]
    return lines + table_lines(
        ("rank", "layer", "fp32 alone: gain pts", "cosine", "int8 alone: drop pts", "cosine"),
        [(e["rank"], e["layer"], f"{float(e['gain_points']):.2f}",
          f"{float(e['keep_fp32']['cosine_mean']):.6f}",
          _f((e["only_int8"] or {}).get("drop_points"), ".2f"),
          _f((e["only_int8"] or {}).get("cosine_mean"), ".6f")) for e in sens["layers"]],
        right={0, 2, 3, 4, 5})
