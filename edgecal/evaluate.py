"""fp32 vs int8 on a device: top-1 accuracy, top-1 agreement and output cosine."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.device import capture
from edgecal.device.base import Device
from edgecal.errors import ModelFormatError
from edgecal.inputs import SampleSource
from edgecal.pipeline import ProgressFactory, _no_progress


@dataclass
class EvalResult:
    n_samples: int
    output_blob: str
    top1_fp32: float | None
    top1_int8: float | None
    agreement: float
    cosine_mean: float
    cosine_min: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return float(a64 @ b64) / denom if denom > 0 else (1.0 if np.array_equal(a64, b64) else 0.0)


def evaluate(
    device: Device,
    fp32: tuple[Path, Path],
    int8: tuple[Path, Path],
    source: SampleSource,
    output_blob: str,
    *,
    labels: list[int] | None = None,
    runtime: str = "deployed",
    threads: int = 1,
    progress: ProgressFactory | None = None,
) -> EvalResult:
    progress = progress or _no_progress
    n = source.n_samples
    with tempfile.TemporaryDirectory(prefix="edgecal-eval-") as tmp:
        shards = capture.write_shards(iter(source), source.specs, Path(tmp))
        outs: list[list[np.ndarray]] = []
        for label, (param, binf) in (("fp32", fp32), ("int8", int8)):
            tick = progress(f"run {label}", n)
            values: list[np.ndarray] = []
            for sample in capture.run_outputs(
                device, param, binf, source.specs, shards, [output_blob],
                runtime=runtime, threads=threads,
            ):
                values.append(sample[output_blob].ravel())
                tick(len(values), n)
            outs.append(values)
    a, b = outs
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.shape != y.shape:
            raise ModelFormatError(
                f"output {output_blob} of sample {i} has {x.size} values in fp32 and {y.size} "
                "in int8: the int8 model does not match the fp32 model"
            )
    pa = np.array([int(np.argmax(x)) for x in a])
    pb = np.array([int(np.argmax(y)) for y in b])
    cos = np.array([_cosine(x, y) for x, y in zip(a, b, strict=True)])
    top1_a = top1_b = None
    if labels is not None:
        lab = np.asarray(labels)
        top1_a, top1_b = float(np.mean(pa == lab)), float(np.mean(pb == lab))
    return EvalResult(
        n_samples=n,
        output_blob=output_blob,
        top1_fp32=top1_a,
        top1_int8=top1_b,
        agreement=float(np.mean(pa == pb)),
        cosine_mean=float(cos.mean()),
        cosine_min=float(cos.min()),
    )
