"""Tune: calibrate (or take a table), validate on the device, then fix the most harmful layers --
another calibration method for that layer, else fp32 -- until the drop is within ``max_drop``
(:func:`tune`).  The table, the int8 model, the figures and the report go to ``out_dir`` (a run
directory, all or nothing)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal.api.quantize import read_table
from edgecal.api.samples import (
    Inputs,
    ModelArg,
    PathArg,
    as_list,
    check_runtime,
    load_metric_labels,
    model_paths,
    open_samples,
    optional_path,
    resolve_model,
)
from edgecal.api.validate import (
    Validation,
    device_facts,
    provenance,
    with_files,
)
from edgecal.boards.open import boards_arg
from edgecal.calib.methods import CALIBRATE_NAMES, METHOD_NAMES, METHODS, Method, parse_method
from edgecal.calib.table import CalibrationTable, parse_table, render_table, weight_key
from edgecal.device.base import Device
from edgecal.errors import TableError, UsageError
from edgecal.files.outputs import (
    check_outputs,
    folder_outputs,
    input_paths,
    sample_inputs,
)
from edgecal.fleet.prepare import Devices, Say
from edgecal.inputs.arguments import (
    callable_arg,
    inputs_arg,
    model_arg,
    names_arg,
    number_arg,
    optional_int_arg,
    optional_number_arg,
    optional_path_arg,
    path_arg,
    progress_arg,
    threads_arg,
)
from edgecal.inputs.metricspec import MetricSpec, resolve_metric
from edgecal.inputs.model import load_model
from edgecal.inputs.spec import TensorInput
from edgecal.quality.latency import latency_doc, latency_of, slower_warning
from edgecal.quality.taskmetrics import Top1
from edgecal.quality.tuning import (
    RANKING_MIN,
    TuneDoc,
    TuneResult,
)
from edgecal.quality.validation import ValidationDoc, ValidationResult
from edgecal.runs.histfile import histograms_to_bytes
from edgecal.runs.rundir import (
    HISTOGRAMS,
    INT8_BIN,
    INT8_PARAM,
    REPORT,
    RESULT_SCHEMA,
    RUN_JSON,
    SENSITIVITY,
    TABLE,
    THRESHOLDS,
    TUNE,
    VALIDATION,
    RunDir,
    file_sha256,
)
from edgecal.workflows.calibrate import ProgressFactory
from edgecal.workflows.validate import Reference
from edgecal.workflows.validate import validate as validate_on

#: How the ranking images are chosen (tune.json's ``ranking.how``).
RANKING_HOW = (
    "the images where an int8 model scored before ranking disagreed with fp32 on top-1, then "
    "a class-stratified sample (fixed seed), a quarter of the images (at least 64); the "
    "winners and every reported figure are scored on every image"
)
#: The same, with a task metric other than top-1.
RANKING_HOW_METRIC = (
    "the images on which an int8 model scored before ranking lost the most of the metric "
    "(scored on each image alone; up to half of the subset, worst first), then a random "
    "sample of the others (fixed seed), a quarter of the images (at least 64); the winners "
    "and every reported figure are scored on every image"
)


def candidate_names() -> list[str]:
    """What ``--try-methods`` takes: the methods, then the other threshold rules by name
    (``edgecal.workflows.alternatives.RULES``)."""
    from edgecal.workflows.alternatives import RULES

    return [*METHOD_NAMES, *(r for r in RULES if r not in METHOD_NAMES)]


def parse_try_methods(text: str) -> tuple[str, ...]:
    """``--try-methods``: comma-separated method (or rule) names, each once, or ``none``
    alone."""
    names = [m.strip().lower() for m in text.split(",")]
    known = candidate_names()
    hint = f"give some of {','.join(known)} (each once, comma-separated), or none alone"
    if names == ["none"]:
        return ()
    if any(not m for m in names):
        raise UsageError(
            f"--try-methods {text!r}: an empty item (two commas in a row, or one at an end)",
            hint=hint,
        )
    if "none" in names:
        raise UsageError(
            f"--try-methods {text!r}: none means no method at all, so it must be given alone",
            hint="give --try-methods none (straight to fp32), or the methods without none",
        )
    bad = [m for m in names if m not in known]
    if bad:
        raise UsageError(f"--try-methods {text!r}: unknown method {bad[0]!r}", hint=hint)
    twice = sorted({m for m in names if names.count(m) > 1}, key=names.index)
    if twice:
        raise UsageError(
            f"--try-methods {text!r}: {', '.join(twice)} given more than once",
            hint=f"give each method once, e.g. --try-methods {','.join(dict.fromkeys(names))}",
        )
    return tuple(Method(m) if m in METHOD_NAMES else m for m in names)


def check_limits(
    max_drop: object, max_fp32_layers: object, time_budget: object
) -> tuple[float, int | None, float | None]:
    """The search's target and limits, as ``(max_drop, max_fp32_layers, time_budget)``:
    ``max_drop`` points and ``time_budget`` seconds finite numbers >= 0 (None: no budget),
    ``max_fp32_layers`` a whole number >= 0 (None: no limit); anything else (NaN, a negative
    budget) a :class:`UsageError` naming the argument, before any work."""
    return (
        number_arg(max_drop, "max_drop", 0),
        optional_int_arg(max_fp32_layers, "max_fp32_layers", 0),
        optional_number_arg(time_budget, "time_budget", 0),
    )


@dataclass
class Tuned:
    """What a tuning gave: the search (:attr:`result`, with the final table), its document
    (``tune.json``), the final int8 model's validation on the device, the sensitivity ranking.
    :meth:`to_dict` holds the documents the run directory has."""

    result: TuneResult
    tune: dict[str, Any]  # tune.json
    validation: Validation  # the final int8 model (out_dir's files) on the device
    sensitivity: dict[str, Any]  # sensitivity.json
    out_dir: str
    report: str | None = None  # report.html (None: not written)

    @property
    def target_met(self) -> bool:
        return bool(self.result.target_met)

    @property
    def table(self) -> CalibrationTable:
        return self.result.table

    @property
    def board(self) -> ValidationResult:
        """The final int8 model's figures on the device."""
        return self.validation.results[0]

    def validation_doc(self) -> dict[str, Any]:
        """validation.json of the run directory."""
        return self.validation.document()

    def to_dict(self) -> dict[str, Any]:
        """The run directory's documents as written (tune.json, validation.json,
        sensitivity.json), and where it is."""

        def doc(obj: dict[str, Any]) -> dict[str, Any]:
            return {"schema": RESULT_SCHEMA, **obj}

        return {
            "out_dir": self.out_dir,
            "report": self.report,
            "tune": doc(self.tune),
            "validation": doc(self.validation_doc()),
            "sensitivity": doc(self.sensitivity),
        }


