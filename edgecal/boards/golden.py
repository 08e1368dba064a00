"""The golden check: a small reference model run on a board and on the host, outputs compared.

A board whose ncnn computes wrong results (a mis-built or corrupted ncnn, a broken CPU path)
would pollute every statistic gathered on it; this finds it in seconds, before it is used.

The model is generated here, with edgecal's own writers (no binary file in the package)::

    Input data 16x16x3 -> Convolution conv1 (8, 3x3, pad 1, ReLU) -> ConvolutionDepthWise dw1
    (8 groups, 3x3, stride 2, pad 1, ReLU) -> Pooling pool1 (max 2x2, stride 2) ->
    InnerProduct fc (16)

weights and the ``N_SAMPLES`` float32 inputs from fixed seeds (numpy's PCG64, so the same bytes on
every machine).  The board runs it in the ``calibration`` runtime (ncnn2table's options: fp32,
no fp16/bf16 storage or arithmetic, 1 thread), the host in the same runtime (a ``LocalDevice``,
once per process), and for each compared blob (``conv1``, ``dw1``, ``pool1``, ``fc``) over
every sample the cosine and the max relative error ``max|board - host| / max|host|`` are taken.

Measured (x86-64 host with AVX-512, ncnn 1.0.20261020, numpy 2.4.6; the emulated boards of
``make boards-up`` under qemu, same ncnn; worst over the 4 blobs and 4 samples; each figure the
same on every run)::

    board vs host (host: calibration runtime)     max relative error   1 - least cosine
    host, calibration                             0                    0
    host, deployed (fp16 weight storage)          4.7e-4               3e-8
    emu1 (cortex-a72), calibration                9.1e-6               2.1e-12
    emu2 (cortex-a76), calibration                9.1e-6               2.1e-12
    emu1, deployed (fp16 weight storage in fc)    2.4e-4               2.5e-8
    emu2, deployed (fp16 arithmetic)              1.5e-3               8.0e-7
    host, native agent (x86_64), calibration      8.3e-8               6e-16
    emuv7 (armv7, native agent), calibration      8.3e-6               2.5e-12
    emu3 (aarch64, native agent), calibration     9.1e-6               2.1e-12
    emuv7 / emu3 (native agent), deployed         2.4e-4               2.5e-8

A native board is compared with the same host reference (the Python wheel's outputs): its
figures against the host's own native agent (same ncnn version, edgecal's static build) are the
same to two digits, as the two host agents differ by 8.3e-8 at most, four orders under the
tolerance; so the reference needs no native build on the host.

In fp32 the differences are float rounding only: the boards compute ``conv1`` (3x3, stride 1)
with ncnn's ARM Winograd kernel (with ``use_winograd_convolution`` off emu1's ``conv1`` equals
the host's bit for bit; x86 is within 1.5e-7 of a float64 computation).  Tolerances, two
orders of magnitude above the worst measured figure of their runtime: calibration max relative
error 1e-3 (~100x the worst measured) and cosine >= 1 - 1e-6; deployed 5e-2 (~30x) and
cosine >= 0.9999.  A board whose ncnn
reads every 50th weight 25 % too large (tests/boards/test_board_health.py) is off by 6.9e-2
relative, cosine 0.99905.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.device.base import Device
from edgecal.device.capture import Workload, run_outputs, write_shards
from edgecal.errors import EdgecalError
from edgecal.inputs.spec import InputSpec
from edgecal.ncnnfmt.modelbin import WeightRecord, write_records
from edgecal.ncnnfmt.param import Layer, ParamFile, int_value, render_param
from edgecal_agent.messages import RUNTIMES

SEED = 20261127
N_SAMPLES = 4
INPUT_BLOB = "data"
#: ncnn's ``w, h, c`` of the input; the numpy shape of a sample is this reversed.
INPUT_SHAPE = (16, 16, 3)
#: The blobs compared, in network order.
OUTPUT_BLOBS = ("conv1", "dw1", "pool1", "fc")


@dataclass(frozen=True)
class GoldenTolerance:
    """A blob passes when ``max_rel_err <= max_rel_err`` and ``cosine >= min_cosine``."""

    max_rel_err: float
    min_cosine: float


#: Per runtime; see the module docstring for the measured figures they are chosen from.
TOLERANCES: Mapping[str, GoldenTolerance] = {
    "calibration": GoldenTolerance(max_rel_err=1e-3, min_cosine=1 - 1e-6),
    "deployed": GoldenTolerance(max_rel_err=5e-2, min_cosine=0.9999),
}


@dataclass(frozen=True)
class GoldenModel:
    """The reference model's files' contents and its inputs."""

    param: str
    bin: bytes
    samples: tuple[np.ndarray, ...]  # float32, numpy shape INPUT_SHAPE reversed

    @property
    def spec(self) -> InputSpec:
        return InputSpec(blob=INPUT_BLOB, kind="npy", shape=INPUT_SHAPE)


def _layer(
    type_: str, name: str, bottoms: Sequence[str], tops: Sequence[str], params: Mapping[int, int]
) -> Layer:
    layer = Layer(type_, name, list(bottoms), list(tops))
    for pid, value in params.items():
        layer.set_param(pid, int_value(value))
    return layer


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def build_golden_model(seed: int = SEED) -> GoldenModel:
    """The reference model and its inputs: the same bytes on every call and machine."""
    rng = np.random.default_rng(seed)
    w, h, c = INPUT_SHAPE
    c1, fc_out = 8, 16
    pooled = (w // 4) * (h // 4) * c1  # dw stride 2, pool stride 2
    conv_w = _normal(rng, (c1, c, 3, 3), 1 / np.sqrt(c * 9))
    conv_b = _normal(rng, (c1,), 0.1)
    dw_w = _normal(rng, (c1, 1, 3, 3), 1 / 3)
    dw_b = _normal(rng, (c1,), 0.1)
    fc_w = _normal(rng, (fc_out, pooled), 1 / np.sqrt(pooled))
    fc_b = _normal(rng, (fc_out,), 0.1)
    layers = [
        _layer("Input", INPUT_BLOB, [], [INPUT_BLOB], {0: w, 1: h, 2: c}),
        _layer(
            "Convolution",
            "conv1",
            [INPUT_BLOB],
            ["conv1"],
            {0: c1, 1: 3, 4: 1, 5: 1, 6: conv_w.size, 9: 1},
        ),
        _layer(
            "ConvolutionDepthWise",
            "dw1",
            ["conv1"],
            ["dw1"],
            {0: c1, 1: 3, 3: 2, 4: 1, 5: 1, 6: dw_w.size, 7: c1, 9: 1},
        ),
        _layer("Pooling", "pool1", ["dw1"], ["pool1"], {0: 0, 1: 2, 2: 2}),
        _layer("InnerProduct", "fc", ["pool1"], ["fc"], {0: fc_out, 1: 1, 2: fc_w.size}),
    ]
    param = render_param(ParamFile(layers, declared_blob_count=len(layers)))
    bin_ = write_records(
        [
            WeightRecord("weight", "f32", conv_w.reshape(-1)),
            WeightRecord("bias", "raw", conv_b),
            WeightRecord("weight", "f32", dw_w.reshape(-1)),
            WeightRecord("bias", "raw", dw_b),
            WeightRecord("weight", "f32", fc_w.reshape(-1)),
            WeightRecord("bias", "raw", fc_b),
        ]
    )
    shape = tuple(reversed(INPUT_SHAPE))
    samples = tuple(rng.standard_normal(shape).astype(np.float32) for _ in range(N_SAMPLES))
    return GoldenModel(param=param, bin=bin_, samples=samples)


Outputs = list[dict[str, np.ndarray]]


def run_golden(
    device: Device,
    *,
    runtime: str = "calibration",
    model: GoldenModel | None = None,
    timeout_s: float = 600.0,
) -> Outputs:
    """Per sample, ``blob -> float32 array`` of :data:`OUTPUT_BLOBS` computed on ``device``."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    model = model or build_golden_model()
    with tempfile.TemporaryDirectory(prefix="edgecal-golden-") as tmp:
        folder = Path(tmp)
        param, bin_ = folder / "golden.param", folder / "golden.bin"
        param.write_text(model.param, encoding="utf-8")
        bin_.write_bytes(model.bin)
        shards = write_shards(
            ((s,) for s in model.samples),
            [model.spec],
            folder / "shards",
            shard_size=len(model.samples),
        )
        work = Workload(param, bin_, [model.spec], shards, OUTPUT_BLOBS, runtime, threads=1)
        return list(run_outputs(device, work, timeout_s=timeout_s))


