"""``edgecal tune``: calibrate (or take a table), validate on the device, then fix the most
harmful layers -- another calibration method for that layer, else fp32 -- until the drop is
within ``--max-drop``; writes the table, the int8 model, the figures and the report to
``--out-dir``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.calib.build import TableBuild
from edgecal.calib.methods import METHOD_NAMES, METHODS, Method
from edgecal.calib.table import CalibrationTable, parse_table, render_table, weight_key
from edgecal.cli.options import (
    add_inputs,
    command_line,
    effective_threads,
    open_device,
    specs_from_options,
)
from edgecal.cli.validate import (
    board_result,
    device_facts,
    n_classes,
    progress_bars,
    render_board,
    render_sensitivity,
)
from edgecal.errors import TableError, UsageError
from edgecal.files.outputs import (
    check_folder,
    check_outputs,
    folder_outputs,
    input_paths,
    sample_inputs,
)
from edgecal.files.userfile import read_text
from edgecal.inputs.model import Model, load_model
from edgecal.inputs.samples import SampleSource, make_sample_source, read_list
from edgecal.quality.thresholds import LayerThresholds, ThresholdsDoc
from edgecal.quality.validation import ValidationDoc
from edgecal.runs.histfile import HistogramSet, histograms_to_bytes
from edgecal.runs.rundir import (
    HISTOGRAMS,
    INT8_BIN,
    INT8_PARAM,
    REPORT,
    RUN_JSON,
    SENSITIVITY,
    TABLE,
    THRESHOLDS,
    TUNE,
    VALIDATION,
    RunDir,
    file_sha256,
    images_digest,
)
from edgecal_agent.protocol import RUNTIMES


def add_tune_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tune", help="calibrate, validate on the device and keep harmful layers "
                       "in fp32 (or recalibrate them) until the accuracy drop is within target")
    p.add_argument("param", metavar="MODEL.param")
    p.add_argument("bin", metavar="MODEL.bin")
    add_inputs(p)
    p.add_argument("--method", choices=METHOD_NAMES, default=Method.KL.value,
                   help="calibration method of the starting table (default kl)")
    p.add_argument("--table", help="start from this table instead of calibrating")
    p.add_argument("--max-drop", type=float, required=True, metavar="POINTS",
                   help="largest accepted drop, in points, of top-1 accuracy (with --labels) "
                        "or of top-1 agreement with fp32")
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="where the table, int8.param/int8.bin, figures and report go")
    p.add_argument("--labels", help="CSV with a file,label header for the tuning images")
    p.add_argument("--val-images", metavar="LIST|DIR",
                   help="tune on these images (default: the calibration images)")
    p.add_argument("--try-methods", default=",".join(METHOD_NAMES), metavar="M[,M...]",
                   help="methods tried per layer before it goes to fp32 (default kl,aciq,eq; "
                        "'none' to go straight to fp32)")
    p.add_argument("--max-fp32-layers", type=int, default=None, metavar="N",
                   help="keep at most N layers in fp32 (default: no limit)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop trying layers after this long")
    p.add_argument("--runtime", choices=RUNTIMES, default="deployed",
                   help="ncnn options the int8 model is scored with (default: as deployed)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.set_defaults(func=cmd_tune, lists=[])


def _methods(text: str) -> tuple[Method, ...]:
    if text.strip().lower() == "none":
        return ()
    out = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    bad = [m for m in out if m not in METHOD_NAMES]
    if bad:
        raise UsageError(f"--try-methods {text!r}: unknown method {bad[0]!r}",
                         hint=f"give some of {','.join(METHOD_NAMES)}, or none")
    return tuple(Method(m) for m in out)


class Alternatives:
    """Per layer and method, the table lines that method gives it: KL and ACIQ from the
    histograms, EQ by a search on the device (lazily, one layer at a time)."""

    def __init__(self, model: Model, hs: HistogramSet, eq_source: SampleSource,
                 work: Path, device: Any) -> None:
        from edgecal.workflows.calibrate import table_from_histograms

        self.model = model
        self.tables: dict[str, TableBuild] = {m: table_from_histograms(model, hs, m)
                       for m in Method if not METHODS[m].needs_device}
        self.eq_source = eq_source
        self.work = work
        self.device = device
        self.eq_shards: list[Path] | None = None
        self.eq: dict[str, dict[str, np.ndarray]] = {}

    def __call__(self, layer: str, method: str) -> dict[str, np.ndarray] | None:
        if method in self.tables:
            table = self.tables[method].table
            keys = (layer, weight_key(layer))
            return {k: table.records[k] for k in keys if k in table.records} or None
        if method == Method.EQ:
            return self.eq_records(layer)
        return None

    def eq_records(self, layer: str) -> dict[str, np.ndarray] | None:
        from edgecal.device import capture
        from edgecal.workflows.calibrate import eq_layer
        from edgecal_agent.protocol import EQ_MAX_SAMPLES

        if layer in self.eq:
            return self.eq[layer]
        obj = next((x for x in self.model.calibrated_layers if x.name == layer), None)
        kl = self.tables[Method.KL].table
        if obj is None or layer not in kl.records or weight_key(layer) not in kl.records:
            return None
        n = min(self.eq_source.n_samples, EQ_MAX_SAMPLES)
        source = self.eq_source.subset(range(n))
        if self.eq_shards is None:
            d = self.work / "eq-shards"
            d.mkdir(parents=True, exist_ok=True)
            self.eq_shards = capture.write_shards(iter(source), source.specs, d, 64)
        ws, bs, _ = eq_layer(self.model, kl, obj, source, self.eq_shards, self.device)
        self.eq[layer] = {layer: np.array([bs], np.float32), weight_key(layer): ws}
        return self.eq[layer]

    def thresholds(self, final: CalibrationTable, methods: dict[str, str]) -> ThresholdsDoc:
        """thresholds.json: per layer abs-max, the KL/ACIQ/EQ thresholds, the one chosen."""
        out: dict[str, LayerThresholds] = {}
        per = {m: {i.name: i for i in b.per_layer} for m, b in self.tables.items()}
        for name, info in per[Method.KL].items():
            eq = self.eq.get(name)
            scale = final.blob_scale(name)
            out[name] = LayerThresholds(
                layer=name,
                blob=self.model.param.layers[
                    [x.name for x in self.model.param.layers].index(name)].bottoms[0],
                absmax=float(info.absmax),
                kl=float(info.threshold),
                aciq=float(per[Method.ACIQ][name].threshold)
                if name in per[Method.ACIQ] else None,
                eq=float(127.0 / float(eq[name][0])) if eq else None,
                chosen_method=methods.get(name, "fp32" if scale is None else "table"),
                chosen=float(127.0 / float(scale)) if scale is not None else None,
            )
        return ThresholdsDoc(out)


def cmd_tune(args: argparse.Namespace) -> int:
    from edgecal.inputs.labels import labels_for, parse_labels
    from edgecal.int8.convert import quantize_model
    from edgecal.quality.sensitivity import quantized_layer_names
    from edgecal.quality.tuning import TuneConfig, TuneDoc, tune
    from edgecal.workflows.calibrate import calibrate
    from edgecal.workflows.scoring import Scorer
    from edgecal.workflows.sensitivity import measure_sensitivity
    from edgecal.workflows.validate import validate

    t_start = time.monotonic()
    if args.max_drop < 0:
        raise UsageError(f"--max-drop {args.max_drop}: must be 0 or more points")
    if args.max_fp32_layers is not None and args.max_fp32_layers < 0:
        raise UsageError("--max-fp32-layers must be 0 or more")
    try_methods = _methods(args.try_methods)
    check_folder("--out-dir", args.out_dir)
    outs = folder_outputs("--out-dir", args.out_dir, [
        RUN_JSON, TABLE, INT8_PARAM, INT8_BIN, HISTOGRAMS, THRESHOLDS, SENSITIVITY, VALIDATION,
        TUNE, REPORT])
    ins = [*input_paths("MODEL.param", [args.param]), *input_paths("MODEL.bin", [args.bin]),
           *input_paths("--table", [args.table]), *input_paths("--labels", [args.labels]),
           *input_paths("sample list", [p for _, p in args.lists]),
           *input_paths("--val-images", [args.val_images])]
    check_outputs(outs, ins)  # before any work
    model = load_model(Path(args.param), Path(args.bin))
    if not args.lists:
        raise UsageError("give the calibration images: --images LIST|DIR (or --npy LIST)")
    specs = specs_from_options(model, args)
    calib = make_sample_source(specs, [read_list(Path(p)) for _, p in args.lists])
    if args.val_images:
        if len(specs) != 1:
            raise UsageError("--val-images is for single-input models")
        val = make_sample_source(specs, [read_list(Path(args.val_images))])
    else:
        val = calib
    check_outputs(outs, [*ins, *sample_inputs(calib.paths), *sample_inputs(val.paths)])
    labels = None
    if args.labels:
        mapping = parse_labels(read_text(Path(args.labels), "labels file"), args.labels)
        labels = labels_for(mapping, list(val.paths[0]), args.labels, n_classes(model))
    given = None
    if args.table:
        given = parse_table(read_text(Path(args.table), "table"), source=str(args.table))
        try:
            quantize_model(model.param, model.weights, given)
        except TableError as exc:
            raise TableError(f"{args.table}: {exc.message}", hint=exc.hint) from None
    out_dir = Path(args.out_dir)
    threads = effective_threads(args, args.runtime)
    say = (lambda text: None) if args.quiet else (
        lambda text: sys.stderr.write(f"edgecal: {text}\n"))
    with tempfile.TemporaryDirectory(prefix="edgecal-tune-") as tmp, \
            open_device(args, threads) as device, progress_bars(args) as bars:
        work = Path(tmp)
        run = calibrate(model, calib, [device], method=args.method if given is None else Method.KL,
                        keep_histograms=True, progress=bars.task)
        table = given if given is not None else run.table
        alternatives = Alternatives(model, run.histograms, calib, work, device)
        if METHODS[Method(args.method)].needs_device and given is None:
            for r in run.eq:
                layer = r.layer
                alternatives.eq[layer] = {k: v for k, v in run.table.records.items()
                                          if k in (layer, weight_key(layer))}
        scorer = Scorer(device, model, val, work / "scoring", labels=labels,
                        runtime=args.runtime, threads=threads, progress=bars.task)
        sens_doc: dict[str, Any] = {}

        def sensitivity(tab: CalibrationTable, score: Any) -> Any:
            sens = measure_sensitivity(scorer, tab, all_int8=score)
            sens_doc.update(sens.to_dict())
            return sens

        quantized = quantized_layer_names(model, table)
        config = TuneConfig(max_drop=args.max_drop, methods=try_methods,
                            max_fp32_layers=args.max_fp32_layers,
                            time_budget_s=args.time_budget)
        start_method = args.method if given is None else "table"
        result = tune(scorer, table, start_method, quantized, sensitivity, alternatives,
                      config, say=say)
        if not sens_doc:  # within target from the start: rank the layers for the report
            sensitivity(table, result.initial)
        # from the table as written (%f values), so that ncnn2int8 or `edgecal quantize` with
        # DIR/calibration.table makes exactly DIR/int8.bin
        written = render_table(result.table)
        text, data, _ = quantize_model(model.param, model.weights, parse_table(written))
        (work / "final.param").write_text(text, encoding="utf-8")
        (work / "final.bin").write_bytes(data)
        final = load_model(work / "final.param", work / "final.bin")
        res = validate(device, model, final, val, labels=labels, runtime=args.runtime,
                       threads=threads, progress=bars.task)
        res.device = device_facts(device, getattr(args, "device", None), args)
    metric = "accuracy" if labels is not None else "agreement"
    tune_doc = TuneDoc.of(result, start_method, args.max_drop, metric,
                          evaluations=scorer.evaluations, seconds=time.monotonic() - t_start,
                          fp32_latency_ms=scorer.latency_fp32_ms,
                          try_methods=tuple(try_methods)).to_dict()
    ns = argparse.Namespace(param=args.param, bin=args.bin, int8_param=INT8_PARAM,
                            int8_bin=INT8_BIN, table=TABLE)
    inputs: dict[str, Any] = {
        "fp32_param": {"path": args.param, "sha256": model.param_sha256},
        "fp32_bin": {"path": args.bin, "sha256": model.bin_sha256},
        "images": {"count": calib.n_samples,
                   "sha256": images_digest(p for ps in calib.paths for p in ps)},
        "val_images": {"count": val.n_samples,
                       "sha256": images_digest(p for ps in val.paths for p in ps)},
    }
    if args.table:
        inputs["table"] = {"path": args.table, "sha256": file_sha256(Path(args.table))}
    if args.labels:
        inputs["labels"] = {"path": args.labels, "sha256": file_sha256(Path(args.labels))}
    rd = RunDir.create(out_dir, "tune", command_line(args), inputs)
    rd.write_all([  # all or nothing: a table never beside another run's int8 model
        (TABLE, written.encode()), (INT8_PARAM, text.encode()), (INT8_BIN, data),
        (HISTOGRAMS, histograms_to_bytes(run.histograms)),
        (THRESHOLDS, alternatives.thresholds(result.table, result.layer_methods).to_dict()),
        (SENSITIVITY, sens_doc),
        (VALIDATION, ValidationDoc([board_result(res, ns, model, final)]).to_dict()),
        (TUNE, tune_doc)])
    report = None
    if not args.no_report:
        from edgecal.report.page import write_report

        report = write_report(out_dir, None)
    print_summary(result, tune_doc, res, sens_doc, out_dir, report)
    return 0 if result.target_met else 1


def print_summary(result: Any, tune_doc: dict[str, Any], res: Any, sens: dict[str, Any],
                  out_dir: Path, report: Path | None) -> None:
    init, fin = result.initial, result.final
    unit = "accuracy" if tune_doc["metric"] == "accuracy" else "top-1 agreement"
    print("\n".join(render_board(res.to_dict())))
    if sens:
        print("\n".join(render_sensitivity(sens)))
    print(f"tune: drop in {unit}: {init.drop_points:.2f} -> {fin.drop_points:.2f} points "
          f"(target {tune_doc['max_drop']:g}); output cosine {init.cosine_mean:.6f} -> "
          f"{fin.cosine_mean:.6f}; {tune_doc['evaluations']} variants scored in "
          f"{tune_doc['seconds']:.1f} s")
    changed = {k: v for k, v in result.layer_methods.items()
               if v not in ("fp32", tune_doc["method"])}
    for layer, m in changed.items():
        print(f"  {layer}: {m} scales")
    for entry in tune_doc["fp32_layers"]:
        cost = entry["latency_cost_ms"]
        print(f"  {entry['layer']}: kept in fp32, latency cost "
              + ("?" if cost is None else f"{cost:+.3f} ms per image"))
    if not result.fp32_layers and not changed:
        print("  no layer changed")
    print(f"int8 latency {fin.latency_ms:.3f} ms per image (all-int8 {init.latency_ms:.3f} ms, "
          f"fp32 {tune_doc['fp32_latency_ms']:.3f} ms)")
    print(("target met: " if result.target_met else "target NOT met: ") + result.reason)
    print(f"wrote {out_dir / TABLE}, {out_dir / INT8_PARAM}, {out_dir / INT8_BIN}"
          + (f", {report}" if report is not None else ""))