def _board_of(devs: Devices, device: Device) -> Any:
    """The board ``device`` is (None: this machine): the only one named, or the one of its
    name."""
    if len(devs.all_names) == 1:
        return devs.board(devs.all_names[0])
    for name in devs.all_names:
        board = devs.board(name)
        if board is not None and board.name == device.name:
            return board
    return None


def tune(
    model: ModelArg,
    inputs: Inputs,
    *,
    max_drop: float,
    out_dir: PathArg,
    method: str | Method = Method.KL,
    table: PathArg | None = None,
    labels: PathArg | None = None,
    metric: MetricSpec | None = None,
    charset: PathArg | None = None,
    iou_threshold: float | None = None,
    val_inputs: PathArg | None = None,
    try_methods: str | Sequence[str | Method] = CALIBRATE_NAMES,
    max_fp32_layers: int | None = None,
    time_budget: float | None = None,
    devices: Devices | str | Sequence[str] | None = None,
    boards: PathArg | None = None,
    accept_new_host_key: bool = False,
    runtime: str = "deployed",
    threads: int | None = None,
    report: bool = True,
    progress: ProgressFactory | None = None,
    say: Say | None = None,
    steps: Say | None = None,
    command: Sequence[str] = ("edgecal", "tune"),
) -> Tuned:
    """Tune the int8 model of ``model`` (loaded, or its ``(param, bin)``) calibrated over
    ``inputs`` until its drop -- in top-1 accuracy points with ``labels``, else in top-1
    agreement with fp32; with ``metric``, in that metric's points -- is at most ``max_drop``,
    on the devices ``devices`` (a name of the boards file ``boards``, ``user@host[:port]``, a
    labgrid place, several of them, a :class:`Devices`; None for this machine).  With several
    devices (boards of one profile, or with ``runtime="calibration"`` on this machine one agent
    per core) the calibration and the scoring of every variant are spread over them; the final
    int8 model is validated on the first.

    ``metric``: the task metric the drop is measured in, on all of the model's outputs -- a
    built-in name (``top1``, ``fidelity``, ``ctc``, ``iou``), ``module:function``,
    ``path/to/file.py:function`` or a callable ``fn(fp32_outputs, int8_outputs, labels)`` (see
    :mod:`edgecal.quality.taskmetrics`; ``labels`` then gives it each sample's text);
    ``charset``: ``ctc``'s character list file; ``iou_threshold``: ``iou``'s binarization
    threshold; ``method``: the starting table's method, or ``table``: start from this table;
    ``val_inputs``: score on this list instead of the calibration images (single-input
    models); ``try_methods``: tried per harmful layer before fp32 (``"none"``: straight to
    fp32); ``max_fp32_layers``/``time_budget``: limits of the search; ``report``: also write
    report.html; ``say``: notes (preprocessing defaults); ``steps``: one line per step of the
    search."""
    from edgecal.int8.convert import quantize_model
    from edgecal.quality.sensitivity import quantized_layer_names
    from edgecal.quality.tuning import TuneConfig
    from edgecal.quality.tuning import tune as search
    from edgecal.workflows.alternatives import Alternatives
    from edgecal.workflows.calibrate import calibrate
    from edgecal.workflows.scoring import RankingScorer, Scorer
    from edgecal.workflows.sensitivity import measure_sensitivity

    t_start = time.monotonic()
    model, inputs, out_dir = model_arg(model), inputs_arg(inputs), path_arg(out_dir, "out_dir")
    table, labels, charset, val_inputs = (
        optional_path_arg(v, n)
        for v, n in (
            (table, "table"),
            (labels, "labels"),
            (charset, "charset"),
            (val_inputs, "val_inputs"),
        )
    )
    iou_threshold = optional_number_arg(iou_threshold, "iou_threshold")
    threads, boards = threads_arg(threads), boards_arg(boards)
    progress, say = progress_arg(progress), callable_arg(say, "say")
    steps = callable_arg(steps, "steps")
    if not isinstance(try_methods, str):  # a str: the command line's text form
        try_methods = names_arg(try_methods, "try_methods", "method names")
    max_drop, max_fp32_layers, time_budget = check_limits(max_drop, max_fp32_layers, time_budget)
    runtime = check_runtime(runtime)
    methods = (  # a list as its text form (every name known, none alone: no method)
        parse_try_methods(try_methods if isinstance(try_methods, str) else ",".join(try_methods))
        if try_methods
        else ()
    )
    start = parse_method(method).value
    out_s = os.fspath(out_dir)
    table_s, labels_s, val_s = (
        optional_path(table),
        optional_path(labels),
        optional_path(val_inputs),
    )
    charset_s = optional_path(charset)
    task = resolve_metric(metric, charset=charset_s, iou_threshold=iou_threshold)
    param, binf = model_paths(model)
    items = as_list(inputs)
    outs = folder_outputs(
        "--out-dir",
        out_s,
        [
            RUN_JSON,
            TABLE,
            INT8_PARAM,
            INT8_BIN,
            HISTOGRAMS,
            THRESHOLDS,
            SENSITIVITY,
            VALIDATION,
            TUNE,
            REPORT,
        ],
    )
    ins = [
        *input_paths("MODEL.param", [param]),
        *input_paths("MODEL.bin", [binf]),
        *input_paths("--table", [table_s]),
        *input_paths("--labels", [labels_s]),
        *input_paths("sample list", [os.fspath(i.samples) for i in items]),
        *input_paths("--val-images", [val_s]),
        *input_paths("--charset", [charset_s]),
    ]
    check_outputs(outs, ins)  # before any work
    loaded = resolve_model(model)
    if not items:
        raise UsageError("give the calibration images: --images LIST|DIR (or --npy LIST)")
    calib = open_samples(loaded, items, say=say)
    if val_s:
        if len(items) != 1:
            raise UsageError("--val-images is for single-input models")
        one = items[0]
        other = (
            dataclasses.replace(one, npy=val_s)
            if isinstance(one, TensorInput)
            else dataclasses.replace(one, images=val_s)
        )
        val = open_samples(loaded, [other])
    else:
        val = calib
    check_outputs(outs, [*ins, *sample_inputs(calib.paths), *sample_inputs(val.paths)])
    label_list, task_labels = load_metric_labels(labels_s, val, loaded, task)
    given = None
    if table_s:
        given = read_table(table_s)
        try:
            quantize_model(loaded.param, loaded.weights, given)
        except TableError as exc:
            raise TableError(f"{table_s}: {exc.message}", hint=exc.hint) from None
    devs = dataclasses.replace(
        Devices.of(devices, boards=boards, accept_new_host_key=accept_new_host_key),
        purpose="tune",
        mixable=False,
        mixed_boards=False,
    )
    name = devs.all_names[0]
    n_threads = devs.threads_for(runtime, name, threads)
    with (
        tempfile.TemporaryDirectory(prefix="edgecal-tune-") as tmp,
        devs.open(runtime, threads, say=say) as fleet,
    ):
        # the first device: the final validation, the facts; every device: the calibration
        # and the scoring of the variants (shards spread over them)
        device = fleet[0]
        work = Path(tmp)
        run = calibrate(
            loaded,
            calib,
            fleet,
            method=start if given is None else Method.KL,
            keep_histograms=True,
            progress=progress,
        )
        tab = given if given is not None else run.table
        ref = Reference(device, loaded, val, label_list, runtime, n_threads, task, task_labels)
        scorer = Scorer(ref, work / "scoring", devices=fleet, say=say, progress=progress)
        # EQ per layer on the first device still alive when it is asked for
        alternatives = Alternatives(loaded, run.histograms, calib, work, scorer.first_alive)
        if METHODS[Method(start)].needs_device and given is None:
            for r in run.eq:
                layer = r.layer
                alternatives.eq[layer] = {
                    k: v for k, v in run.table.records.items() if k in (layer, weight_key(layer))
                }
        ranking: RankingScorer | None = None
        if scorer.n_samples >= 2 * RANKING_MIN:
            size = max(RANKING_MIN, scorer.n_samples // 4)
            ranking = RankingScorer(scorer, work / "ranking", size)
        sens_doc: dict[str, Any] = {}

        def stop() -> bool:
            return time_budget is not None and time.monotonic() - t_start >= time_budget

        def sensitivity(t: CalibrationTable, score: Any) -> Any:
            if ranking is not None:  # on the ranking images: the base too
                sens = measure_sensitivity(ranking.scorer(), t, only_int8=False, stop=stop)
            else:
                sens = measure_sensitivity(scorer, t, all_int8=score, only_int8=False, stop=stop)
            sens_doc.update(sens.to_dict())
            return sens

        quantized = quantized_layer_names(loaded, tab)
        config = TuneConfig(
            max_drop=max_drop,
            methods=methods,
            max_fp32_layers=max_fp32_layers,
            time_budget_s=time_budget,
        )
        start_method = start if given is None else "table"
        starts = {start_method: tab}
        for m in methods:  # the other candidates' whole-model tables
            whole = alternatives.whole(m)
            if (
                m not in starts
                and whole is not None
                and quantized_layer_names(loaded, whole) == quantized
            ):
                starts[m] = whole
        result = search(
            scorer,
            starts,
            quantized,
            sensitivity,
            alternatives,
            config,
            rank_scorer=ranking,
            spent_s=time.monotonic() - t_start,
            say=steps or (lambda text: None),
        )
        if not sens_doc and not stop():  # within target from the start: rank for the report
            sensitivity(tab, result.initial)
        # from the table as written (%f values), so that ncnn2int8 or `edgecal quantize` with
        # DIR/calibration.table makes exactly DIR/int8.bin
        written = render_table(result.table)
        text, data, _ = quantize_model(loaded.param, loaded.weights, parse_table(written))
        (work / "final.param").write_text(text, encoding="utf-8")
        (work / "final.bin").write_bytes(data)
        final = load_model(work / "final.param", work / "final.bin")
        alive = scorer.first_alive()
        if alive is not device:  # the first device was given up mid-tune
            device, ref = alive, dataclasses.replace(ref, device=alive)
        res = validate_on(ref, final, progress=progress)
        res.device = device_facts(device, _board_of(devs, device))
        fp32_secs, int8_secs = scorer.latencies(work / "final.param", work / "final.bin")
        device_bytes = scorer.device_bytes
        scoring_devices = (
            None
            if scorer.fleet is None
            else tuple(a.to_dict() for a in scorer.fleet.accounts.values())
        )
        figures = {
            k: f
            for k, f in (
                ("initial", scorer.figures_of(result.initial)),
                ("final", scorer.figures_of(result.final)),
            )
            if f is not None
        }
        host_bytes = scorer.bytes_written + (
            ranking.sub.bytes_written if ranking and ranking.sub else 0
        )
        scorers = [scorer, *([ranking.sub] if ranking and ranking.sub else [])]
        incremental = {
            "variants": sum(x.incremental_evaluations for x in scorers),
            "layers_run": sum(x.layers_recomputed for x in scorers),
            "layers_whole": sum(x.layers_whole for x in scorers),
        }
    latency = {"int8": latency_doc(int8_secs), "fp32": latency_doc(fp32_secs)}
    slower = slower_warning(latency_of(int8_secs), latency_of(fp32_secs))
    ranked_on = (
        {
            "images": len(ranking.indices),
            "of": scorer.n_samples,
            "how": RANKING_HOW if task is None or isinstance(task, Top1) else RANKING_HOW_METRIC,
            "variants": ranking.sub.evaluations,
        }
        if ranking is not None and ranking.sub is not None
        else {
            "images": scorer.n_samples,
            "of": scorer.n_samples,
            "how": "every image",
            "variants": 0,
        }
    )
    doc = TuneDoc.of(
        result,
        start_method,
        max_drop,
        scorer.drop_of,
        evaluations=scorer.evaluations,
        seconds=time.monotonic() - t_start,
        fp32_latency_ms=scorer.latency_fp32_ms,
        try_methods=tuple(methods),
        latency=latency,
        warnings=() if slower is None else (slower,),
        ranking=ranked_on,
        metric_figures=figures if task is not None else None,
        devices=scoring_devices,
        incremental=incremental,
    )
    validation = Validation(
        ValidationDoc(
            [with_files(res, (param, binf), loaded, (INT8_PARAM, INT8_BIN), final, TABLE)]
        )
    )
    recorded = provenance(
        (param, binf), loaded, {"images": calib, "val_images": val}, table=table_s, labels=labels_s
    )
    if charset_s is not None:
        recorded["charset"] = {"path": charset_s, "sha256": file_sha256(Path(charset_s))}
    out = Path(out_s)
    rd = RunDir.create(out, "tune", list(command), recorded)
    files: list[tuple[str, Any]] = [  # all or nothing: a table never beside another's model
        (TABLE, written.encode()),
        (INT8_PARAM, text.encode()),
        (INT8_BIN, data),
        (HISTOGRAMS, histograms_to_bytes(run.histograms)),
        (THRESHOLDS, alternatives.thresholds(result.table, result.layer_methods).to_dict()),
        *([(SENSITIVITY, sens_doc)] if sens_doc else []),  # none: the time budget was spent
        (VALIDATION, validation.document()),
    ]
    # the run directory's bytes: the files above, tune.json itself and run.json (estimated
    # from the documents as JSON; the report comes after)
    run_bytes = sum(len(v) if isinstance(v, bytes) else len(json.dumps(v)) for _, v in files)
    disk = {"run_dir": run_bytes, "host_work": host_bytes, "device_work": device_bytes}
    tune_doc = dataclasses.replace(doc, disk_bytes=disk).to_dict()
    rd.write_all([*files, (TUNE, tune_doc)])
    page = None
    if report:
        from edgecal.report.page import write_report

        page = str(write_report(out, None))
    return Tuned(result, tune_doc, validation, sens_doc, out_s, page)
