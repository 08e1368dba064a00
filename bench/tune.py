"""tune's speed against the work it replaces (issue 12, "tune in minutes").

For each model -- the reference set's ``digits`` and ``multi`` and the sample model
``samples/tinted_digits`` -- alternated: ``edgecal calibrate`` (calibration images) + ``edgecal
validate --table`` (the held-out images with their labels: digits' ``test.npz`` as PNGs, the
sample's ``test/``; multi, two inputs: its calibration images), and ``edgecal tune --max-drop
0`` (the hardest target: every loss must be won back) on the same images, both on this machine
with one thread.  Each is repeated
``repeats`` times, alternated, and the medians are compared.  Prints
``tune / (calibrate + validate), <model>: <ratio> (target <= 5.0)``, plus the layers int8 and
the variants scored; and tune on one and on two local agents (``--runtime calibration
--threads 1|2``) on the PP-OCR-like model: the speedup of spreading every variant's images over
the agents.  Usage: ``python bench/tune.py [--repeats N] [--images N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecal.cli.main import main  # noqa: E402

REF = ROOT / "tests" / "data" / "reference"
SAMPLE = ROOT / "samples" / "tinted_digits"


def _digits_test(tmp: Path) -> list[str]:
    """digits' 200 test images as PNGs with a labels CSV: validate's/tune's arguments."""
    import numpy as np
    from PIL import Image

    d = tmp / "digits-test"
    d.mkdir()
    data = np.load(REF / "digits" / "test.npz")
    rows = ["file,label"]
    for i, (x, y) in enumerate(zip(data["x"], data["y"], strict=True)):
        Image.fromarray(x).save(d / f"t{i:03d}.png")
        rows.append(f"t{i:03d}.png,{int(y)}")
    (tmp / "digits-labels.csv").write_text("\n".join(rows) + "\n")
    return ["--val-images", str(d), "--labels", str(tmp / "digits-labels.csv")]


