"""Calibrate: a model and its samples in, an ncnn calibration table out, on one device or a
fleet, with a run directory that survives faults (:func:`calibrate`, :func:`resume`); and a table
from saved histograms without a device (:func:`table_from_histograms`).

Every shard's answer lands in the run directory (``run_dir``, else a temporary one kept only
when the run fails), so :func:`resume` finishes an interrupted run without redoing finished
shards and writes the table an uninterrupted run would have written.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecal.api.samples import (
    Inputs,
    ModelArg,
    check_runtime,
    list_inputs,
    model_inputs,
    open_samples,
    optional_path,
    resolve_model,
)
from edgecal.calib.build import LayerScaleInfo, TableBuild
from edgecal.calib.methods import METHODS, Method, parse_method
from edgecal.calib.table import CalibrationTable, render_table
from edgecal.errors import DeviceError, EdgecalError, InputFileError, UsageError
from edgecal.files.outputs import (
    Input,
    Output,
    check_outputs,
    folder_outputs,
    sample_inputs,
    write_outputs,
)
from edgecal.fleet.prepare import Devices, Say, transfer_summary, usable_cores
from edgecal.fleet.scheduler import FleetExhausted, RetryPolicy
from edgecal.inputs.arguments import (
    callable_arg,
    inputs_arg,
    model_arg,
    optional_int_arg,
    optional_path_arg,
    path_arg,
    progress_arg,
    threads_arg,
)
from edgecal.inputs.model import Model, load_model
from edgecal.inputs.samples import SampleSource
from edgecal.runs.calibrun import MANIFEST, CalibRun, build_manifest, check_unchanged, source_of
from edgecal.runs.histfile import HistogramSet, histograms_to_bytes
from edgecal.runs.rundir import RUN_JSON
from edgecal.workflows.calibrate import (
    EqLayerReport,
    ProgressFactory,
)
from edgecal.workflows.calibrate import (
    calibrate as calibrate_on,
)


@dataclass
class Calibration:
    """What a calibration gave: the table, its per-layer figures, and how it was made.
    :meth:`to_dict` is ``edgecal calibrate --json``."""

    table: CalibrationTable
    method: str
    n_samples: int
    runtime: str
    build: TableBuild  # per-layer abs-max, threshold and scale of the method's blob rule
    eq: list[EqLayerReport]
    warnings: list[str]
    timings_s: dict[str, float]
    device: dict[str, Any]  # the (first) agent's hello
    fleet: list[dict[str, Any]]  # per board: shards, samples, retries, lost
    transfer: dict[str, Any]  # bytes moved (and, for boards, transfer times)
    table_path: str | None = None
    histograms_path: str | None = None
    run_dir: str | None = None  # kept run directory (None: a temporary one, removed)
    histograms: HistogramSet | None = field(default=None, repr=False)

    @property
    def layers(self) -> list[LayerScaleInfo]:
        """Per calibrated layer: abs-max, threshold and scale as the table has them."""
        out = []
        for info in self.build.per_layer:
            scale = self.table.blob_scale(info.name)
            if scale is not None and METHODS[Method(self.method)].needs_device:
                make: Any = type(info)  # the threshold and scale EQ chose, as floats
                info = make(info.name, info.absmax, 127.0 / float(scale), float(scale))
            out.append(info)
        return out

    #: fields that are in the JSON document as they are
    _AS_IS = (
        "method",
        "n_samples",
        "runtime",
        "run_dir",
        "warnings",
        "timings_s",
        "device",
        "fleet",
    )

    def to_dict(self) -> dict[str, Any]:
        layers = [i.to_dict() for i in self.build.per_layer]
        return {
            **{name: getattr(self, name) for name in self._AS_IS},
            "table": self.table_path,
            "histograms": self.histograms_path,
            "layers": layers,
            Method.EQ.value: [vars(r) for r in self.eq],
            **self.transfer,
        }


def _outputs(out: str | None, histograms_out: str | None, run_dir: str | None) -> list[Output]:
    """What a run writes: the table (``-``: standard output), the histograms, the run
    directory's own files."""
    outs = [Output("--out", out, text=True)] if out is not None else []
    if histograms_out is not None:  # "" too: refused as an empty name
        outs.append(Output("--histograms-out", histograms_out))
    if run_dir is not None:
        outs += folder_outputs("--run-dir", run_dir, [RUN_JSON, MANIFEST])
    return outs


