"""Validate: an fp32 model and its int8 model (given, or made in memory from a table) run side by
side on one or several devices (one thread per board), with cross-board consistency and, on the
first device, per-layer sensitivity (:func:`validate`).

The result's :meth:`Validation.to_dict` is ``edgecal validate --json``; its
:meth:`Validation.document` is the validation document (``edgecal.runs.rundir``) that
``save_baseline`` and ``run_dir`` write and ``edgecal check`` gates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
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
from edgecal.boards.open import boards_arg
from edgecal.device.adb.device import AdbDevice
from edgecal.device.adb.facts import PhoneFacts
from edgecal.device.base import Device
from edgecal.errors import EdgecalError, TableError, UsageError
from edgecal.files.outputs import (
    Input,
    Output,
    check_outputs,
    folder_outputs,
    input_paths,
    sample_inputs,
    write_outputs,
)
from edgecal.fleet.pool import board_pool
from edgecal.fleet.prepare import Devices, Say
from edgecal.inputs.arguments import (
    callable_arg,
    inputs_arg,
    model_arg,
    number_arg,
    optional_model_arg,
    optional_number_arg,
    optional_path_arg,
    progress_arg,
    threads_arg,
)
from edgecal.inputs.metricspec import MetricSpec, resolve_metric
from edgecal.inputs.model import Model, load_model
from edgecal.inputs.samples import SampleSource
from edgecal.quality.consistency import (
    TOLERANCE_COSINE,
    TOLERANCE_DISAGREE,
    Consistency,
    compare_boards,
)
from edgecal.quality.validation import (
    Int8Files,
    ModelFiles,
    ValidationDoc,
    ValidationResult,
    check_same_network,
)
from edgecal.runs.rundir import (
    RUN_JSON,
    SENSITIVITY,
    VALIDATION,
    RunDir,
    dumps,
    file_sha256,
    images_digest,
)
from edgecal.workflows.calibrate import ProgressFactory
from edgecal.workflows.validate import Reference
from edgecal.workflows.validate import validate as validate_on


def validation_outputs(save_baseline: str | None, run_dir: str | None) -> list[Output]:
    """The files a validation writes (``-``: standard output)."""
    outs = (
        [Output("--save-baseline", save_baseline, text=True)] if save_baseline is not None else []
    )
    if run_dir is not None:  # "" too: refused as an empty name
        outs += folder_outputs("--run-dir", run_dir, [RUN_JSON, VALIDATION, SENSITIVITY])
    return outs


def validation_inputs(
    model: tuple[str | None, str | None],
    int8: tuple[str | None, str | None],
    *,
    table: str | None = None,
    labels: str | None = None,
    baseline: str | None = None,
    results: Sequence[str] = (),
    lists: Sequence[str] = (),
) -> list[Input]:
    """The files a validation (or a gate) reads, as inputs no output may overwrite (the
    samples come with the lists)."""
    out: list[Input] = []
    for role, path in (
        ("MODEL.param", model[0]),
        ("MODEL.bin", model[1]),
        ("INT8.param", int8[0]),
        ("INT8.bin", int8[1]),
        ("--table", table),
        ("--labels", labels),
    ):
        out += input_paths(role, [path])
    out += saved_validation_inputs("--baseline", [baseline])
    out += saved_validation_inputs("--results", list(results))
    out += input_paths("sample list", list(lists))
    return out


def saved_validation_inputs(role: str, paths: Sequence[str | None]) -> list[Input]:
    """The saved validations a gate reads (``baseline``, ``results``) as inputs no output may
    overwrite: each file, and of a run directory the folder and its ``validation.json`` (the
    file read in it)."""
    out: list[Input] = []
    for path in paths:
        if not path:
            continue
        out.append(Input(role, path))
        if os.path.isdir(path):
            out.append(
                Input(f"{role} run directory's {VALIDATION}", os.path.join(path, VALIDATION))
            )
    return out


@dataclass
class Validation:
    """What a validation gave: per device the figures (:attr:`results`, in the order the
    devices were given, with the models' files), the cross-board consistency (several
    devices), the sensitivity (when asked).  :meth:`to_dict` is ``edgecal validate --json``."""

    doc: ValidationDoc
    sensitivity: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None  # what a run directory records of the inputs
    save_baseline: str | None = None
    run_dir: str | None = None

    @property
    def results(self) -> list[ValidationResult]:
        return self.doc.results

    @property
    def consistency(self) -> Consistency | None:
        return self.doc.consistency

    def document(self) -> dict[str, Any]:
        """The validation document (``save_baseline``, ``run_dir``, ``edgecal check``)."""
        return self.doc.to_dict()

    def to_dict(self) -> dict[str, Any]:
        doc = self.document()
        if self.sensitivity is not None:
            doc["sensitivity"] = self.sensitivity
        return doc

    @property
    def diverging(self) -> list[str]:
        """The boards whose int8 outputs are unlike the others'."""
        return list(self.doc.consistency.diverging) if self.doc.consistency else []

    @property
    def top1_drop(self) -> float | None:
        """The first device's top-1 accuracy drop in points (None: no labels)."""
        r = self.results[0]
        if r.top1_fp32 is None or r.top1_int8 is None:
            return None
        return 100.0 * (float(r.top1_fp32) - float(r.top1_int8))

    @property
    def metric_drop(self) -> float | None:
        """The first device's points lost of the task metric (None: no ``metric``)."""
        m = self.results[0].metric
        return None if m is None else m.drop_points

    @property
    def agreement(self) -> float:
        """The first device's int8 vs fp32 top-1 agreement."""
        return float(self.results[0].agreement)

    @property
    def cosine_mean(self) -> float:
        """The first device's mean output cosine, int8 vs fp32."""
        return float(self.results[0].cosine_mean)


