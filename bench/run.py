"""edgecal benchmarks (``make bench``): speed against ncnn2table, calibration overhead, KL search
speed, agent memory, and the figures of bench/eq.py, bench/rules.py, bench/tune.py, bench/native.py
and bench/floors.py (what the calibrate and EQ speed targets leave room for).

Prints one line per figure, ``<what>: <value> (target <op> <value>)``.  Timings are wall-clock on
this machine; every speed is a ratio against its peer measured in the same run (alternated runs,
medians), so a busy machine moves both sides; still, run on an idle machine.

* edgecal ncnn2table / the real ncnn2table (``NCNN2TABLE=/path/to/ncnn2table``; skipped with a
  line saying so when unset), same arguments, ``thread=2 method=kl``, on a PP-OCR
  direction-classifier-like model (bench/ppocr_like.py: 54 calibrated layers, 3x48x192 input)
  with ``--ncnn2table-images`` synthetic images (default 2000), made once into
  ``EDGECAL_BENCH_CACHE`` (default ``~/.cache/edgecal-bench``).  Target <= 1.0.  Also says
  whether the two tables are identical.  How to build the real tool: see ``NCNN2TABLE_HOWTO``.

* KL search ms per blob, vectorised (``edgecal.calib.kl``) and the literal port of ncnn2table's
  loops (``tests/oracle/kl_loop.py``), on the sample model's real histograms.
* calibrate wall time / (2 x bare ncnn forward time of the same images), 1 thread: the
  pipeline's whole ``calibrate`` call (agent start, decode, both passes, thresholds; one local
  agent, calibration runtime) against ncnn alone running the model forward on the same
  preprocessed inputs with the calibration options, on the PP-OCR-like model with ``--images``
  images (default 1000); alternated, medians of ``--repeats``.  Target <= 1.15.
* agent peak RSS for 100 vs 1000 images (abs-max + histogram passes).  Target growth <= 5 %.
* on a board (``--board NAME``, default ``emu1`` when ``EDGECAL_BOARDS`` is set): bytes pushed
  and fetched by a first and a repeated run (the repeat pushes 0 bytes of model/images), and
  the time breakdown: connect, push, agent start, capture, fetch.  The reference digits model
  with 10 images (qemu boards are ~300x slower than native).
* a fleet (``--fleet B1,B2``, default ``emu1,emu4`` when the boards file names both; boards of
  one profile): the capture time (abs-max + histogram passes) of the sample model on
  ``--fleet-images`` images (default 300, ~75 s alone) on the first board alone and on all of
  them (target speedup >= 1.8x for two), with this machine's ceiling for two busy boards (two
  separate one-board runs at the same time: each qemu board needs a core of its own), the
  bytes pushed and fetched per board, and the time to finish with ``--resume`` after every
  board's link was cut at 50 % of the work against a full run (target <= 0.55x; root and
  netns boards; the fixed ~3 s of agent start on a qemu board is paid by both).  Repeated
  ``--fleet-repeats`` times, interleaved; medians.  Every timed run pushes its shards.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edgecal.calib.kl import kl_best_bin  # noqa: E402
from edgecal.device import capture  # noqa: E402
from edgecal.device.local import LocalDevice  # noqa: E402
from edgecal.inputs.model import load_model  # noqa: E402
from edgecal.inputs.samples import make_sample_source, read_list  # noqa: E402
from edgecal.inputs.spec import InputSpec  # noqa: E402
from edgecal.workflows.calibrate import calibrate, calibration_blobs  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import ppocr_like  # noqa: E402

SAMPLE = ROOT / "samples" / "tinted_digits"
SPEC = InputSpec(
    blob="in0",
    kind="image",
    pixel="RGB",
    mean=(127.5,) * 3,
    norm=(0.00784314,) * 3,
    shape=(48, 48),
)


def sample_images(n: int) -> list[Path]:
    """``n`` sample images: the calibration and test images, cycled."""
    pool = read_list(SAMPLE / "calib.txt") + read_list(SAMPLE / "test")
    return [pool[i % len(pool)] for i in range(n)]


def bench_kl(model_hist: dict[str, np.ndarray], literal: bool) -> None:
    """The KL search's time per blob against its target and the code of f2f4f44
    (bench/rules.py), and once against the literal port."""
    from oracle.kl_loop import kl_best_bin_literal

    rules = _bench_module("rules")
    rules.bench_kl_search(model_hist)
    if literal:
        first = next(iter(model_hist.values()))
        t0 = time.perf_counter()
        lit = kl_best_bin_literal(first)
        ms = (time.perf_counter() - t0) * 1e3
        got = kl_best_bin(first)
        same = "same bin" if lit == got else f"DIFFERENT bin ({lit} vs {got})"
        print(f"kl search, literal port: {ms:.0f} ms per blob (1 blob timed; {same})")


PPOCR_SPEC = InputSpec(
    blob="in0",
    kind="image",
    pixel="RGB",
    mean=(127.5,) * 3,
    norm=(0.00784314,) * 3,
    shape=(ppocr_like.IN_W, ppocr_like.IN_H),
)

NCNN2TABLE_HOWTO = """the real ncnn2table, built outside the repository (Tencent/ncnn, the tag
nearest the ncnn wheel; OpenCV's imgcodecs from the distribution: apt-get install libopencv-dev):
    cmake -S ncnn -B build -DCMAKE_BUILD_TYPE=Release -DNCNN_BUILD_TOOLS=ON -DNCNN_VULKAN=OFF \\
        -DNCNN_OPENMP=ON -DNCNN_BUILD_EXAMPLES=OFF -DNCNN_BUILD_BENCHMARK=OFF -DNCNN_PYTHON=OFF
    make -C build -j2 ncnn2table
    export NCNN2TABLE=$PWD/build/tools/quantize/ncnn2table"""


def bench_cache() -> Path:
    return Path(os.environ.get("EDGECAL_BENCH_CACHE") or Path.home() / ".cache" / "edgecal-bench")


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b)


def bare_forward_s(
    param: Path, bin_: Path, spec: InputSpec, images: list[Path]
) -> tuple[float, float]:
    """ncnn alone: the model forward on every image with ncnn2table's options (1 thread), on
    inputs decoded and preprocessed beforehand (not timed); (wall, CPU) seconds."""
    import ncnn

    from edgecal.inputs.samples import decode_image_bgr

    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.lightmode = False
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.load_param(str(param))
    net.load_model(str(bin_))
    w, h = spec.shape
    pixel = getattr(ncnn.Mat.PixelType, {"RGB": "PIXEL_BGR2RGB", "BGR": "PIXEL_BGR"}[spec.pixel])
    mats = []
    for p in images:
        bgr = decode_image_bgr(p)
        m = ncnn.Mat.from_pixels_resize(bgr, pixel, bgr.shape[1], bgr.shape[0], w, h)
        m.substract_mean_normalize(list(spec.mean), list(spec.norm))
        mats.append(m)
    out = net.output_names()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    for m in mats:
        ex = net.create_extractor()
        ex.input(spec.blob, m)
        ex.extract(out)
    return time.perf_counter() - t0, time.process_time() - c0


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (the local agents)."""
    import resource

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def forget_kl_searches() -> None:
    """Empty the process's memo of KL searches (per histogram): a repeated calibrate of the
    same images in one process would find its KL bins there and time no search (0.2 s of
    the PP-OCR-like model's 54 blobs), which a user's ``edgecal calibrate`` never does."""
    from edgecal.calib import candidates

    candidates._kl_bin.cache_clear()


def calibrate_s(
    param: Path, bin_: Path, spec: InputSpec, images: list[Path], workers: int
) -> tuple[float, float, Any]:
    """One whole ``calibrate`` (agent start included) on ``workers`` local agents: wall
    seconds, CPU seconds (host and agents), the result."""
    model = load_model(param, bin_)
    source = make_sample_source([spec], [images])
    forget_kl_searches()
    t0, c0 = time.perf_counter(), _cpu_s()
    with contextlib.ExitStack() as stack:
        devices = [stack.enter_context(LocalDevice()) for _ in range(workers)]
        run = calibrate(model, source, devices, method="kl")
    return time.perf_counter() - t0, _cpu_s() - c0, run


def bench_overhead(n: int, repeats: int) -> None:
    """calibrate (1 agent) / (2 x bare forward), alternated, medians, on the PP-OCR-like model."""
    param, bin_, lst = ppocr_like.ensure(bench_cache(), n)
    images = read_list(lst)
    bare: list[float] = []
    cal: list[float] = []
    bare_cpu: list[float] = []
    cal_cpu: list[float] = []
    parts: list[dict[str, float]] = []
    for _ in range(repeats):
        wall, cpu = bare_forward_s(param, bin_, PPOCR_SPEC, images)
        bare.append(wall)
        bare_cpu.append(cpu)
        wall, cpu, run = calibrate_s(param, bin_, PPOCR_SPEC, images, 1)
        cal.append(wall)
        cal_cpu.append(cpu)
        parts.append(run.timings_s)
    ratio = statistics.median(cal) / (2 * statistics.median(bare))
    cpu_ratio = statistics.median(cal_cpu) / (2 * statistics.median(bare_cpu))
    keys = list(parts[0])
    print(
        f"bare ncnn forward, PP-OCR-like model: {statistics.median(bare) / n * 1e3:.3f} ms per "
        f"image ({n} images, 1 thread); calibrate (kl, 1 agent) {statistics.median(cal):.2f} s: "
        + ", ".join(f"{k} {statistics.median(p[k] for p in parts):.2f}s" for k in keys)
    )
    print(
        f"calibrate / (2 x bare forward), 1 thread: {ratio:.3f} (target <= 1.15; medians of "
        f"{repeats} alternated runs, {n} images)"
    )
    print(
        f"calibrate CPU / (2 x bare forward CPU), 1 thread: {cpu_ratio:.3f} (no target: the "
        "CPU time of host and agent, which a busy machine moves less than the wall time)"
    )


def sample_histograms(n: int) -> dict[str, np.ndarray]:
    """The sample model's histograms (for the KL figures)."""
    model = load_model(SAMPLE / "model.param", SAMPLE / "model.bin")
    source = make_sample_source([SPEC], [sample_images(n)])
    with LocalDevice() as device:
        run = calibrate(model, source, [device], method="kl")
    return {layer: h.counts for layer, h in run.histograms.stats.items()}


def _ncnn2table_args(param: Path, bin_: Path, lst: Path, table: Path, threads: int) -> list[str]:
    s = PPOCR_SPEC
    return [
        str(param),
        str(bin_),
        str(lst),
        str(table),
        "mean=[" + ",".join(f"{v:g}" for v in s.mean) + "]",
        "norm=[" + ",".join(f"{v:g}" for v in s.norm) + "]",
        f"shape=[{s.shape[0]},{s.shape[1]},3]",
        f"pixel={s.pixel}",
        f"thread={threads}",
        "method=kl",
    ]


def _as_installed_env() -> dict[str, str]:
    """This environment as an installed edgecal runs in: Python's bytecode cache on.

    ``pip install`` writes every module's ``.pyc``; a shell with ``PYTHONDONTWRITEBYTECODE``
    set (this sandbox's) would make every ``edgecal`` command compile its modules again
    (~0.13 s on the bench machine), which no installed copy does.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_bytecode() -> None:
    """Write the ``.pyc`` of edgecal and its agent, as ``pip install`` does."""
    import edgecal
    import edgecal_agent

    for pkg in (edgecal, edgecal_agent):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(Path(pkg.__file__).parent)],
            env=_as_installed_env(),
            capture_output=True,
            check=True,
        )


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, check=False, env=_as_installed_env())
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return wall


def _table_lines(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return {ln.split()[0]: ln for ln in lines if ln.strip()}


def race_ncnn2table(
    real: str, n: int, threads: int, repeats: int, options: Sequence[str] = ()
) -> tuple[list[float], list[float], str]:
    """The real ncnn2table and ``edgecal ncnn2table OPTIONS`` on the PP-OCR-like model, the
    same arguments, alternated ``repeats`` times: edgecal's seconds, the real tool's, and
    whether their tables agree (``tables identical`` or how many lines differ)."""
    param, bin_, lst = ppocr_like.ensure(bench_cache(), n)
    edgecal = shutil.which("edgecal", path=str(Path(sys.executable).parent)) or "edgecal"
    warm_bytecode()
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edgecal-bench-") as tmp:
        t_ours, t_real = Path(tmp) / "edgecal.table", Path(tmp) / "real.table"
        for _ in range(repeats):
            theirs.append(_timed([real, *_ncnn2table_args(param, bin_, lst, t_real, threads)]))
            args = _ncnn2table_args(param, bin_, lst, t_ours, threads)
            ours.append(_timed([edgecal, "--quiet", "ncnn2table", *options, *args]))
        a, b = _table_lines(t_ours), _table_lines(t_real)
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ours, theirs, "tables identical" if not differ else f"{len(differ)} table lines differ"


def bench_ncnn2table(n: int, threads: int, repeats: int) -> None:
    """``edgecal ncnn2table`` against the real tool, same arguments, alternated, medians."""
    real = os.environ.get("NCNN2TABLE")
    if not real or not (Path(real).is_file() and os.access(real, os.X_OK)):
        print(
            "edgecal ncnn2table / real ncnn2table: skipped (set NCNN2TABLE to the real "
            "ncnn2table; NCNN2TABLE_HOWTO in bench/run.py says how to build it)"
        )
        return
    ours, theirs, same = race_ncnn2table(real, n, threads, repeats)
    print(
        f"ncnn2table, PP-OCR-like model, {n} images, thread={threads} method=kl: edgecal "
        f"{statistics.median(ours):.2f} s, real {statistics.median(theirs):.2f} s (medians of "
        f"{repeats} alternated runs; {same}; edgecal's bytecode cached, as pip installs it)"
    )
    print(
        f"edgecal ncnn2table / real ncnn2table (thread={threads}, method=kl, {n} images): "
        f"{_median_ratio(ours, theirs):.3f} (target <= 1.0)"
    )


#: The figures of the other parts of issues 12 and 13: (module in bench/, function printing its
#: lines).
EXTRA_FIGURES = (
    ("eq", "bench_eq"),
    ("tune", "bench_tune"),
    ("native", "bench_native_figures"),
    ("floors", "bench_floors"),
)


def _bench_module(name: str) -> ModuleType:
    """bench/<name>.py, loaded by its path."""
    spec = importlib.util.spec_from_file_location(
        f"edgecal_bench_{name}", ROOT / "bench" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def extra_figures() -> None:
    """Each bench/<module>.py of EXTRA_FIGURES, when present, prints its own lines."""
    for module, func in EXTRA_FIGURES:
        path = ROOT / "bench" / f"{module}.py"
        if not path.is_file():
            print(f"bench/{module}.py: skipped (not there)")
            continue
        fn = getattr(_bench_module(module), func, None)
        if fn is None:
            print(f"bench/{module}.py: skipped (no function {func})")
            continue
        fn()


def agent_rss_kb(n: int) -> int:
    images = sample_images(n)
    model = load_model(SAMPLE / "model.param", SAMPLE / "model.bin")
    source = make_sample_source([SPEC], [images])
    blobs = calibration_blobs(model)
    with tempfile.TemporaryDirectory() as tmp, LocalDevice() as device:
        shards = capture.write_shards(iter(source), [SPEC], Path(tmp))
        work = capture.Workload(model.param_path, model.bin_path, [SPEC], shards, blobs)
        job = device.run_job("absmax", capture.absmax_request(device, work))
        ranges = {b: float(v[0]) for b, v in capture.parse_absmax(device, job, blobs).items()}
        job = device.run_job("histogram", capture.histogram_request(device, work, ranges))
        capture.parse_histograms(device, job, blobs)
        return device.run_job("hello", {}).ru_maxrss_kb


def bench_board(name: str, n: int) -> None:
    from edgecal.boards.config import boards_file, resolve_board
    from edgecal.boards.open import open_board

    board = resolve_board(name, boards_file(None))
    assert board is not None
    ref = ROOT / "tests" / "data" / "reference" / "digits"
    spec = InputSpec(
        blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,), shape=(32, 32)
    )
    model = load_model(ref / "model.param", ref / "model.bin")
    source = make_sample_source([spec], [[ref / "images" / f"calib_{i:02d}.png" for i in range(n)]])
    with open_board(board) as dev:  # a first run: forget what an earlier run pushed
        dev.link.run(
            [
                "rm",
                "-rf",
                "--",
                dev.remote("files"),
                *[
                    dev.remote(p)
                    for p in dev.link.sftp().listdir(str(dev.workdir))
                    if p.startswith("edgecal-agent-")
                ],
            ],
            timeout_s=120,
        )
    for label in ("first", "repeat"):
        t0 = time.perf_counter()
        with open_board(board) as dev:
            run = calibrate(model, source, [dev], method="kl")
        wall = time.perf_counter() - t0
        t = dev.timings_s
        # the pipeline's device stages (hello/connect, abs-max, histogram) minus the transfers
        capture_s = sum(
            v for k, v in run.timings_s.items() if k in ("connect", "absmax", "histogram")
        )
        capture_s -= t["push"] + t["fetch"] + t["agent_start"]
        print(
            f"board {name} ({board.profile}), {label} run, {n} images: wall {wall:.1f} s; "
            f"pushed {dev.bytes_pushed} B (+ {dev.bytes_job_files} B job requests), "
            f"fetched {dev.bytes_fetched} B; connect {t['connect']:.2f} s, push "
            f"{t['push']:.2f} s, agent start {t['agent_start']:.2f} s, capture "
            f"{capture_s:.2f} s, fetch {t['fetch']:.2f} s"
        )


def _fleet_run(
    boards: list[Any],
    model: Any,
    source: Any,
    *,
    run: Any = None,
    retry: Any = None,
    connect_timeout_s: float | None = None,
) -> tuple[Any, float, dict[str, tuple[int, int]]]:
    """One calibration over ``boards`` (opened here, in parallel like the CLI): the result,
    the wall time from connecting to the table, and per board (pushed, fetched) bytes."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from edgecal.boards.open import open_board

    if connect_timeout_s is not None:
        boards = [dataclasses.replace(b, connect_timeout_s=connect_timeout_s) for b in boards]
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(max_workers=len(boards)) as pool:
            devs = [stack.enter_context(d) for d in pool.map(open_board, boards)]
        result = calibrate(model, source, devs, method="kl", run=run, retry=retry)
        wall = time.perf_counter() - t0
        moved = {d.name: (d.bytes_pushed + d.bytes_job_files, d.bytes_fetched) for d in devs}
    return result, wall, moved


def _forget_shards(boards: list[Any]) -> None:
    """Delete the sample shards earlier runs left on the boards (content-addressed, they would
    not be pushed again): every timed run pushes its shards."""
    from edgecal.boards.open import open_board

    for board in boards:
        with open_board(board) as dev:
            dev.link.run(
                ["find", dev.remote("files"), "-name", "shard_*.npz", "-delete"], timeout_s=120
            )


def _cpu_busy() -> tuple[int, int]:
    """(all, idle) jiffies of this machine so far (/proc/stat)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return sum(v), v[3] + v[4]


def _busy_since(t0: tuple[int, int]) -> float:
    """Cores kept busy since ``t0`` (all processes: boards, host, others)."""
    t1 = _cpu_busy()
    import os

    return (1 - (t1[1] - t0[1]) / max(1, t1[0] - t0[0])) * (os.cpu_count() or 1)


def _capture_s(result: Any) -> float:
    return sum(v for k, v in result.timings_s.items() if k in ("absmax", "histogram"))


def bench_fleet(names: list[str], n: int, repeats: int) -> None:
    """Two (or more) emulated boards against one on the same images, ``repeats`` times
    interleaved (this VM's speed drifts by +-20 % within minutes, so medians): capture speedup,
    this machine's ceiling for two busy boards, bytes per board, and the time to finish with
    ``--resume`` after every board's link is cut at 50 % of the work against a full run."""
    import os
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from edgecal.boards.config import boards_file, resolve_board

    load = os.getloadavg()[0]
    boards = [resolve_board(name, boards_file(None)) for name in names]
    model = load_model(SAMPLE / "model.param", SAMPLE / "model.bin")
    source = make_sample_source([SPEC], [sample_images(n)])
    _fleet_run(boards, model, make_sample_source([SPEC], [sample_images(4)]))  # agent + model
    netns = os.geteuid() == 0 and all(b.host.startswith("10.200.") for b in boards)
    speedups, ceilings, resumes = [], [], []
    for r in range(repeats):
        _forget_shards(boards)
        t0 = _cpu_busy()
        one, _, moved1 = _fleet_run(boards[:1], model, source)
        busy1 = _busy_since(t0)
        _forget_shards(boards)
        t0 = _cpu_busy()
        many, wall2, moved2 = _fleet_run(boards, model, source)
        busy2 = _busy_since(t0)
        c1, c2 = _capture_s(one), _capture_s(many)
        speedups.append(c1 / c2)
        line = (
            f"fleet [{r + 1}/{repeats}], {SAMPLE.name} with {n} images: capture (abs-max + "
            f"histogram passes) on {names[0]} alone {c1:.1f} s, on {'+'.join(names)} "
            f"{c2:.1f} s: speedup {c1 / c2:.2f}x; cores busy {busy1:.2f} alone, "
            f"{busy2:.2f} with {len(names)} boards, of {os.cpu_count()}"
        )
        if len(names) == 2:  # what this machine gives two busy boards: two separate runs
            _forget_shards(boards)
            with ThreadPoolExecutor(max_workers=2) as pool:
                pair = list(
                    pool.map(lambda b: _capture_s(_fleet_run([b], model, source)[0]), boards)
                )
            ceilings.append(sum(c1 / c for c in pair))
            line += (
                f"; two separate one-board runs at once: {pair[0]:.1f} s and "
                f"{pair[1]:.1f} s, {ceilings[-1]:.2f}x the work per second of one"
            )
        print(
            line
            + "; accounts: "
            + ", ".join(
                f"{a['board']} {a['shards']} shards/{a['samples']} samples "
                f"busy {a['seconds']:.1f} s"
                for a in many.fleet
            ),
            flush=True,
        )
        if r == repeats - 1:
            for name, (pushed, fetched) in moved2.items():
                alone = (
                    f"; alone: pushed {moved1[name][0]} B, fetched {moved1[name][1]} B"
                    if name in moved1
                    else ""
                )
                print(
                    f"fleet, bytes of {name} in the {len(names)}-board run: pushed {pushed} B "
                    f"(shards and job requests; model and agent were there already), "
                    f"fetched {fetched} B" + alone
                )
        if netns:
            resumes.append((_bench_resume(boards, model, source, many, wall2, n), wall2))
    print(
        f"fleet, two-board capture speedup, median of {repeats}: "
        f"{statistics.median(speedups):.2f}x (target >= 1.8x; load average {load:.1f} before)"
        + (
            f"; this machine's ceiling for two busy boards, median: "
            f"{statistics.median(ceilings):.2f}x"
            if ceilings
            else ""
        )
    )
    if resumes:
        ratios, fulls = [r for r, _ in resumes], [w for _, w in resumes]
        print(
            f"fleet, resume after a cut at 50 % vs a full run, median of {repeats}: "
            f"{statistics.median(ratios):.2f}x (target <= 0.55x); median resume "
            f"{statistics.median(r * w for r, w in resumes):.1f} s / median full run "
            f"{statistics.median(fulls):.1f} s = "
            f"{statistics.median(r * w for r, w in resumes) / statistics.median(fulls):.2f}x"
        )
    else:
        print("fleet, resume after a cut at 50 %: skipped (needs root and boards in netns mode)")


def _bench_resume(
    boards: list[Any], model: Any, source: Any, full: Any, full_wall: float, n: int
) -> float:
    """Cut every board's link once half of the sample passes are answered (a run with one try
    per unit, so it stops), restore the links, resume; the resume's wall time / ``full_wall``."""
    import os
    import subprocess
    import threading

    from edgecal.fleet.scheduler import FleetExhausted, RetryPolicy
    from edgecal.runs.calibrun import CalibRun, build_manifest

    names = [b.name for b in boards]
    state = Path(str(boards[0].identity_file)).parent.parent

    def emuboard(*args: str) -> None:
        r = subprocess.run(
            ["bash", str(ROOT / "toolchains" / "emuboard.sh"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=dict(os.environ, EMUBOARD_STATE=str(state)),
        )
        if r.returncode != 0:
            print(f"fleet: emuboard.sh {' '.join(args)} failed: {r.stderr.strip()}")

    _forget_shards(boards)
    with tempfile.TemporaryDirectory(prefix="edgecal-bench-") as tmp:
        manifest = build_manifest(
            model,
            source,
            method="kl",
            runtime="calibration",
            threads=1,
            histograms=True,
            options={},
            workers=len(boards),
        )
        run = CalibRun.create(Path(tmp) / "run", manifest, ["bench"])
        counts = {s.index: s.count for s in manifest.shards}
        stop, cut_at = threading.Event(), []

        def cut_at_half() -> None:
            while not stop.wait(0.05):
                done = sum(counts[i] for p in ("absmax", "histogram") for i in run.done(p))
                if done >= n:  # half of the 2 x n sample passes
                    for b in names:
                        emuboard("cut", b, "drop")
                    cut_at.append(done)
                    return

        watcher = threading.Thread(target=cut_at_half, daemon=True)
        watcher.start()
        try:
            _fleet_run(
                boards, model, source, run=run, retry=RetryPolicy(attempts=1), connect_timeout_s=3
            )
            stopped = "the run finished before the cut"
        except FleetExhausted:
            stopped = "every board lost"
        finally:
            stop.set()
            watcher.join()
            for b in names:
                emuboard("restore", b)
        kept = sum(counts[i] for p in ("absmax", "histogram") for i in run.done(p))
        run.close()  # the resume below locks the run directory again
        resumed, wall_r, _ = _fleet_run(
            boards, model, source, run=CalibRun.open(Path(tmp) / "run", ["bench"])
        )
    same = resumed.table.records.keys() == full.table.records.keys() and all(
        np.array_equal(resumed.table.records[k], full.table.records[k]) for k in full.table.records
    )
    print(
        f"fleet, finish after a cut at 50 % ({cut_at[0] if cut_at else '-'} of {2 * n} "
        f"sample passes answered at the cut, {kept} kept; {stopped}): resume {wall_r:.1f} s "
        f"(agent start {resumed.timings_s['connect']:.1f} s, histogram pass "
        f"{resumed.timings_s.get('histogram', 0):.1f} s) vs a full run {full_wall:.1f} s "
        f"(histogram pass {full.timings_s.get('histogram', 0):.1f} s): "
        f"{wall_r / full_wall:.2f}x; table {'identical' if same else 'DIFFERENT'}",
        flush=True,
    )
    return wall_r / full_wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--images", type=int, default=1000, help="images of the calibrate-overhead figure"
    )
    ap.add_argument("--repeats", type=int, default=3, help="alternated runs of each ratio")
    ap.add_argument(
        "--ncnn2table-images",
        type=int,
        default=2000,
        help="images of the figure against the real ncnn2table (NCNN2TABLE=path)",
    )
    ap.add_argument("--ncnn2table-threads", type=int, default=2)
    ap.add_argument("--no-literal", action="store_true", help="skip the slow literal KL port")
    ap.add_argument(
        "--board",
        default=None,
        help="also measure on this board (default: emu1 if EDGECAL_BOARDS is set; 'none': skip)",
    )
    ap.add_argument("--board-only", action="store_true", help="only the board figures")
    ap.add_argument(
        "--fleet",
        default=None,
        metavar="B1,B2",
        help="also measure a fleet of these boards (same profile) against the first "
        "alone (default: emu1,emu4 if EDGECAL_BOARDS names both; 'none': skip)",
    )
    ap.add_argument(
        "--fleet-images",
        type=int,
        default=300,
        help="images of the sample model for the fleet figures",
    )
    ap.add_argument(
        "--fleet-repeats",
        type=int,
        default=3,
        help="interleaved repeats of the fleet figures (medians are printed)",
    )
    args = ap.parse_args()

    board = args.board or ("emu1" if os.environ.get("EDGECAL_BOARDS") else None)
    if board and board != "none":
        bench_board(board, 10)
    fleet = args.fleet
    if fleet is None and os.environ.get("EDGECAL_BOARDS"):
        from edgecal.boards.config import boards_file, load_boards

        known = load_boards(boards_file(None))
        fleet = "emu1,emu4" if {"emu1", "emu4"} <= set(known) else None
    if fleet and fleet != "none":
        bench_fleet(fleet.split(","), args.fleet_images, args.fleet_repeats)
    if args.board_only:
        return 0
    bench_ncnn2table(args.ncnn2table_images, args.ncnn2table_threads, args.repeats)
    bench_overhead(args.images, args.repeats)
    bench_kl(sample_histograms(300), literal=not args.no_literal)
    small, large = agent_rss_kb(100), agent_rss_kb(1000)
    growth = (large - small) / small * 100
    print(
        f"agent peak RSS: {small / 1024:.1f} MiB at 100 images, {large / 1024:.1f} MiB at "
        f"1000 images: growth {growth:+.1f} % (target <= 5 %)"
    )
    # the other parts of issue 12 (EQ, rules, tune): each module prints its own lines
    extra_figures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