def calibrate(
    model: ModelArg,
    inputs: Inputs,
    *,
    out: str | os.PathLike[str] | None = None,
    method: str | Method = Method.KL,
    devices: Devices | str | Sequence[str] | None = None,
    runtime: str = "calibration",
    threads: int | None = None,
    histograms_out: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    allow_zero_blobs: bool = False,
    retries: int | None = None,
    progress: ProgressFactory | None = None,
    say: Say | None = None,
    command: Sequence[str] = ("edgecal", "calibrate"),
    resumable: bool = True,
    ncnn_compat: bool = False,
    also_writes: Sequence[Output] = (),
) -> Calibration:
    """Calibrate ``model`` (loaded, or its ``(param, bin)``) over ``inputs``
    (:class:`~edgecal.ImageInput` or :class:`~edgecal.TensorInput`, one per model input) on
    ``devices`` (default: this machine) and write the table to ``out`` (``-``: standard output;
    None: only returned).

    ``threads``: agent workers on this machine in the calibration runtime, ncnn threads in the
    deployed one (default: 1, or the board profile's; without it, EQ's per-layer search runs on
    one agent per usable core of this machine -- the table is the same).
    ``run_dir``: keep every shard's answer there, for :func:`resume` (default: a temporary
    folder, kept only if the run fails; with ``resumable=False`` none at all).
    ``command``: what the run directory records;
    ``ncnn_compat``: list files read as ncnn2table reads them (the current directory first);
    ``also_writes``: what the caller writes besides (e.g. JSON to standard output), checked
    with the outputs."""
    model, inputs = model_arg(model), inputs_arg(inputs)  # the arguments, before any work
    out, histograms_out, run_dir = (
        optional_path_arg(v, n)
        for v, n in ((out, "out"), (histograms_out, "histograms_out"), (run_dir, "run_dir"))
    )
    threads, retries = threads_arg(threads), optional_int_arg(retries, "retries", 1)
    progress, say = progress_arg(progress), callable_arg(say, "say")
    method = parse_method(method)
    runtime = check_runtime(runtime)
    devs = Devices.of(devices)
    out_s, hist_s, run_s = optional_path(out), optional_path(histograms_out), optional_path(run_dir)
    outs = [*_outputs(out_s, hist_s, run_s), *also_writes]
    check_outputs(outs, [*model_inputs(model), *list_inputs(inputs)])  # before any work
    loaded = resolve_model(model)
    source = open_samples(loaded, inputs, ncnn_compat=ncnn_compat, say=say)
    check_outputs(outs, [*model_inputs(model), *list_inputs(inputs), *sample_inputs(source.paths)])
    devs.check_same_profile()  # every device known (a mistyped name), before a run is made
    n_threads = devs.threads_for(runtime, devs.last_given, threads)
    run: CalibRun | None = None
    temporary = run_s is None
    if resumable:
        options = {
            "out": out_s if out_s is None or out_s == "-" else str(Path(out_s).resolve()),
            "histograms_out": str(Path(hist_s).resolve()) if hist_s else None,
            "allow_zero_blobs": bool(allow_zero_blobs),
            "devices": list(devs.names),
            "group": devs.group,
            "boards": devs.boards,
            "mixed_boards": devs.mixed_boards,
        }
        manifest = build_manifest(
            loaded,
            source,
            method=method,
            runtime=runtime,
            threads=n_threads,
            histograms=METHODS[method].needs_histograms or bool(hist_s),
            options=options,
            workers=devs.workers(runtime, n_threads),
        )
        path = (
            Path(run_s)
            if run_s is not None
            else Path(tempfile.mkdtemp(prefix="edgecal-run-")) / "run"
        )
        try:
            run = CalibRun.create(path, manifest, list(command))
        except BaseException:
            if temporary:
                shutil.rmtree(path.parent, ignore_errors=True)
            raise
    return _run(
        loaded,
        source,
        devs,
        method=method,
        runtime=runtime,
        threads=n_threads,
        thread_option=threads,
        out=out_s,
        histograms_out=hist_s,
        allow_zero_blobs=allow_zero_blobs,
        retries=retries,
        run=run,
        temporary=temporary,
        progress=progress,
        say=say,
    )