class HostReferenceError(EdgecalError):
    """This machine cannot compute the golden reference: no board can be judged."""


_HOST_LOCK = threading.Lock()
_HOST_CACHE: dict[str, Outputs | EdgecalError] = {}


def host_reference() -> Outputs:
    """The golden outputs on this machine (calibration runtime), computed once per process
    (thread-safe; a failure is remembered too).  Raises :class:`HostReferenceError`."""
    with _HOST_LOCK:
        if "calibration" not in _HOST_CACHE:
            from edgecal.device.local import LocalDevice

            try:
                with LocalDevice(threads=1, name="host") as dev:
                    _HOST_CACHE["calibration"] = run_golden(dev)
            except EdgecalError as e:
                _HOST_CACHE["calibration"] = HostReferenceError(
                    f"this machine cannot compute the golden model's reference outputs: {e}",
                    hint="check the host's ncnn (`edgecal hello`)",
                )
        got = _HOST_CACHE["calibration"]
    if isinstance(got, EdgecalError):
        raise got
    return got


@dataclass(frozen=True)
class BlobFigures:
    blob: str
    cosine: float  # the least over the samples
    max_rel_err: float  # the largest over the samples

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a non-finite figure is ``null``)."""
        return {
            "blob": self.blob,
            "cosine": _json_float(self.cosine),
            "max_rel_err": _json_float(self.max_rel_err),
        }


def _figures(board: np.ndarray, host: np.ndarray) -> tuple[float, float]:
    b = np.asarray(board, dtype=np.float64).reshape(-1)
    h = np.asarray(host, dtype=np.float64).reshape(-1)
    if b.shape != h.shape:
        return float("nan"), float("inf")
    if not np.all(np.isfinite(b)):
        return float("nan"), float("inf")
    scale = float(np.max(np.abs(h))) if h.size else 0.0
    err = float(np.max(np.abs(b - h))) if h.size else 0.0
    rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
    nb, nh = float(np.linalg.norm(b)), float(np.linalg.norm(h))
    if nb == 0 or nh == 0:  # an all-zero output: alike only when both are
        return (1.0 if nb == nh else 0.0), rel
    return float(np.dot(b, h) / (nb * nh)), rel


def compare_outputs(board: Outputs, host: Outputs) -> list[BlobFigures]:
    """Per blob of ``host``'s samples: the least cosine and largest relative error over them
    (a missing sample or blob, a shape mismatch or a non-finite value: cosine nan, error inf)."""
    blobs = list(host[0]) if host else []
    out = []
    for blob in blobs:
        cos, rel = 1.0, 0.0
        for i, ref in enumerate(host):
            got = board[i].get(blob) if i < len(board) else None
            c, r = (float("nan"), float("inf")) if got is None else _figures(got, ref[blob])
            cos = cos if np.isnan(cos) else c if np.isnan(c) else min(cos, c)
            rel = max(rel, r)
        out.append(BlobFigures(blob, cos, rel))
    return out


def _passes(f: BlobFigures, tol: GoldenTolerance) -> bool:
    return bool(f.max_rel_err <= tol.max_rel_err and f.cosine >= tol.min_cosine)


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


@dataclass
class GoldenResult:
    """``what``: the finding (without the board's name), ``fix``: what to do (when not ok)."""

    board: str
    ok: bool
    runtime: str
    tolerance: GoldenTolerance
    figures: list[BlobFigures] = field(default_factory=list)
    what: str = ""
    fix: str = ""
    seconds: float = 0.0

    @property
    def message(self) -> str:
        """One line naming the board, and the fix when the check failed."""
        return f"{self.board}: {self.what}" + (f": {self.fix}" if self.fix else "")

    @property
    def worst_cosine(self) -> float:
        vals = [f.cosine for f in self.figures]
        return float("nan") if any(np.isnan(v) for v in vals) else min(vals, default=1.0)

    @property
    def worst_rel_err(self) -> float:
        return max((f.max_rel_err for f in self.figures), default=0.0)

    def summary(self) -> str:
        return (
            f"{len(self.figures)} outputs vs the host's, least cosine "
            f"{self.worst_cosine:.9f}, max relative error {self.worst_rel_err:.2g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a non-finite figure is ``null``)."""
        return {
            "ok": self.ok,
            "runtime": self.runtime,
            "message": self.message,
            "what": self.what,
            "fix": self.fix or None,
            "tolerance": asdict(self.tolerance),
            "figures": [f.to_dict() for f in self.figures],
            "seconds": round(self.seconds, 3),
        }


def fix_for(board: str) -> str:
    return f"reinstall ncnn (`edgecal board provision {board} --force`) or leave the board out"


def judge(
    board: str,
    figures: list[BlobFigures],
    *,
    runtime: str = "calibration",
    tolerance: GoldenTolerance | None = None,
) -> GoldenResult:
    """The verdict on ``figures``: ok, or what is off (the worst blob) and the fix."""
    tol = tolerance or TOLERANCES[runtime]
    bad = [f for f in figures if not _passes(f, tol)]
    result = GoldenResult(board=board, ok=not bad, runtime=runtime, tolerance=tol, figures=figures)
    if bad:
        worst = max(bad, key=lambda f: float("inf") if np.isnan(f.cosine) else f.max_rel_err)
        result.fix = fix_for(board)
        result.what = (
            f"the board's ncnn computes wrong results: the golden model's {worst.blob!r} "
            f"differs from the host's (cosine {worst.cosine:.9f}, max relative error "
            f"{worst.max_rel_err:.2g}; allowed >= {tol.min_cosine:.9f}, <= "
            f"{tol.max_rel_err:.0e}; {len(bad)} of {len(figures)} outputs off)"
        )
    else:
        result.what = f"golden check passed ({result.summary()})"
    return result


def golden_check(
    device: Device,
    *,
    reference_device: Device | None = None,
    tolerance: GoldenTolerance | None = None,
    runtime: str = "calibration",
    timeout_s: float = 600.0,
) -> GoldenResult:
    """Run the golden model on ``device`` (in ``runtime``) and compare its outputs with the
    host's: ``reference_device``'s, else this machine's computed once per process (both in the
    calibration runtime).  Raises ``DeviceError`` when ``device`` cannot run the model at all,
    :class:`HostReferenceError` when this machine cannot."""
    t0 = time.perf_counter()
    model = build_golden_model()
    board = run_golden(device, runtime=runtime, model=model, timeout_s=timeout_s)
    host = (
        run_golden(reference_device, model=model, timeout_s=timeout_s)
        if reference_device is not None
        else host_reference()
    )
    result = judge(device.name, compare_outputs(board, host), runtime=runtime, tolerance=tolerance)
    result.seconds = time.perf_counter() - t0
    return result
