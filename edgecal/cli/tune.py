"""``edgecal tune``: its arguments, the typed values they name, and its summary (the tuning
itself is :func:`edgecal.api.tune.tune`: calibrate (or take a table), validate on the device,
then fix the most harmful layers -- another calibration method for that layer, else fp32 --
until the drop is within ``--max-drop``; the table, the int8 model, the figures and the report
go to ``--out-dir``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgecal.calib.methods import CALIBRATE_NAMES, Method
from edgecal.cli.calibrate import devices_from_options
from edgecal.cli.inputs import inputs_from_args, say_on_stderr
from edgecal.cli.options import (
    COUNT,
    POINTS,
    SECONDS,
    NumberOption,
    Once,
    add_inputs,
    add_metric,
)
from edgecal.cli.progress import run_hooks
from edgecal.cli.validate import render_board, render_sensitivity
from edgecal.runs.rundir import INT8_BIN, INT8_PARAM, TABLE
from edgecal_agent.messages import RUNTIMES


def add_tune_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "tune",
        help="calibrate and validate on the device, then reach the accuracy target with the "
        "most int8 layers (other scales per layer first, fp32 last)",
    )
    p.add_argument("param", metavar="MODEL.param")
    p.add_argument("bin", metavar="MODEL.bin")
    add_inputs(p, multi_device=True)
    p.add_argument(
        "--method",
        choices=CALIBRATE_NAMES,
        default=Method.KL.value,
        help="calibration method of the starting table (default kl)",
    )
    p.add_argument("--table", action=Once, help="start from this table instead of calibrating")
    p.add_argument(
        "--max-drop",
        action=NumberOption,
        within=POINTS,
        required=True,
        metavar="POINTS",
        help="largest accepted drop, in points, of top-1 accuracy (with --labels) "
        "or of top-1 agreement with fp32; with --metric, of that metric",
    )
    p.add_argument(
        "--out-dir",
        required=True,
        metavar="DIR",
        help="where the table, int8.param/int8.bin, figures and report go",
    )
    p.add_argument(
        "--labels",
        help="CSV with a file,label header for the tuning images ('file': the image's path "
        "as the image list gives it, or its file name when no other listed image has that "
        "name; label: the class, or for --metric ctc and your own metric the text each "
        "should give)",
    )
    add_metric(p, "tune for")
    p.add_argument(
        "--val-images",
        metavar="LIST|DIR",
        help="tune on these images (default: the calibration images)",
    )
    p.add_argument(
        "--try-methods",
        default=",".join(CALIBRATE_NAMES),
        metavar="M[,M...]",
        help="methods and threshold rules tried, whole-model and per layer, before a layer "
        f"goes to fp32 (default {','.join(CALIBRATE_NAMES)}; 'none' to go straight to fp32)",
    )
    p.add_argument(
        "--max-fp32-layers",
        action=NumberOption,
        within=COUNT,
        default=None,
        metavar="N",
        help="keep at most N layers in fp32 (default: no limit)",
    )
    p.add_argument(
        "--time-budget",
        action=NumberOption,
        within=SECONDS,
        default=None,
        metavar="SECONDS",
        help="bound the whole run, ranking included: no new variant is scored after this "
        "long (the final model is still validated and written)",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="deployed",
        help="ncnn options the int8 model is scored with (default: as deployed)",
    )
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.set_defaults(func=cmd_tune, lists=[])


def cmd_tune(args: argparse.Namespace) -> int:
    from edgecal.api.tune import tune

    with run_hooks(args) as hooks:
        tuned = tune(
            (args.param, args.bin),
            inputs_from_args(args, (args.param, args.bin)) if args.lists else [],
            max_drop=args.max_drop,
            out_dir=args.out_dir,
            method=args.method,
            table=args.table,
            labels=args.labels,
            metric=args.metric,
            charset=args.charset,
            iou_threshold=args.iou_threshold,
            val_inputs=args.val_images,
            try_methods=args.try_methods,
            max_fp32_layers=args.max_fp32_layers,
            time_budget=args.time_budget,
            devices=devices_from_options(args),
            boards=args.boards,
            accept_new_host_key=args.accept_new_host_key,
            runtime=args.runtime,
            threads=args.threads,
            report=not args.no_report,
            steps=None if args.quiet else say_on_stderr(),
            **hooks,
        )
    print_summary(
        tuned.result,
        tuned.tune,
        tuned.board,
        tuned.sensitivity,
        Path(tuned.out_dir),
        None if tuned.report is None else Path(tuned.report),
    )
    return 0 if tuned.target_met else 1


def print_summary(
    result: Any,
    tune_doc: dict[str, Any],
    res: Any,
    sens: dict[str, Any],
    out_dir: Path,
    report: Path | None,
) -> None:
    init, fin = result.initial, result.final
    if tune_doc.get("metric_figures") is not None:
        unit = f"metric {tune_doc['metric']}"
    else:
        unit = "accuracy" if tune_doc["metric"] == "accuracy" else "top-1 agreement"
    print("\n".join(render_board(res.to_dict())))
    if sens:
        print("\n".join(render_sensitivity(sens)))
    print(
        f"tune: drop in {unit}: {init.drop_points:.2f} -> {fin.drop_points:.2f} points "
        f"(target {tune_doc['max_drop']:g}); output cosine {init.cosine_mean:.6f} -> "
        f"{fin.cosine_mean:.6f}; {tune_doc['evaluations']} variants scored in "
        f"{tune_doc['seconds']:.1f} s"
    )
    base = tune_doc.get("start_method") or tune_doc["method"]
    if base != tune_doc["method"]:
        print(f"  started from the {base} table (the best whole-model table)")
    changed = {k: v for k, v in result.layer_methods.items() if v not in ("fp32", base)}
    for layer, m in changed.items():
        print(f"  {layer}: {m} scales")
    for entry in tune_doc["fp32_layers"]:
        cost = entry["latency_cost_ms"]
        print(
            f"  {entry['layer']}: kept in fp32, latency cost "
            + ("?" if cost is None else f"{cost:+.3f} ms per image")
        )
    if not result.fp32_layers and not changed:
        print("  no layer changed")
    if tune_doc.get("int8_layers") is not None:
        print(f"layers int8: {tune_doc['int8_layers']} of {tune_doc['quantizable_layers']}")
    lat = tune_doc.get("latency")
    if lat and "median_ms" in lat["int8"] and "median_ms" in lat["fp32"]:
        a, b = lat["int8"], lat["fp32"]
        print(
            f"latency per image on the device, median (p10-p90): int8 {a['median_ms']:.3f} ms "
            f"({a['p10_ms']:.3f}-{a['p90_ms']:.3f}), fp32 {b['median_ms']:.3f} ms "
            f"({b['p10_ms']:.3f}-{b['p90_ms']:.3f})"
        )
    else:
        print(
            f"int8 latency {fin.latency_ms:.3f} ms per image (all-int8 {init.latency_ms:.3f} ms, "
            f"fp32 {tune_doc['fp32_latency_ms']:.3f} ms)"
        )
    for w in tune_doc.get("warnings") or ():
        print(f"warning: {w}")
    devices = tune_doc.get("devices")
    if devices:
        print(
            f"scored on {len(devices)} devices: "
            + ", ".join(
                f"{d['board']} {d['shards']} shards/{d['samples']} images"
                + (f" (retried {d['retried']})" if d["retried"] else "")
                + (f" (given up: {d['lost']})" if d["lost"] else "")
                for d in devices
            )
        )
    disk = tune_doc.get("disk_bytes")
    if disk:
        where = "the devices' work directories" if devices else "the device's work directory"
        print(
            f"disk: {disk['run_dir']} bytes to the run directory, {disk['host_work']} to "
            f"temporary files here, {disk['device_work']} pushed to {where}"
        )
    print(("target met: " if result.target_met else "target NOT met: ") + result.reason)
    print(
        f"wrote {out_dir / TABLE}, {out_dir / INT8_PARAM}, {out_dir / INT8_BIN}"
        + (f", {report}" if report is not None else "")
    )