def resume(
    run_dir: str | os.PathLike[str],
    *,
    devices: Devices | str | Sequence[str] | None = None,
    retries: int | None = None,
    progress: ProgressFactory | None = None,
    say: Say | None = None,
    command: Sequence[str] = ("edgecal", "calibrate", "--resume"),
    also_writes: Sequence[Output] = (),
) -> Calibration:
    """Finish the run of ``run_dir``: model, samples, method and outputs come from its
    manifest; ``devices`` may name other boards (default: the run's own)."""
    run_dir, retries = path_arg(run_dir, "run_dir"), optional_int_arg(retries, "retries", 1)
    progress, say = progress_arg(progress), callable_arg(say, "say")
    path = Path(run_dir)
    if not (path / RUN_JSON).is_file():  # the hint names calibrate's own resumable folder
        raise InputFileError(
            f"--resume {path}: not a calibration run directory ("
            + (f"no {RUN_JSON} in it" if path.is_dir() else "no such folder")
            + ")",
            hint="pass the --run-dir of an interrupted `edgecal calibrate` run, or the folder "
            "its error message named",
        )
    run = CalibRun.open(path, list(command))
    try:
        m = run.manifest
        opts = m.options
        out, hist = opts.get("out"), opts.get("histograms_out")
        check_outputs(
            [*_outputs(out, hist, None), *also_writes],
            [Input("model .param", m.param), Input("model .bin", m.bin), *sample_inputs(m.samples)],
        )
        model = load_model(Path(m.param), Path(m.bin))
        check_unchanged(m, model, os.fspath(run_dir))
        devs = _resume_devices(devices, opts, path)
    except BaseException:
        run.close()
        raise
    return _run(
        model,
        source_of(m),
        devs,
        method=parse_method(m.method),
        runtime=m.runtime,
        threads=int(m.threads or 1),
        thread_option=m.threads,
        out=out,
        histograms_out=hist,
        allow_zero_blobs=bool(opts.get("allow_zero_blobs")),
        retries=retries,
        run=run,
        temporary=False,
        progress=progress,
        say=say,
    )


def _resume_devices(
    devices: Devices | str | Sequence[str] | None, opts: dict[str, Any], path: Path
) -> Devices:
    """The devices a resumed run goes on: ``devices``, else the run's own (its manifest's
    ``options``), every one known before the run is touched.  A device that is not (a mistyped
    name) leaves the run as it was: the hint says to resume it with a valid one."""
    try:
        given = Devices.of(devices)
        devs = Devices.of(
            [n for n in given.names if n is not None]
            if (given.names or given.group)
            else list(opts.get("devices") or []),
            boards=given.boards if given.boards is not None else opts.get("boards"),
            group=given.group if (given.names or given.group) else opts.get("group"),
            accept_new_host_key=given.accept_new_host_key,
            mixed_boards=bool(given.mixed_boards or opts.get("mixed_boards")),
            golden=given.golden,
            threads_label=given.threads_label,
        )
        devs.check_same_profile()
    except UsageError as e:
        e.hint = (f"{e.hint}; then " if e.hint else "") + (
            f"finish with `edgecal calibrate --resume {_q(path)} --device NAME` naming a valid "
            "device (the run is kept as it was)"
        )
        raise
    return devs


