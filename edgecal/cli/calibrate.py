"""``edgecal calibrate``: one device or a fleet, with a run directory that survives faults.

``--device`` repeated (or ``--group NAME`` of the boards file) shares the shards between the
boards; every shard's answer lands in the run directory (``--run-dir``, else a temporary one
kept only when the run fails), so ``--resume RUN`` finishes an interrupted run without redoing
finished shards and writes the table an uninterrupted run would have written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgecal.calib.build import format_scale_line
from edgecal.calib.methods import METHOD_NAMES, METHODS, Method
from edgecal.calib.table import render_table
from edgecal.cli.options import (
    add_inputs,
    command_line,
    effective_threads,
    local_workers,
    open_device,
    print_json,
    specs_from_options,
    transfer_summary,
    write_outputs,
)
from edgecal.cli.options import err as _err
from edgecal.errors import (
    BoardSetupError,
    DeviceError,
    EdgecalError,
    HostKeyError,
    UsageError,
)
from edgecal.files.outputs import (
    Input,
    Output,
    check_folder,
    check_outputs,
    folder_outputs,
    input_paths,
    sample_inputs,
)
from edgecal.fleet.pool import board_pool
from edgecal.fleet.scheduler import FleetExhausted, RetryPolicy
from edgecal.inputs.model import Model, load_model
from edgecal.inputs.samples import SampleSource, make_sample_source, read_list
from edgecal.runs.calibrun import MANIFEST, CalibRun, build_manifest, check_unchanged, source_of
from edgecal.runs.rundir import RUN_JSON
from edgecal_agent.protocol import RUNTIMES


def add_calibrate_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("calibrate", help="write an ncnn calibration table (one device or a "
                       "fleet; resumable)")
    p.add_argument("param", nargs="?", default=None, metavar="MODEL.param")
    p.add_argument("bin", nargs="?", default=None, metavar="MODEL.bin")
    add_inputs(p, multi_device=True)
    p.add_argument("--group", metavar="NAME",
                   help="the boards of this group of the boards file (a fleet)")
    p.add_argument("--method", choices=METHOD_NAMES, default=Method.KL.value)
    p.add_argument("--runtime", choices=RUNTIMES, default="calibration")
    p.add_argument("--out", "-o", help="table file to write")
    p.add_argument("--histograms-out", help="also save the merged histograms (.npz)")
    p.add_argument("--allow-zero-blobs", action="store_true")
    p.add_argument("--run-dir", metavar="DIR",
                   help="keep the manifest and every shard's answer here (default: a "
                        "temporary folder, kept only if the run fails)")
    p.add_argument("--resume", metavar="DIR",
                   help="finish the run of this run directory (model, images and options come "
                        "from its manifest; --device may name other boards)")
    p.add_argument("--mixed-boards", action="store_true",
                   help="allow boards of different profiles in one run (their activations "
                        "differ, so the table is a blend)")
    p.add_argument("--golden", action="store_true",
                   help="first run a small reference model on every board and leave out a "
                        "board whose results differ from this machine's")
    p.add_argument("--retries", type=int, default=RetryPolicy().attempts, metavar="N",
                   help=f"tries per shard on a board before the board is given up and its "
                        f"shards go to the others (default {RetryPolicy().attempts})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate, lists=[])


# ----------------------------------------------------------------------------- devices


def _device_specs(args: argparse.Namespace) -> list[str | None]:
    from edgecal.boards.config import boards_file, load_group

    given = getattr(args, "device", None)
    specs: list[str | None] = [given] if isinstance(given, str) else list(given or [])
    group = getattr(args, "group", None)
    if group:
        specs += load_group(boards_file(getattr(args, "boards", None)), group)
    if not specs:
        return [None]
    names = [s or "local" for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"board {dup[0]} is named twice", hint="name each board once")
    return specs


def _profiles(args: argparse.Namespace, specs: Sequence[str | None]) -> dict[str, str]:
    from edgecal.boards.config import boards_file, resolve_board

    out = {}
    for spec in specs:
        board = resolve_board(spec, boards_file(getattr(args, "boards", None)))
        name = spec or "local"
        out[name] = "this machine" if board is None else (board.profile or "no profile")
    return out


def check_same_profile(args: argparse.Namespace, specs: Sequence[str | None]) -> None:
    profiles = _profiles(args, specs)
    if len(set(profiles.values())) > 1 and not getattr(args, "mixed_boards", False):
        shown = ", ".join(f"{k}: {v}" for k, v in profiles.items())
        raise UsageError(
            f"the boards are of different profiles ({shown}): their activations differ, so "
            "one table would mix them",
            hint="calibrate each kind of board on its own, or pass --mixed-boards")


def prepare_boards(devices: list[Any], files: Sequence[Path], say: Any) -> list[Any]:
    """Fan out over the boards (fabric ``ThreadingGroup``): free space in the work directory,
    then the model and the agent uploaded to all at once.  A board that fails either is left
    out; the others go on."""
    from edgecal.device.package import agent_zipapp_bytes, agent_zipapp_name
    from edgecal.device.ssh.device import SshDevice
    from edgecal.fleet.fanout import free_kib, push_all

    boards = [d for d in devices if isinstance(d, SshDevice)]
    if not boards:
        return devices
    with tempfile.TemporaryDirectory(prefix="edgecal-fanout-") as tmp:
        data = agent_zipapp_bytes(bytecode=False)
        agent = Path(tmp) / agent_zipapp_name(data)
        agent.write_bytes(data)
        uploads = [*files, agent]
        need_kib = sum(f.stat().st_size for f in uploads) // 1024 + 1024
        out: dict[str, DeviceError] = {}
        for name, o in free_kib(boards).items():
            if not o.ok and o.error is not None:
                out[name] = o.error
            elif o.value < need_kib:
                out[name] = BoardSetupError(
                    f"{name}: the board's disk is full: only {o.value} KiB free in its work "
                    f"directory, the run needs at least {need_kib} KiB",
                    hint=f"free disk space on the board (`edgecal board check {name}` shows "
                         "the free space) or set another workdir in the boards file")
        ready = [d for d in boards if d.name not in out]
        for name, o in push_all(ready, uploads).items():
            if not o.ok and o.error is not None:
                out[name] = o.error
    keep = [d for d in devices if d.name not in out]
    if not keep:
        raise next(iter(out.values()))  # with its fix
    for e in out.values():
        if say is not None:
            say(f"left out: {e.headline}")
    return keep


@contextlib.contextmanager
def open_fleet(args: argparse.Namespace, threads: int, runtime: str,
               say: Any = None, files: Sequence[Path] = ()) -> Iterator[list[Any]]:
    """The devices of the run.  One local device in the calibration runtime is ``threads``
    agent workers (ncnn2table's ``thread=``); boards are opened in parallel, and with several
    boards one that cannot be reached is left out (the others carry on)."""
    from edgecal.boards.open import is_local

    specs = _device_specs(args)
    check_same_profile(args, specs)
    with contextlib.ExitStack() as stack:
        if len(specs) == 1 and is_local(specs[0]) and runtime == "calibration":
            # ncnn2table's drop-in has no --threads (its thread= is ``threads``)
            what = f"--threads {threads}" if hasattr(args, "threads") else f"thread={threads}"
            yield [stack.enter_context(open_device(args, threads, specs[0]))
                   for _ in range(local_workers(threads, what, say))]
            return

        def one(spec: str | None) -> Any:
            # ncnn2table's drop-in has no --threads (its thread= is ``threads``)
            t = effective_threads(args, runtime, spec) if hasattr(args, "threads") else threads
            return open_device(args, t, spec)

        with board_pool(len(specs)) as pool:
            futures = [pool.submit(one, s) for s in specs]
        devices, failures = [], []
        for spec, fut in zip(specs, futures, strict=True):
            try:
                devices.append(stack.enter_context(fut.result()))
            except HostKeyError:
                raise
            except DeviceError as e:
                if len(specs) == 1:
                    raise
                failures.append(e)
                if say is not None:
                    say(f"{spec}: left out: {e.message}")
        if not devices:
            raise failures[0]
        devices = prepare_boards(devices, files, say)
        if getattr(args, "golden", False):
            devices = _golden_filter(devices, runtime, say)
        yield devices


def _golden_filter(devices: list[Any], runtime: str, say: Any) -> list[Any]:
    """The devices whose golden check passes; the others are left out (all failing: error)."""
    from edgecal.boards.golden import golden_check
    from edgecal.errors import CalibrationError

    def check(device: Any) -> Any:
        try:
            return golden_check(device)
        except DeviceError as e:
            return e

    with board_pool(len(devices)) as pool:
        results = list(pool.map(check, devices))
    keep = []
    for device, res in zip(devices, results, strict=True):
        if isinstance(res, DeviceError):
            why = f"{device.name}: the golden check did not run: {res.message}"
        elif not res.ok:
            why = res.message
        else:
            keep.append(device)
            continue
        if say is not None:
            say(f"left out: {why}")
    if not keep:
        raise CalibrationError("no board passed the golden check",
                               hint="run `edgecal board check --golden` on the boards")
    return keep


# ----------------------------------------------------------------------------- the run


def calibrate_and_write(
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
    run: CalibRun | None = None,
    retries: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    from edgecal.cli.progress import ProgressBars
    from edgecal.runs.histfile import histograms_to_bytes
    from edgecal.workflows.calibrate import calibrate

    def say(text: str) -> None:
        _err(f"edgecal: {text}")

    retry = RetryPolicy(attempts=retries) if retries else None
    with open_fleet(device_args, threads, runtime, say,
                    [model.param_path, model.bin_path]) as devices, \
            ProgressBars(enabled=not quiet) as bars:
        result = calibrate(
            model, source, devices, method=method, threads=threads, runtime=runtime,
            keep_histograms=histograms_out is not None, allow_zero_blobs=allow_zero_blobs,
            progress=bars.task, run=run, retry=retry, say=say,
        )
        transfer = transfer_summary(devices)
    files = [(out, render_table(result.table).encode())]
    if histograms_out is not None:
        files.append((histograms_out, histograms_to_bytes(result.histograms)))
    write_outputs(files)
    return result, transfer


def layer_lines(run: Any) -> list[str]:
    lines = []
    for info in run.build.per_layer:
        scale = run.table.blob_scale(info.name)
        if scale is not None and METHODS[Method(run.method)].needs_device:
            info = type(info)(info.name, info.absmax, 127.0 / float(scale), float(scale))
        lines.append(format_scale_line(info))
    return lines


def _workers(args: argparse.Namespace, threads: int) -> int:
    from edgecal.boards.open import is_local

    specs = _device_specs(args)
    if len(specs) == 1 and is_local(specs[0]) and args.runtime == "calibration":
        return local_workers(threads, "")  # capped as open_fleet caps it (said there)
    return len(specs)


def _start(args: argparse.Namespace) -> tuple[Model, SampleSource, CalibRun, bool]:
    """Model, samples and run directory of a new run (``temporary``: made here)."""
    if args.param is None or args.bin is None:
        raise UsageError("give the model (MODEL.param MODEL.bin), or --resume RUN")
    if not args.out:
        raise UsageError("give --out TABLE (the table file to write)")
    if not args.lists:
        raise UsageError("give the calibration samples: --images LIST|DIR (or --npy LIST)")
    list_inputs = [*input_paths("model .param", [args.param]),
                   *input_paths("model .bin", [args.bin]),
                   *input_paths("sample list", [p for _, p in args.lists])]
    check_outputs(_outputs(args), list_inputs)  # before any work
    model = load_model(Path(args.param), Path(args.bin))
    specs = specs_from_options(model, args)
    source = make_sample_source(specs, [read_list(Path(p)) for _, p in args.lists])
    check_outputs(_outputs(args), [*list_inputs, *sample_inputs(source.paths)])
    threads = effective_threads(args, args.runtime)
    options = {
        "out": args.out if args.out == "-" else str(Path(args.out).resolve()),
        "histograms_out": str(Path(args.histograms_out).resolve()) if args.histograms_out
        else None,
        "allow_zero_blobs": bool(args.allow_zero_blobs),
        "devices": getattr(args, "device", None) or [],
        "group": getattr(args, "group", None),
        "boards": getattr(args, "boards", None),
        "mixed_boards": bool(getattr(args, "mixed_boards", False)),
    }
    manifest = build_manifest(model, source, method=args.method, runtime=args.runtime,
                              threads=threads,
                              histograms=METHODS[Method(args.method)].needs_histograms
                              or bool(args.histograms_out),
                              options=options, workers=_workers(args, threads))
    temporary = not args.run_dir
    path = Path(args.run_dir) if args.run_dir else Path(
        tempfile.mkdtemp(prefix="edgecal-run-")) / "run"
    try:
        run = CalibRun.create(path, manifest, command_line(args))
    except BaseException:
        if temporary:
            shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return model, source, run, temporary


def _outputs(args: argparse.Namespace) -> list[Output]:
    """What the run writes: the table (``-``: standard output), the histograms, the run
    directory's own files; ``--json`` prints to standard output too."""
    outs = [Output("--out", args.out, text=True)]
    if args.histograms_out:
        outs.append(Output("--histograms-out", args.histograms_out))
    if getattr(args, "json", False):
        outs.append(Output("--json", "-", text=True))
    if getattr(args, "run_dir", None):
        check_folder("--run-dir", args.run_dir)
        outs += folder_outputs("--run-dir", args.run_dir, [RUN_JSON, MANIFEST])
    return outs


def _resume(args: argparse.Namespace) -> tuple[Model, SampleSource, CalibRun]:
    given = [name for name, v in (("MODEL", args.param), ("--images/--npy", args.lists),
                                  ("--out", args.out), ("--run-dir", args.run_dir)) if v]
    if given:
        raise UsageError(f"--resume takes the model, samples and outputs from the run; do not "
                         f"give {', '.join(given)}", hint="give only --resume RUN [--device …]")
    run = CalibRun.open(Path(args.resume), command_line(args))
    try:
        m = run.manifest
        opts = m.options
        args.out, args.histograms_out = opts.get("out"), opts.get("histograms_out")
        check_outputs(_outputs(args), [
            Input("model .param", m.param), Input("model .bin", m.bin),
            *sample_inputs(m.samples)])
        model = load_model(Path(m.param), Path(m.bin))
        check_unchanged(m, model, str(args.resume))
    except BaseException:
        run.close()
        raise
    args.method, args.runtime, args.threads = m.method, m.runtime, m.threads
    args.allow_zero_blobs = bool(opts.get("allow_zero_blobs"))
    if not getattr(args, "device", None) and not getattr(args, "group", None):
        args.device = list(opts.get("devices") or []) or None
        args.group = opts.get("group")
    if getattr(args, "boards", None) is None:
        args.boards = opts.get("boards")
    args.mixed_boards = bool(getattr(args, "mixed_boards", False) or opts.get("mixed_boards"))
    return model, source_of(m), run


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.retries is not None and args.retries < 1:
        raise UsageError(f"--retries {args.retries}: must be at least 1")
    temporary = False
    if args.resume:
        model, source, run = _resume(args)
    else:
        model, source, run, temporary = _start(args)
    try:
        result, transfer = calibrate_and_write(
            model, source, method=args.method, threads=int(args.threads or 1)
            if args.resume else effective_threads(args, args.runtime),
            runtime=args.runtime, out=Path(args.out),
            histograms_out=Path(args.histograms_out) if args.histograms_out else None,
            device_args=args, allow_zero_blobs=args.allow_zero_blobs, quiet=args.quiet,
            run=run, retries=args.retries,
        )
    except EdgecalError as e:
        run.close()
        _after_failure(e, run, temporary)
        raise
    except BaseException as e:  # interrupted (SIGINT, SIGTERM): the temporary run goes
        run.close()
        if temporary:
            shutil.rmtree(run.run.path.parent, ignore_errors=True)
        else:
            e.edgecal_note = f"finish with `edgecal calibrate --resume {_q(run.run.path)}`"  # type: ignore[attr-defined]
        raise
    run.close()
    if temporary:
        shutil.rmtree(run.run.path.parent, ignore_errors=True)
    for w in result.warnings:
        _err(f"edgecal: warning: {w}")
    if len(result.fleet) > 1 or any(a["retried"] or a["lost"] for a in result.fleet):
        for line in fleet_lines(result.fleet):
            _err(line)
    if args.json:
        print_json({
            "table": args.out,
            "histograms": args.histograms_out,
            "method": result.method,
            "n_samples": result.n_samples,
            "runtime": args.runtime,
            "run_dir": None if temporary else str(run.run.path),
            "layers": [
                {"name": i.name, "absmax": float(i.absmax), "threshold": float(i.threshold),
                 "scale": float(i.scale)}
                for i in result.build.per_layer
            ],
            Method.EQ.value: [vars(r) for r in result.eq],
            "warnings": result.warnings,
            "timings_s": result.timings_s,
            "device": result.device,
            "fleet": result.fleet,
            **transfer,
        })
    else:
        for line in layer_lines(result):
            _err(line)
        for r in result.eq:
            _err(f"eq {r.layer}: single-layer cosine {r.cosine_kl:.6f} (kl) -> "
                 f"{r.cosine_eq:.6f}")
        print(f"wrote {args.out} ({result.method}, {result.n_samples} samples)",
              file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


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
            + (" (the finished shards are kept there)" if done else ""))
        return
    if temporary:
        shutil.rmtree(run.run.path.parent, ignore_errors=True)
    else:
        e.hint = (f"{e.hint}; then " if e.hint else "") + (
            f"start again with a new --run-dir (or remove {_q(run.run.path)} first: it holds "
            "this run's images and options)")


def fleet_lines(accounts: Sequence[dict[str, Any]]) -> list[str]:
    from edgecal.cli.render import table_lines

    return table_lines(
        ("board", "shards", "samples", "retried", "taken over", "collected", "busy s", "state"),
        [(a["board"], a["shards"], a["samples"], a["retried"], a["reassigned"], a["collected"],
          f"{a['seconds']:.1f}", f"LOST: {a['lost']}" if a["lost"] else "ok")
         for a in accounts],
        right=range(1, 7))