def device_facts(device: Device, board: Any) -> dict[str, Any]:
    """What the report and the gate show of a board: agent, ncnn, CPU, and its profile
    (``board``: its :class:`~edgecal.boards.config.Board`, None for this machine)."""
    facts: dict[str, Any] = {"name": device.name}
    with contextlib.suppress(EdgecalError):
        info = device.hello()
        keep = (
            "agent_version",
            "agent_kind",
            "target",
            "protocol",
            "python",
            "numpy",
            "ncnn",
            "machine",
            "cores",
            "cpu_features",
        )
        facts.update({k: info[k] for k in keep if k in info})
    facts["profile"] = board.profile if board is not None else None
    if isinstance(device, AdbDevice):  # a phone: what it is, where its cores are
        with contextlib.suppress(EdgecalError):
            facts.update(phone_summary(device.phone_facts()))
    return facts


def phone_summary(f: PhoneFacts) -> dict[str, Any]:
    """A phone's facts for the report and the gate (flat text)."""
    return {
        "phone": f.model or None,
        "android": f.android or None,
        "abi": f.abi or None,
        "cpu_clusters": "; ".join(
            f"{c.kind} {','.join(map(str, c.cpus))} {c.part or '?'}" for c in f.clusters
        )
        or None,
        "screen": f.screen,
        "throttled": "; ".join(f.throttled) or None,
    }


def with_files(
    res: ValidationResult,
    fp32: tuple[str | None, str | None],
    model: Model,
    int8: tuple[str | None, str | None],
    int8_model: Model,
    table: str | None,
) -> ValidationResult:
    """``res`` with the models' files (as given) and their digests."""
    return dataclasses.replace(
        res,
        fp32=ModelFiles(fp32[0], fp32[1], model.param_sha256, model.bin_sha256),
        int8=Int8Files(
            int8[0], int8[1], int8_model.param_sha256, int8_model.bin_sha256, table=table
        ),
    )