def _run(
    model: Model,
    source: SampleSource,
    devs: Devices,
    *,
    method: Method,
    runtime: str,
    threads: int,
    thread_option: int | None,
    out: str | None,
    histograms_out: str | None,
    allow_zero_blobs: bool,
    retries: int | None,
    run: CalibRun | None,
    temporary: bool,
    progress: ProgressFactory | None,
    say: Say | None,
) -> Calibration:
    """The run itself, and what is left behind when it fails or is interrupted."""
    retry = RetryPolicy(attempts=retries) if retries else None
    try:
        with (
            devs.open(runtime, thread_option, say, [model.param_path, model.bin_path]) as devices,
            contextlib.ExitStack() as stack,
        ):
            eq_devices = [
                stack.enter_context(devs.open_one(devs.all_names[0], threads))
                for _ in range(_eq_extra_workers(devs, method, runtime, thread_option, devices))
            ]
            result = calibrate_on(
                model,
                source,
                devices,
                method=method,
                threads=threads,
                runtime=runtime,
                keep_histograms=histograms_out is not None,
                allow_zero_blobs=allow_zero_blobs,
                progress=progress,
                run=run,
                retry=retry,
                say=say,
                eq_devices=eq_devices,
                eq_first_board_only=len(set(devs.profiles().values())) > 1,
            )
            transfer = transfer_summary([*devices, *eq_devices])
        files = []
        if out is not None:
            files.append((Path(out), render_table(result.table).encode()))
        if histograms_out is not None:
            files.append((Path(histograms_out), histograms_to_bytes(result.histograms)))
        write_outputs(files)
    except EdgecalError as e:
        if run is not None:
            run.close()
            _after_failure(e, run, temporary)
        raise
    except BaseException as e:  # interrupted (SIGINT, SIGTERM): a temporary run goes
        if run is not None:
            run.close()
            if temporary:
                shutil.rmtree(run.run.path.parent, ignore_errors=True)
            else:
                e.edgecal_note = (  # type: ignore[attr-defined]
                    f"finish with `edgecal calibrate --resume {_q(run.run.path)}`"
                )
        raise
    kept = None
    if run is not None:
        run.close()
        if temporary:
            shutil.rmtree(run.run.path.parent, ignore_errors=True)
        else:
            kept = str(run.run.path)
    return Calibration(
        **{f.name: getattr(result, f.name) for f in fields(result)},
        runtime=runtime,
        transfer=transfer,
        table_path=out,
        histograms_path=histograms_out,
        run_dir=kept,
    )


def _eq_extra_workers(
    devs: Devices, method: Method, runtime: str, thread_option: int | None, devices: list[Any]
) -> int:
    """Local agents EQ's per-layer search gets besides the calibration's own: on this
    machine in the calibration runtime with no thread option, one agent per usable core (the
    layers are independent; the table does not depend on how many search them)."""
    if not (METHODS[method].needs_device and devs.is_local_calibration):
        return 0
    if runtime != "calibration" or thread_option is not None:
        return 0
    return max(0, usable_cores() - len(devices))


def _q(path: Path) -> str:
    return shlex.quote(os.path.abspath(path))


def _after_failure(e: EdgecalError, run: CalibRun, temporary: bool) -> None:
    """Say how to go on.  A device fault (a board lost, a link cut) is resumed: the finished
    shards are kept.  Anything else (a bad image, a zero blob, an output that cannot be
    written) happens again on resume, which takes images and options from the manifest: the
    temporary run is removed, and a --run-dir must be emptied before starting again."""
    if "--resume" in (e.hint or ""):  # the run directory's own problem, with its fix
        return
    try:
        done = bool(run.done("absmax") or run.done("histogram"))
    except EdgecalError:
        done = False
    # a --run-dir can be resumed even with nothing done yet
    if isinstance(e, (DeviceError, FleetExhausted)) and (done or not temporary):
        e.hint = (f"{e.hint}; then " if e.hint else "") + (
            f"finish with `edgecal calibrate --resume {_q(run.run.path)}`"
            + (" (the finished shards are kept there)" if done else "")
        )
        return
    if temporary:
        shutil.rmtree(run.run.path.parent, ignore_errors=True)
    else:
        e.hint = (f"{e.hint}; then " if e.hint else "") + (
            f"start again with a new --run-dir (or remove {_q(run.run.path)} first: it holds "
            "this run's images and options)"
        )
