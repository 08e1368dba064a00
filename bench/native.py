"""The native agent's figures (issue 13, and issue 12's speed targets that need it).

* on an emulated board that has both agents (``--native-board``, default ``emu1``; qemu
  ~300x slower than native): the agent start (connect to READY, push excluded) of the Python
  and the native agent; their capture throughput (abs-max + histogram passes of the sample
  model on ``--native-images`` images, default 20); the bytes the native agent costs on a first
  and a repeated run.  Alternated, medians of ``--native-repeats`` (default 3).
* on this machine: ``calibrate`` with the native agent (``--device local:native``) against 2 x
  the bare forward of the same libncnn (the native agent's own timed forwards of the same
  images: the peer that runs the same kernels), 1 thread, calibration runtime, the PP-OCR-like
  model, ``--images`` images (target <= 1.15, issue 12); the Python agent's calibrate beside
  it; and, with ``NCNN2TABLE=path``, ``edgecal ncnn2table --device local:native`` against the
  real ncnn2table (target <= 1.0, issue 12).  A second peer beside the bare forward: a bare
  pass that also converts each image from its decoded pixels (``from_pixels_resize`` +
  mean/norm), what an app's forward of an image costs.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from edgecal.boards.config import boards_file, load_boards  # noqa: E402
from edgecal.boards.open import LOCAL_NATIVE, host_native_agent, ssh_target  # noqa: E402
from edgecal.device import capture  # noqa: E402
from edgecal.device.local import LocalDevice  # noqa: E402
from edgecal.device.ssh.device import SshDevice  # noqa: E402
from edgecal.inputs.model import load_model  # noqa: E402
from edgecal.inputs.samples import make_sample_source, read_list  # noqa: E402
from edgecal.inputs.spec import InputSpec  # noqa: E402
from edgecal.workflows.calibrate import calibrate  # noqa: E402

SAMPLE = ROOT / "samples" / "tinted_digits"
SPEC = InputSpec(
    blob="in0", kind="image", pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48)
)


def _board_device(name: str, agent: str) -> SshDevice:
    board = load_boards(boards_file(None))[name]
    profile = board.load_profile()
    return SshDevice(
        ssh_target(board),
        workdir=board.workdir,
        python=board.python,
        workdir_root=board.workdir_root,
        threads=profile.threads if profile else None,
        agent=agent,
    )


def _forget_native(dev: SshDevice) -> None:
    names = [p for p in dev.link.sftp().listdir(str(dev.workdir)) if "agent-native" in p]
    if names:
        dev.link.run(["rm", "-f", "--", *[dev.remote(p) for p in names]], timeout_s=120)


def bench_native_board(name: str, n: int, repeats: int) -> None:
    images = sorted((SAMPLE / "calib").glob("*.png"))[:n]
    model = load_model(SAMPLE / "model.param", SAMPLE / "model.bin")
    source = make_sample_source([SPEC], [images])
    with _board_device(name, "native") as dev:
        _forget_native(dev)
    pushed: dict[str, int] = {}
    for label in ("first", "repeat"):
        with _board_device(name, "native") as dev:
            dev.hello()
            pushed[label] = dev.bytes_pushed
    start: dict[str, list[float]] = {"python": [], "native": []}
    cap: dict[str, list[float]] = {"python": [], "native": []}
    for _ in range(repeats):
        for agent in ("python", "native"):
            with _board_device(name, agent) as dev:
                dev.hello()
                start[agent].append(dev.timings_s["agent_start"])
                run = calibrate(model, source, [dev], method="kl")
                t = run.timings_s
                cap[agent].append(t["absmax"] + t["histogram"])
    med = {k: statistics.median(v) for k, v in start.items()}
    print(
        f"agent start on {name} (emulated), python {med['python']:.2f} s, native "
        f"{med['native']:.2f} s: native/python {med['native'] / med['python']:.3f} (medians of "
        f"{repeats} alternated starts; connect to READY, push excluded)"
    )
    thr = {k: n / statistics.median(v) for k, v in cap.items()}
    print(
        f"capture throughput on {name} (emulated), sample model, {n} images, abs-max + "
        f"histogram passes: python {thr['python']:.2f} img/s, native {thr['native']:.2f} img/s: "
        f"native/python {thr['native'] / thr['python']:.2f}x"
    )
    print(
        f"native agent bytes pushed to {name}: first run {pushed['first']} B, repeated run "
        f"{pushed['repeat']} B (target 0)"
    )


def native_bare_s(
    binary: Path, model: Any, spec: InputSpec, images: list[Path]
) -> tuple[float, float]:
    """ncnn alone, the same libncnn as the native agent, over every image: timed ``run`` jobs
    (fresh extractor, the output blob only, calibration options) over the decoded shards, and
    of them, summed, ``(forward, pass)``: the forward's seconds (the agent's own timing of
    ``extract``), and what an app's forward of each image costs (the agent's ``infer``
    seconds: reading the decoded pixels from the shard, the input conversion --
    ``from_pixels_resize`` + mean/norm --, the forward and that blob kept; no statistics, JPEG
    decoding excluded)."""
    source = make_sample_source([spec], [images])
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalDevice(agent="native", native_binary=binary, name=LOCAL_NATIVE) as dev,
    ):
        shards = capture.write_shards(iter(source), [spec], Path(tmp))
        work = capture.Workload.of(model, [spec], [model.output_blobs[0]], "calibration", 1)
        forward = whole = 0.0
        for s in shards:
            params = capture._run_params(dev, work.on(s))
            params["timed"] = True
            job = dev.run_job("run", params)
            forward += sum(float(x) for x in job.result["latency_s"])
            whole += float(job.response["timing_s"]["infer"])
        return forward, whole


def bench_native_local(n: int, repeats: int) -> None:
    import ppocr_like
    from run import PPOCR_SPEC, bench_cache, calibrate_s, forget_kl_searches

    param, bin_, lst = ppocr_like.ensure(bench_cache(), n)
    images = read_list(lst)
    binary = host_native_agent()
    model = load_model(param, bin_)
    source = make_sample_source([PPOCR_SPEC], [images])
    bare: list[float] = []
    app: list[float] = []
    native: list[float] = []
    python: list[float] = []
    for _ in range(repeats):
        forget_kl_searches()
        t0 = time.perf_counter()
        with LocalDevice(agent="native", native_binary=binary, name=LOCAL_NATIVE) as dev:
            calibrate(model, source, [dev], method="kl")
        native.append(time.perf_counter() - t0)
        python.append(calibrate_s(param, bin_, PPOCR_SPEC, images, 1)[0])
        forward, whole = native_bare_s(binary, model, PPOCR_SPEC, images)
        bare.append(forward)
        app.append(whole)
    b, a, nat, py = (statistics.median(x) for x in (bare, app, native, python))
    print(
        f"calibrate (kl, native agent) / (2 x bare forward of the same libncnn), 1 thread: "
        f"{nat / (2 * b):.3f} (target <= 1.15; {n} images, medians of {repeats}; native "
        f"{nat:.2f} s, bare {b:.2f} s, the Python agent's calibrate {py:.2f} s)"
    )
    print(
        f"calibrate (kl, native agent) / (2 x bare pass with the input conversion from decoded "
        f"pixels, the same libncnn: what an app's forward of an image costs), 1 thread: "
        f"{nat / (2 * a):.3f} ({n} images, medians of {repeats}, the same jobs as the above; "
        f"bare pass {a:.2f} s)"
    )


def bench_native_ncnn2table(n: int, threads: int, repeats: int) -> None:
    """``edgecal ncnn2table --device local:native`` against the real ncnn2table, the same
    arguments (``run.bench_ncnn2table``'s), alternated, medians."""
    from run import _median_ratio, race_ncnn2table

    real = os.environ.get("NCNN2TABLE")
    what = (
        f"edgecal ncnn2table --device local:native / real ncnn2table (thread={threads}, "
        f"method=kl, {n} images)"
    )
    if not real or not (Path(real).is_file() and os.access(real, os.X_OK)):
        print(f"{what}: skipped (set NCNN2TABLE to the real ncnn2table; see bench/run.py)")
        return
    host_native_agent()  # built (and cached) before the first timed run
    ours, theirs, same = race_ncnn2table(real, n, threads, repeats, ("--device", LOCAL_NATIVE))
    print(
        f"{what}: {_median_ratio(ours, theirs):.3f} (target <= 1.0; edgecal "
        f"{statistics.median(ours):.2f} s, real {statistics.median(theirs):.2f} s, medians of "
        f"{repeats} alternated runs; {same})"
    )


def bench_native(board: str | None, n_board: int, n_local: int, repeats: int) -> None:
    bench_native_local(n_local, repeats)
    bench_native_ncnn2table(2000, 2, repeats)
    if board and board != "none":
        bench_native_board(board, n_board, repeats)


def bench_native_figures() -> None:
    """``make bench``'s call: 1000 images here, 20 on ``emu1`` when ``EDGECAL_BOARDS`` is set."""
    import os

    bench_native("emu1" if os.environ.get("EDGECAL_BOARDS") else None, 20, 1000, 3)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--native-board", default=None)
    ap.add_argument("--native-images", type=int, default=20)
    ap.add_argument("--only", choices=("calibrate", "ncnn2table"), default=None)
    a = ap.parse_args()
    if a.only == "calibrate":
        bench_native_local(a.images, a.repeats)
    elif a.only == "ncnn2table":
        bench_native_ncnn2table(2000, 2, a.repeats)
    else:
        bench_native(a.native_board, a.native_images, a.images, a.repeats)
