"""``edgecal validate``: its arguments, the typed values they name, and its output.

:func:`run_validation` (shared with ``edgecal check``) calls :func:`edgecal.api.validate.validate`
with the models, images, labels and devices of the arguments; the run itself (every device at
once, cross-board consistency, sensitivity, ``--save-baseline``, ``--run-dir``) happens there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from edgecal.cli.calibrate import devices_from_options
from edgecal.cli.inputs import inputs_from_args
from edgecal.cli.options import (
    COSINE,
    FRACTION,
    NumberOption,
    Once,
    add_inputs,
    add_json,
    add_metric,
    print_json,
)
from edgecal.cli.progress import run_hooks
from edgecal.errors import UsageError
from edgecal.files.outputs import Input, Output
from edgecal.quality.consistency import TOLERANCE_COSINE, TOLERANCE_DISAGREE
from edgecal_agent.messages import RUNTIMES

if TYPE_CHECKING:
    from edgecal.api.validate import Validation


def add_validation_args(p: argparse.ArgumentParser, *, optional_model: bool = False) -> None:
    """The models, images, labels and devices of ``validate`` (and ``check``)."""
    opt: dict[str, Any] = {"nargs": "?", "default": None} if optional_model else {}
    p.add_argument("param", metavar="MODEL.param", **opt)
    p.add_argument("bin", metavar="MODEL.bin", **opt)
    p.add_argument("int8_param", nargs="?", default=None, metavar="INT8.param")
    p.add_argument("int8_bin", nargs="?", default=None, metavar="INT8.bin")
    p.add_argument("--table", action=Once, help="make the int8 model from this table (in memory)")
    add_inputs(p, multi_device=True)
    p.add_argument(
        "--labels",
        help="CSV with a file,label header ('file': the image's path as the image list gives "
        "it, or its file name when no other listed image has that name; label: a class index, "
        "or for --metric ctc and your own metric the text it should give)",
    )
    add_metric(p)
    p.add_argument("--runtime", choices=RUNTIMES, default="deployed")
    p.add_argument(
        "--divergence-cosine",
        action=NumberOption,
        within=COSINE,
        default=TOLERANCE_COSINE,
        metavar="C",
        help="cross-board: least per-image cosine between two boards' "
        f"int8 outputs (default {TOLERANCE_COSINE})",
    )
    p.add_argument(
        "--divergence-top1",
        action=NumberOption,
        within=FRACTION,
        default=TOLERANCE_DISAGREE,
        metavar="F",
        help="cross-board: largest fraction of images whose top-1 may differ "
        f"between two boards (default {TOLERANCE_DISAGREE})",
    )
    p.set_defaults(lists=[])


def add_validate_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "validate",
        help="fp32 vs int8 on one or several devices: accuracy, "
        "agreement, per-layer cosine/SQNR, latency, sensitivity",
    )
    add_validation_args(p)
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="also measure, on the first device, each layer kept in fp32 alone and "
        "quantized alone, ranked",
    )
    add_json(p)
    p.add_argument(
        "--save-baseline",
        metavar="FILE",
        help="also write the figures here (for `edgecal check --baseline`)",
    )
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="record this run (figures, provenance) for `edgecal report DIR`",
    )
    p.set_defaults(func=cmd_validate)


# ----------------------------------------------------------------------------- the values


def cli_outputs(args: argparse.Namespace) -> list[Output]:
    """The command's own outputs beside the validation's: ``--json-out``, ``--junit`` and
    ``--json`` (standard output)."""
    outs = [
        Output(role, getattr(args, attr), text=True)
        for role, attr in (("--json-out", "json_out"), ("--junit", "junit"))
        if getattr(args, attr, None)
    ]
    if getattr(args, "json", False):
        outs.append(Output("--json", "-", text=True))
    return outs


def validation_outputs(args: argparse.Namespace) -> list[Output]:
    """The files ``validate``/``check`` write (``-``: standard output, where the printed
    report then goes to standard error)."""
    from edgecal.api.validate import validation_outputs as files

    outs = files(getattr(args, "save_baseline", None), None)
    outs += cli_outputs(args)
    run_dir = getattr(args, "run_dir", None)
    if run_dir:
        outs += files(None, run_dir)
    return outs


def validation_inputs(args: argparse.Namespace) -> list[Input]:
    """The files ``validate``/``check`` read (the samples come with the lists)."""
    from edgecal.api.validate import validation_inputs as files

    return files(
        (getattr(args, "param", None), getattr(args, "bin", None)),
        (getattr(args, "int8_param", None), getattr(args, "int8_bin", None)),
        table=getattr(args, "table", None),
        labels=getattr(args, "labels", None),
        baseline=getattr(args, "baseline", None),
        results=getattr(args, "results", None) or [],
        lists=[p for _, p in getattr(args, "lists", None) or []],
    )


def report_stream(args: argparse.Namespace) -> Any:
    """Where the human-readable report goes: standard error when an output is ``-``."""
    return sys.stderr if any(o.path == "-" for o in validation_outputs(args)) else sys.stdout


def run_validation(args: argparse.Namespace, **options: Any) -> Validation:
    """``edgecal.api.validate.validate`` with the models, images, labels and devices the
    arguments name (``options``: its other keywords)."""
    from edgecal.api.validate import validate

    if args.param is None or args.bin is None:
        raise UsageError("give the fp32 model: MODEL.param MODEL.bin")
    pair = args.int8_param is not None and args.int8_bin is not None
    int8 = (args.int8_param, args.int8_bin) if pair else None
    # half a pair is refused as neither is, in its turn (and so is half a pair beside --table)
    table = args.table if pair or args.int8_param is None else None
    model = (args.param, args.bin)
    with run_hooks(args) as hooks:
        return validate(
            model,
            int8,
            table=table,
            inputs=inputs_from_args(args, model) if args.lists else [],
            labels=args.labels,
            metric=args.metric,
            charset=args.charset,
            iou_threshold=args.iou_threshold,
            devices=devices_from_options(args),
            boards=args.boards,
            accept_new_host_key=args.accept_new_host_key,
            runtime=args.runtime,
            threads=args.threads,
            divergence_cosine=args.divergence_cosine,
            divergence_top1=args.divergence_top1,
            outputs=cli_outputs(args),
            other_inputs=validation_inputs(args),
            **hooks,
            **options,
        )


# ----------------------------------------------------------------------------- the command


def cmd_validate(args: argparse.Namespace) -> int:
    run = run_validation(
        args, sensitivity=args.sensitivity, save_baseline=args.save_baseline, run_dir=args.run_dir
    )
    if args.json:
        print_json(run.to_dict())
        return 1 if run.diverging else 0
    doc = run.document()
    out = report_stream(args)
    print("\n".join(render_validation(doc)), file=out)
    if run.sensitivity is not None:
        print("\n".join(render_sensitivity(run.sensitivity)), file=out)
    for path in (args.save_baseline, args.run_dir):
        if path and path != "-":
            print(f"wrote {path}", file=out)
    if run.diverging:
        sys.stderr.write(
            f"edgecal: error: board(s) {', '.join(run.diverging)} give int8 "
            "outputs unlike the other boards' (fix: re-flash or rebuild them, "
            "and check their ncnn versions above)\n"
        )
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
    if any(r.get("metric") for r in results):
        rows.append(
            (
                "metric " + next(r["metric"]["name"] for r in results if r.get("metric")),
                lambda r: _f((r.get("metric") or {}).get("primary"), ".4f"),
            )
        )
    table = [[label, *(get(r) for r in results)] for label, get in rows]
    for name in [x["name"] for x in results[0]["layers"]]:
        vals = []
        for r in results:
            match = [x for x in r["layers"] if x["name"] == name]
            vals.append(_f(match[0]["cosine_mean"], ".6f") if match else "-")
        table.append([name, *vals])
    lines = table_lines(
        ["", *(r["device"]["name"] for r in results)], table, right=range(1, len(results) + 1)
    )
    cons = doc.get("consistency")
    if cons:
        lines.append("cross-board (int8 outputs, per-image cosine / top-1 differences):")
        for p in cons["pairs"]:
            lines.append(
                f"  {p['a']} vs {p['b']}: cosine mean {float(p['cosine_mean']):.6f} "
                f"min {float(p['cosine_min']):.6f}, top-1 differs on "
                f"{100 * float(p['top1_disagree']):.2f} %"
            )
        for b in cons["boards"]:
            if b["diverges"]:
                lines.append(f"  DIVERGES: {b['board']}: {b['why']}")
        if not cons["diverging"]:
            lines.append(
                f"  consistent: no board diverges (cosine >= "
                f"{cons['tolerance_cosine']}, top-1 differences <= "
                f"{100 * float(cons['tolerance_disagree']):.2f} %)"
            )
    return lines


#: A column of a table of documents: its header, its cell of a document, right-aligned or not.
Column = tuple[str, Callable[[dict[str, Any]], Any], bool]

#: Per-layer figures of one board.
LAYER_COLUMNS: tuple[Column, ...] = (
    ("layer", lambda f: f["name"], False),
    ("type", lambda f: f["type"], False),
    ("cosine", lambda f: f"{float(f['cosine_mean']):.6f}", True),
    ("min", lambda f: f"{float(f['cosine_min']):.6f}", True),
    ("SQNR dB", lambda f: f"{float(f['sqnr_db']):.2f}", True),
    ("", lambda f: "(int8 out)" if f["requantized"] else "", False),
)

#: The layers ranked by sensitivity.
SENSITIVITY_COLUMNS: tuple[Column, ...] = (
    ("rank", lambda e: e["rank"], True),
    ("layer", lambda e: e["layer"], False),
    ("fp32 alone: gain pts", lambda e: f"{float(e['gain_points']):.2f}", True),
    ("cosine", lambda e: f"{float(e['keep_fp32']['cosine_mean']):.6f}", True),
    ("int8 alone: drop pts", lambda e: _f((e["only_int8"] or {}).get("drop_points"), ".2f"), True),
    ("cosine", lambda e: _f((e["only_int8"] or {}).get("cosine_mean"), ".6f"), True),
)


def column_lines(columns: Sequence[Column], docs: Iterable[dict[str, Any]]) -> list[str]:
    """``docs`` as a table, one row each, in ``columns``."""
    from edgecal.cli.render import table_lines

    return table_lines(
        [head for head, _, _ in columns],
        [[cell(d) for _, cell, _ in columns] for d in docs],
        right={i for i, (_, _, right) in enumerate(columns) if right},
    )


def render_board(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['n_samples']} images on {r['device'].get('name')} "
        f"(runtime {r['runtime']}, {r['threads']} thread(s))"
    ]
    if r["top1_fp32"] is not None and r["top1_int8"] is not None:
        fp, i8 = float(r["top1_fp32"]), float(r["top1_int8"])
        lines.append(f"fp32 top-1 accuracy: {fp:.4f}")
        lines.append(f"int8 top-1 accuracy: {i8:.4f}  (drop {100 * (fp - i8):+.2f} points)")
    lines.append(f"int8 vs fp32 top-1 agreement: {float(r['agreement']):.4f}")
    lines.append(
        f"output {r['output_blob']}: cosine mean {float(r['cosine_mean']):.6f} min "
        f"{float(r['cosine_min']):.6f}, SQNR mean {float(r['sqnr_mean_db']):.2f} dB "
        f"min {float(r['sqnr_min_db']):.2f} dB"
    )
    lines += render_metric(r.get("metric"))
    lines.append(
        f"median latency per image: fp32 {_latency(r, 'fp32')}, int8 {_latency(r, 'int8')}"
    )
    return lines + column_lines(LAYER_COLUMNS, r["layers"])


def _latency(r: dict[str, Any], model: str) -> str:
    """``"1.234 ms"``, with its p10-p90 spread when the document has it."""
    spread = r.get(f"latency_{model}")
    text = f"{float(r[f'latency_{model}_ms']):.3f} ms"
    if isinstance(spread, dict) and "p10_ms" in spread and "p90_ms" in spread:
        text += f" (p10-p90 {float(spread['p10_ms']):.3f}-{float(spread['p90_ms']):.3f})"
    return text


def render_metric(m: dict[str, Any] | None) -> list[str]:
    """The task metric's lines (none without ``--metric``)."""
    if not m:
        return []
    fp32 = "" if m["primary_fp32"] is None else f" (fp32 {float(m['primary_fp32']):.4f})"
    figures = ", ".join(f"{k} {float(v):.6g}" for k, v in m["figures"].items())
    return [
        f"metric {m['name']}: int8 {float(m['primary']):.4f}{fp32}, drop "
        f"{float(m['drop_points']):.2f} points",
        *([f"  {figures}"] if figures else []),
    ]


def render_sensitivity(sens: dict[str, Any]) -> list[str]:
    base = sens["all_int8"]
    lines = [
        f"sensitivity on {sens['board']} ({sens['n_samples']} images, {sens['metric']}): "
        f"int8 model drop {float(base['drop_points']):.2f} points, cosine "
        f"{float(base['cosine_mean']):.6f}"
    ]
    return lines + column_lines(SENSITIVITY_COLUMNS, sens["layers"])