def validate(
    model: ModelArg,
    int8: ModelArg | None = None,
    *,
    table: PathArg | None = None,
    inputs: Inputs,
    labels: PathArg | None = None,
    metric: MetricSpec | None = None,
    charset: PathArg | None = None,
    iou_threshold: float | None = None,
    devices: Devices | str | Sequence[str | None] | None = None,
    boards: PathArg | None = None,
    accept_new_host_key: bool = False,
    runtime: str = "deployed",
    threads: int | None = None,
    sensitivity: bool = False,
    divergence_cosine: float = TOLERANCE_COSINE,
    divergence_top1: float = TOLERANCE_DISAGREE,
    save_baseline: PathArg | None = None,
    run_dir: PathArg | None = None,
    progress: ProgressFactory | None = None,
    say: Say | None = None,
    command: Sequence[str] = ("edgecal", "validate"),
    outputs: Sequence[Output] = (),
    other_inputs: Sequence[Input] = (),
) -> Validation:
    """Validate the int8 model of ``model`` -- ``int8`` (loaded, or its ``(param, bin)``) or
    made in memory from ``table`` -- over ``inputs`` on every device of ``devices`` (default:
    this machine; names of the boards file ``boards``, ``user@host[:port]`` or ``local``).

    ``labels``: a ``file,label`` CSV for top-1 accuracy (or, for ``metric``, the text each
    sample should give); ``metric``: also measure this task metric on all of the model's outputs
    -- a built-in name (``top1``, ``fidelity``, ``ctc``, ``iou``), ``module:function``,
    ``path/to/file.py:function`` or a callable ``fn(fp32_outputs, int8_outputs, labels)`` (see
    :mod:`edgecal.quality.taskmetrics`); ``charset``: ``ctc``'s character list file;
    ``iou_threshold``: ``iou``'s binarization threshold (default 0.3); ``threads``: ncnn
    threads (default: the board profile's, or every core); ``sensitivity``: also rank the
    layers by harm on the first device (needs ``table``); ``divergence_*``: the cross-board
    tolerances; ``save_baseline``/``run_dir``: write the validation document there (a run
    directory also records ``command`` and the inputs' digests); ``outputs``/``other_inputs``:
    the caller's own files, checked with these before any work; ``say``: notes (preprocessing
    defaults)."""
    model, int8 = model_arg(model), optional_model_arg(int8, "int8")  # before any work
    inputs, threads, boards = inputs_arg(inputs), threads_arg(threads), boards_arg(boards)
    table, labels, charset, save_baseline, run_dir = (
        optional_path_arg(v, n)
        for v, n in (
            (table, "table"),
            (labels, "labels"),
            (charset, "charset"),
            (save_baseline, "save_baseline"),
            (run_dir, "run_dir"),
        )
    )
    iou_threshold = optional_number_arg(iou_threshold, "iou_threshold")
    divergence_cosine = number_arg(divergence_cosine, "divergence_cosine")
    divergence_top1 = number_arg(divergence_top1, "divergence_top1", 0)
    progress, say = progress_arg(progress), callable_arg(say, "say")
    runtime = check_runtime(runtime)
    fp32_paths = model_paths(model)
    int8_paths: tuple[str | None, str | None] = (None, None) if int8 is None else model_paths(int8)
    table_s, labels_s = optional_path(table), optional_path(labels)
    baseline_s, run_s = optional_path(save_baseline), optional_path(run_dir)
    charset_s = optional_path(charset)
    task = resolve_metric(metric, charset=charset_s, iou_threshold=iou_threshold)
    loaded = resolve_model(model)
    items = as_list(inputs)
    if not items:
        raise UsageError("give the images to validate on: --images LIST|DIR (or --npy LIST)")
    outs = [*validation_outputs(baseline_s, run_s), *outputs]
    ins = [
        *validation_inputs(
            fp32_paths,
            int8_paths,
            table=table_s,
            labels=labels_s,
            lists=[os.fspath(i.samples) for i in items],
        ),
        *input_paths("--charset", [charset_s]),
        *other_inputs,
    ]
    check_outputs(outs, ins)  # before any work
    source = open_samples(loaded, items, say=say)
    check_outputs(outs, [*ins, *sample_inputs(source.paths)])
    label_list, task_labels = load_metric_labels(labels_s, source, loaded, task)
    devs = Devices.of(devices, boards=boards, accept_new_host_key=accept_new_host_key)
    names = list(devs.all_names)
    with tempfile.TemporaryDirectory(prefix="edgecal-validate-") as tmp:
        int8_model = _int8_model(
            loaded, int8, table_s, fp32_paths[0], int8_paths[0], Path(tmp), say
        )

        stop = threading.Event()

        def one(name: str | None) -> ValidationResult:
            n = devs.threads_for(runtime, name, threads)
            with devs.open_one(name, n) as device:
                ref = Reference(device, loaded, source, label_list, runtime, n, task, task_labels)
                res = validate_on(ref, int8_model, progress=_stopping(progress, stop))
                res.device = device_facts(device, devs.board(name))
            return res

        with board_pool(len(names)) as pool:
            futures = [pool.submit(one, name) for name in names]
            try:
                results = [f.result() for f in futures]
            except BaseException:  # Ctrl-C, or a board failed: the others stop at their next image
                stop.set()
                raise
        sens = None
        if sensitivity:
            sens = _sensitivity(
                loaded,
                source,
                label_list,
                table_s,
                devs,
                names[0],
                runtime,
                threads,
                Path(tmp),
                progress,
            )
    doc = ValidationDoc(
        [with_files(r, fp32_paths, loaded, int8_paths, int8_model, table_s) for r in results]
    )
    if len(results) > 1:
        found = {r.device["name"]: r.int8_outputs for r in results}
        got = {k: v for k, v in found.items() if v is not None}
        if len(got) < len(found):
            raise UsageError("no images were validated")
        doc.consistency = compare_boards(
            got, tol_cosine=divergence_cosine, tol_disagree=divergence_top1
        )
    out = Validation(
        doc=doc,
        sensitivity=sens,
        provenance=provenance(
            fp32_paths,
            loaded,
            {"images": source},
            lists={"images": [os.fspath(i.samples) for i in items]},
            int8=(int8_paths, int8_model),
            table=table_s,
            labels=labels_s,
        ),
        save_baseline=baseline_s,
        run_dir=run_s,
    )
    _write(out, command)
    return out


