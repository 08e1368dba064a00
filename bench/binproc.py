"""The agent's statistics worker process (issue 12, item 5): ``calibrate`` with the worker
(the default: used while the agent has a core to itself) and without it
(``EDGECAL_AGENT_BIN_WORKER=0``), each against two bare ncnn forward passes over the same
images, alternated in one run, medians.  Uses bench/run.py's measurements (PP-OCR-like model,
1 thread, one local agent)."""

from __future__ import annotations

import importlib.util
import os
import statistics
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgecal_bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_binworker(n: int = 1000, repeats: int = 3) -> None:
    """Prints the calibrate / (2 x bare forward) ratio with and without the worker, and the
    histogram pass with / without."""
    run = _run_module()
    param, bin_, lst = run.ppocr_like.ensure(run.bench_cache(), n)
    images = run.read_list(lst)
    bare: list[float] = []
    wall: dict[str, list[float]] = {"on": [], "off": []}
    hist: dict[str, list[float]] = {"on": [], "off": []}
    old = os.environ.get("EDGECAL_AGENT_BIN_WORKER")
    try:
        for _ in range(repeats):
            bare.append(run.bare_forward_s(param, bin_, run.PPOCR_SPEC, images)[0])
            for mode, env in (("on", ""), ("off", "0")):
                os.environ["EDGECAL_AGENT_BIN_WORKER"] = env  # the local agent inherits it
                seconds, _, result = run.calibrate_s(param, bin_, run.PPOCR_SPEC, images, 1)
                wall[mode].append(seconds)
                hist[mode].append(result.timings_s.get("histogram", 0.0))
    finally:
        if old is None:
            os.environ.pop("EDGECAL_AGENT_BIN_WORKER", None)
        else:
            os.environ["EDGECAL_AGENT_BIN_WORKER"] = old
    two_bare = 2 * statistics.median(bare)
    on, off = statistics.median(wall["on"]), statistics.median(wall["off"])
    print(
        f"calibrate / (2 x bare forward), 1 thread, {n} images, statistics worker on: "
        f"{on / two_bare:.3f}, off: {off / two_bare:.3f} (target <= 1.15; medians of "
        f"{repeats} alternated runs)"
    )
    print(
        f"histogram pass with / without the statistics worker: "
        f"{statistics.median(hist['on']) / statistics.median(hist['off']):.3f} (target < 1.0; "
        "the worker needs a second idle core)"
    )


if __name__ == "__main__":
    bench_binworker()
