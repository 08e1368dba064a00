"""Score int8 variants of one model on a device against the fp32 model's outputs.

Sensitivity and tune try many int8 variants of one fp32 model (a layer kept in fp32, another
method's scale for a layer) on the same images.  :class:`Scorer` writes and pushes the image
shards once, runs the fp32 model once (its outputs are the reference), and then runs each
variant on the device: top-1 agreement with fp32, accuracy (with labels), output cosine, and the
median latency per image with the runtime's threads.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecal.calib.table import CalibrationTable
from edgecal.device import capture
from edgecal.errors import ModelFormatError
from edgecal.int8.convert import quantize_model
from edgecal.quality.metrics import Score, score_outputs
from edgecal.workflows.calibrate import ProgressFactory, _no_progress
from edgecal.workflows.validate import Reference

#: Samples per run job when scoring.
SHARD_SIZE = 64


class Scorer:
    """``reference``'s fp32 outputs on its device over its samples; then :meth:`score` per int8
    variant."""

    def __init__(
        self, reference: Reference, work_dir: Path, *, progress: ProgressFactory | None = None
    ) -> None:
        source, labels = reference.source, reference.labels
        self.device = reference.device
        self.fp32 = fp32 = reference.fp32
        self.specs = source.specs
        self.runtime = reference.runtime
        self.threads = reference.threads
        self.work_dir = work_dir
        self.progress = progress or _no_progress
        self.output = fp32.output_blobs[0]
        self.labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
        self.evaluations = 0
        self.device_seconds = 0.0
        shard_dir = work_dir / "shards"
        shard_dir.mkdir(parents=True, exist_ok=True)
        self.shards = capture.write_shards(iter(source), source.specs, shard_dir, SHARD_SIZE)
        self.n_samples = source.n_samples
        ref, secs = self._run(fp32.param_path, fp32.bin_path, "fp32 reference")
        self.ref = ref
        self.latency_fp32_ms = 1000.0 * float(np.median(secs))
        self.accuracy_fp32 = (
            float(np.mean(np.argmax(ref, 1) == self.labels)) if self.labels is not None else None
        )

    def _run(self, param: Path, bin: Path, what: str) -> tuple[np.ndarray, list[float]]:
        t0 = time.perf_counter()
        tick = self.progress(what, self.n_samples)
        rows: list[np.ndarray] = []
        secs: list[float] = []
        for shard in self.shards:
            work = capture.Workload(
                param, bin, self.specs, [shard], [self.output], self.runtime, self.threads
            )
            outs, lat = capture.run_shard_timed(self.device, work)
            rows.extend(o[self.output].ravel() for o in outs)
            secs.extend(lat)
            tick(len(rows), self.n_samples)
        self.device_seconds += time.perf_counter() - t0
        sizes = {r.size for r in rows}
        if len(sizes) != 1:
            raise ModelFormatError(
                f"{param}: output {self.output} changes size between images ({sorted(sizes)})"
            )
        return np.stack(rows), secs

    def write_variant(
        self, table: CalibrationTable | None, keep_fp32: Sequence[str]
    ) -> tuple[Path, Path]:
        """The int8 model of ``table`` with ``keep_fp32`` left in float, as files (named by
        content, so an identical variant is written and pushed once)."""
        text, data, _ = quantize_model(
            self.fp32.param, self.fp32.weights, table, keep_fp32=sorted(keep_fp32)
        )
        digest = hashlib.sha256(text.encode() + b"\0" + data).hexdigest()[:16]
        d = self.work_dir / "variants"
        d.mkdir(exist_ok=True)
        param, binf = d / f"{digest}.param", d / f"{digest}.bin"
        if not param.exists():
            binf.write_bytes(data)
            param.write_text(text, encoding="utf-8")
        return param, binf

    def score_files(self, param: Path, bin: Path, what: str = "int8 variant") -> Score:
        got, secs = self._run(param, bin, what)
        self.evaluations += 1
        if got.shape != self.ref.shape:
            raise ModelFormatError(
                f"{param}: output {self.output} has {got.shape[1]} values, the fp32 model's "
                f"{self.ref.shape[1]}: the int8 model does not match the fp32 model"
            )
        return score_outputs(
            self.ref, got, self.labels, self.accuracy_fp32, 1000.0 * float(np.median(secs))
        )

    def score(
        self,
        table: CalibrationTable | None,
        keep_fp32: Sequence[str] = (),
        what: str = "int8 variant",
    ) -> Score:
        return self.score_files(*self.write_variant(table, keep_fp32), what=what)