def _write(v: Validation, command: Sequence[str]) -> None:
    doc = v.document()
    write_outputs([(Path(v.save_baseline), dumps(doc))] if v.save_baseline else [])
    if v.run_dir:
        rd = RunDir.create(Path(v.run_dir), "validate", list(command), v.provenance or {})
        rd.write_all(
            [(VALIDATION, doc)]  # all or nothing
            + ([(SENSITIVITY, v.sensitivity)] if v.sensitivity is not None else [])
        )


def _stopping(progress: ProgressFactory | None, stop: threading.Event) -> ProgressFactory:
    """``progress``, whose ticks raise ``KeyboardInterrupt`` once ``stop`` is set: a board's
    validation (in a pool thread) then stops at its next image instead of running to the end
    while the interrupted command waits for it."""

    def factory(label: str, total: int) -> Callable[[int, int], None]:
        tick = progress(label, total) if progress is not None else None

        def checked(done: int, n: int) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            if tick is not None:
                tick(done, n)

        return checked

    return factory


def _int8_model(
    model: Model,
    int8: ModelArg | None,
    table: str | None,
    fp32_param: str,
    int8_param: str | None,
    tmp: Path,
    say: Say | None = None,
) -> Model:
    """The int8 model to validate: the given one, or ``table`` converted into ``tmp`` (the
    conversion's warnings, e.g. a layer the table has no activation line for, said)."""
    from edgecal.int8.convert import quantize_model

    if (int8 is None) == (table is None):
        raise UsageError(
            "give either INT8.param INT8.bin or --table TABLE",
            hint="with --table the int8 model is made in memory from the table",
        )
    if int8 is not None:
        out = resolve_model(int8)
    else:
        assert table is not None
        scales = read_table(table)
        try:
            text, data, report = quantize_model(model.param, model.weights, scales)
        except TableError as exc:
            raise TableError(f"{table}: {exc.message}", hint=exc.hint) from None
        if say is not None:
            for w in report.warnings:
                say(f"warning: {w}")
        param, binf = tmp / "int8.param", tmp / "int8.bin"
        write_outputs([(param, text.encode()), (binf, data)])
        out = load_model(param, binf)
    check_same_network(
        model.param, out.param, fp32_param, int8_param or f"the int8 model of {table}"
    )
    return out


def _sensitivity(
    model: Model,
    source: SampleSource,
    labels: list[int] | None,
    table: str | None,
    devs: Devices,
    name: str | None,
    runtime: str,
    threads: int | None,
    tmp: Path,
    progress: ProgressFactory | None,
) -> dict[str, Any]:
    """Per-layer sensitivity of the table's int8 model on the first device."""
    from edgecal.workflows.scoring import Scorer
    from edgecal.workflows.sensitivity import measure_sensitivity

    if not table:
        raise UsageError(
            "--sensitivity needs --table (the variants are made from the table)",
            hint="pass the table the int8 model was made from",
        )
    scales = read_table(table)
    n = devs.threads_for(runtime, name, threads)
    with devs.open_one(name, n) as device:
        ref = Reference(device, model, source, labels, runtime, n)
        scorer = Scorer(ref, tmp / "scoring", progress=progress)
        sens = measure_sensitivity(scorer, scales)
    return sens.to_dict()


def provenance(
    fp32: tuple[str, str],
    model: Model,
    samples: dict[str, SampleSource],
    *,
    lists: dict[str, Sequence[str]] | None = None,
    int8: tuple[tuple[str | None, str | None], Model] | None = None,
    table: str | None = None,
    labels: str | None = None,
) -> dict[str, Any]:
    """What a run directory records of its inputs: paths as given and digests (``samples``:
    per key, the images' count and digest, and from ``lists`` the list file or folder they
    were given as: ``path``, or ``paths`` for a model of several inputs)."""
    out: dict[str, Any] = {
        "fp32_param": {"path": fp32[0], "sha256": model.param_sha256},
        "fp32_bin": {"path": fp32[1], "sha256": model.bin_sha256},
    }
    if int8 is not None:
        (param, binf), m = int8
        out["int8_param"] = {"path": param, "sha256": m.param_sha256}
        out["int8_bin"] = {"path": binf, "sha256": m.bin_sha256}
    for key, source in samples.items():
        given = list((lists or {}).get(key, ()))
        out[key] = {
            **({"path": given[0]} if len(given) == 1 else {"paths": given} if given else {}),
            "count": source.n_samples,
            "sha256": images_digest(p for paths in source.paths for p in paths),
        }
    if table:
        out["table"] = {"path": table, "sha256": file_sha256(Path(table))}
    if labels:
        out["labels"] = {"path": labels, "sha256": file_sha256(Path(labels))}
    return out