def _models(n_sample: int, tmp: Path) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """name -> (model files, input arguments, held-out images arguments)."""
    d, m = REF / "digits", REF / "multi"
    sample_list = tmp / "sample.txt"
    lines = (SAMPLE / "calib.txt").read_text().splitlines()[:n_sample]
    sample_list.write_text("".join(f"{SAMPLE / p}\n" for p in lines))
    return {
        "digits": (
            [str(d / "model.param"), str(d / "model.bin")],
            [
                "--images",
                str(d / "images.txt"),
                "--pixel",
                "GRAY",
                "--mean",
                "0",
                "--norm",
                "0.00392157",
                "--shape",
                "32,32",
            ],
            _digits_test(tmp),
        ),
        "multi": (
            [str(m / "model.param"), str(m / "model.bin")],
            [
                "--images",
                str(m / "list_a.txt"),
                "--pixel",
                "GRAY",
                "--mean",
                "0",
                "--norm",
                "0.00392157",
                "--shape",
                "32,32",
                "--images",
                str(m / "list_b.txt"),
                "--pixel",
                "RGB",
                "--mean",
                "127.5,127.5,127.5",
                "--norm",
                "0.00784314,0.00784314,0.00784314",
                "--shape",
                "16,16",
            ],
            [],
        ),
        "tinted_digits": (
            [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")],
            [
                "--images",
                str(sample_list),
                "--pixel",
                "RGB",
                "--mean",
                "127.5,127.5,127.5",
                "--norm",
                "0.00784314,0.00784314,0.00784314",
                "--shape",
                "48,48",
            ],
            ["--val-images", str(SAMPLE / "test"), "--labels", str(SAMPLE / "labels.csv")],
        ),
    }


def _quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def _validate_inputs(inputs: list[str], held: list[str]) -> list[str]:
    """validate's arguments: the calibration images' preprocessing on the held-out images."""
    if not held:
        return inputs
    out = list(inputs)
    out[out.index("--images") + 1] = held[1]
    return [*out, "--labels", held[3]]


def _calibrate_validate(model: list[str], inputs: list[str], held: list[str], tmp: Path) -> float:
    table = tmp / "cv.table"
    t0 = time.perf_counter()
    _quiet(["-q", "calibrate", *model, *inputs, "--threads", "1", "--out", str(table)])
    v = _validate_inputs(inputs, held)
    _quiet(["-q", "validate", *model, "--table", str(table), *v, "--threads", "1"])
    return time.perf_counter() - t0


def _tune(
    model: list[str],
    inputs: list[str],
    held: list[str],
    out: Path,
    options: tuple[str, ...] = ("--threads", "1"),
) -> tuple[float, dict]:  # type: ignore[type-arg]
    t0 = time.perf_counter()
    _quiet(
        [
            "-q",
            "tune",
            *model,
            *inputs,
            *held,
            *options,
            "--max-drop",
            "0",
            "--out-dir",
            str(out),
            "--no-report",
        ]
    )
    secs = time.perf_counter() - t0
    return secs, json.loads((out / "tune.json").read_text())


def bench_tune(repeats: int = 1, n_sample: int = 60) -> None:
    """Print tune / (calibrate + validate) per model, medians of ``repeats`` alternated runs."""
    with tempfile.TemporaryDirectory(prefix="edgecal-bench-tune-") as t:
        tmp = Path(t)
        for name, (model, inputs, held) in _models(n_sample, tmp).items():
            cv: list[float] = []
            tu: list[float] = []
            doc: dict = {}  # type: ignore[type-arg]
            for i in range(repeats):
                cv.append(_calibrate_validate(model, inputs, held, tmp))
                secs, doc = _tune(model, inputs, held, tmp / f"tune-{name}-{i}")
                tu.append(secs)
            ratio = statistics.median(tu) / statistics.median(cv)
            n_int8 = doc.get("int8_layers")
            n_all = doc.get("quantizable_layers")
            layers = f"{n_int8}/{n_all}" if n_int8 is not None else "?"
            print(
                f"tune {name}: {statistics.median(tu):.1f} s, calibrate + validate "
                f"{statistics.median(cv):.1f} s; {doc.get('evaluations')} variants scored; "
                f"layers int8 {layers}; drop {doc['initial']['drop_points']:.2f} -> "
                f"{doc['final']['drop_points']:.2f} points"
            )
            print(f"tune / (calibrate + validate), {name}: {ratio:.2f} (target <= 5.0)")
        bench_tune_agents(repeats, tmp)
        bench_incremental(repeats, tmp)


def _ppocr_inputs(n: int) -> tuple[list[str], list[str]]:
    """The PP-OCR-like model's files and ``n`` images' input arguments."""
    sys.path.insert(0, str(ROOT / "bench"))
    import ppocr_like
    from run import PPOCR_SPEC, bench_cache

    param, bin_, lst = ppocr_like.ensure(bench_cache(), n)
    s = PPOCR_SPEC
    inputs = [
        "--images",
        str(lst),
        "--mean",
        ",".join(f"{v:g}" for v in s.mean),
        "--norm",
        ",".join(f"{v:g}" for v in s.norm),
        "--shape",
        f"{s.shape[0]},{s.shape[1]}",
        "--pixel",
        s.pixel,
    ]
    return [str(param), str(bin_)], inputs


def bench_incremental(repeats: int, tmp: Path, n: int = 100) -> None:
    """Scoring variants with work proportional to what changed: ``edgecal validate
    --sensitivity`` (each of the 54 layers in fp32, and alone in int8: 108 variants) on the
    PP-OCR-like model, ``n`` images, this machine, one thread, with ``Scorer.score_many``
    computing only what each variant changes and with whole forwards, alternated, medians;
    and whether the two rankings are identical."""
    from edgecal.workflows.scoring import Scorer

    model, inputs = _ppocr_inputs(n)
    table = tmp / "incremental.table"
    _quiet(["-q", "calibrate", *model, *inputs, "--threads", "1", "--out", str(table)])
    times: dict[bool, list[float]] = {True: [], False: []}
    docs: dict[bool, str] = {}
    try:
        for i in range(repeats):
            for incremental, into in times.items():
                Scorer.incremental = incremental
                run = tmp / f"incremental-{incremental}-{i}"
                argv = ["-q", "validate", *model, "--table", str(table), *inputs]
                t0 = time.perf_counter()
                _quiet([*argv, "--threads", "1", "--sensitivity", "--run-dir", str(run)])
                into.append(time.perf_counter() - t0)
                sens = json.loads((run / "sensitivity.json").read_text())
                docs[incremental] = json.dumps(
                    [
                        (x["layer"], x["keep_fp32"]["cosine_mean"], x["only_int8"]["cosine_mean"])
                        for x in sens["layers"]
                    ]
                )
    finally:
        Scorer.incremental = True
    inc, whole = statistics.median(times[True]), statistics.median(times[False])
    same = "identical" if docs[True] == docs[False] else "DIFFERENT"
    print(
        f"validate --sensitivity, PP-OCR-like model, {n} images (108 variants), only what "
        f"changed {inc:.1f} s vs whole forwards {whole:.1f} s: {inc / whole:.2f} "
        f"(no target; rankings {same})"
    )


def bench_tune_agents(repeats: int, tmp: Path, n: int = 300) -> None:
    """tune in the calibration runtime on 1 and on 2 local agents (``--threads 2``: each
    variant's images spread over both), the PP-OCR-like model on ``n`` images (no labels:
    top-1 agreement), alternated, medians; and whether both chose the same."""
    model, inputs = _ppocr_inputs(n)
    times: dict[str, list[float]] = {"1": [], "2": []}
    docs: list[dict] = []  # type: ignore[type-arg]
    for i in range(repeats):
        for agents, into in times.items():
            options = ("--runtime", "calibration", "--threads", agents)
            out = tmp / f"tune-ppocr-{agents}-{i}"
            secs, doc = _tune(model, inputs, [], out, options)
            into.append(secs)
            docs.append(doc)
    same = len({json.dumps(d["layer_methods"], sort_keys=True) for d in docs}) == 1
    t1, t2 = statistics.median(times["1"]), statistics.median(times["2"])
    print(
        f"tune, PP-OCR-like model, {n} images, calibration runtime: 1 agent {t1:.1f} s, 2 local "
        f"agents (--threads 2: each variant's images spread over both) {t2:.1f} s: speedup "
        f"{t1 / t2:.2f}x (no target; {'the same' if same else 'DIFFERENT'} choices; "
        f"{docs[-1].get('evaluations')} variants)"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--images", type=int, default=60, help="sample model images")
    a = ap.parse_args()
    bench_tune(a.repeats, a.images)
