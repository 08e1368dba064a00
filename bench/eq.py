"""EQ benchmark: ``calibrate --method eq`` against ``--method kl`` on the same model and images.

One function, :func:`bench_eq`, prints ``eq / kl time, <model>: <ratio> (target <= 3.0)`` per
model: the two calibrations alternate, each as ``edgecal.calibrate`` runs it by default on this
machine (fresh agents per run: agent start is part of both; KL's passes on one agent worker,
EQ's per-layer search on one agent per usable core, as calibrate does without ``--threads``),
and the ratio is of the medians.  It also prints the EQ search's seconds per calibrated layer
(the ``eq`` part of the eq run's timings) and the agents that searched.

Run alone: ``python bench/eq.py [--repeats N] [--model sample|resnet10|digits ...]
[--device local:native]`` (default: this machine's Python agent, as calibrate's default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecal.api.calibrate import calibrate  # noqa: E402
from edgecal.fleet.prepare import usable_cores  # noqa: E402
from edgecal.inputs.spec import ImageInput, InputSpec  # noqa: E402

SAMPLE = ROOT / "samples" / "tinted_digits"
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
MODELS = {
    "sample": (
        SAMPLE,
        InputSpec("in0", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (48, 48)),
        "calib.txt",
    ),
    # a 10-layer ResNet-like net (bench/make_resnet10.py), on the sample's images at 32x32
    "resnet10": (
        ROOT / "bench" / "data" / "resnet10",
        InputSpec("in0", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (32, 32)),
        SAMPLE / "calib.txt",
    ),
    "digits": (
        DIGITS,
        InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32)),
        "images.txt",
    ),
}


def _timed(
    model_name: str, method: str, device: str | None = None
) -> tuple[float, dict[str, float], int, int]:
    """Seconds of one default calibrate, its timings, its EQ layers and its agents."""
    folder, spec, images = MODELS[model_name]
    inputs = ImageInput(folder / images, spec.pixel, spec.mean, spec.norm, spec.shape)
    t0 = time.perf_counter()
    run = calibrate(
        (folder / "model.param", folder / "model.bin"), [inputs], method=method, devices=device
    )
    agents = len(run.fleet) if method == "kl" else _eq_agents(run.fleet)
    return time.perf_counter() - t0, dict(run.timings_s), len(run.eq), agents


def _eq_agents(fleet: list[dict[str, object]]) -> int:
    """The agents of EQ's search (the passes' own and one more per free core)."""
    return max(len(fleet), usable_cores())


def bench_eq(
    models: tuple[str, ...] = ("sample", "resnet10", "digits"),
    repeats: int = 3,
    device: str | None = None,
) -> None:
    """Print the eq / kl calibrate time ratio per model (medians of alternated runs) on
    ``device`` (default: this machine's Python agent)."""
    where = "" if device is None else f" on {device}"
    for name in models:
        times: dict[str, list[float]] = {"kl": [], "eq": []}
        per_layer: list[float] = []
        n_layers = 0
        agents = {"kl": 0, "eq": 0}
        for _ in range(repeats):
            for method in ("kl", "eq"):
                secs, parts, n, agents[method] = _timed(name, method, device)
                n_layers = n or n_layers
                times[method].append(secs)
                if method == "eq":
                    per_layer.append(parts.get("eq", float("nan")) / max(n_layers, 1))
        kl, eq = statistics.median(times["kl"]), statistics.median(times["eq"])
        print(
            f"eq search per layer, {name}{where}: {statistics.median(per_layer):.2f} s "
            f"({n_layers} layers on {agents['eq']} agent(s), kl on {agents['kl']}; "
            f"kl {kl:.2f} s, eq {eq:.2f} s, medians of {repeats})"
        )
        print(f"eq / kl time, {name}{where}: {eq / kl:.2f} (target <= 3.0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", action="append", choices=sorted(MODELS))
    ap.add_argument("--device", help="e.g. local:native (default: the Python agent)")
    args = ap.parse_args()
    bench_eq(tuple(args.model or ["sample", "resnet10", "digits"]), args.repeats, args.device)


if __name__ == "__main__":
    main()
