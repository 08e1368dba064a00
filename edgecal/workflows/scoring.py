"""Score int8 variants of one model on a device against the fp32 model's outputs.

Sensitivity and tune try many int8 variants of one fp32 model (a layer kept in fp32, another
method's scale for a layer) on the same images.  :class:`Scorer` writes and pushes the image
shards once, runs the fp32 model once (its outputs are the reference), and then runs each
variant on the device: top-1 agreement with fp32, accuracy (with labels), output cosine, and the
median latency per image with the runtime's threads.

With several devices (tune over a fleet of boards of one profile, or several local agents)
the images of every run are spread over them, shard by shard (each shard stays on the device
that answered it first), through :class:`~edgecal.fleet.scheduler.Fleet`: a board or link lost
mid-run is retried, then given up and its shards run on the others.  The outputs are put back
in image order, so a score is the one device's whatever the spread (latency aside: each image
is timed where it ran).

Disk stays bounded: a variant's files are removed from the host and from the device's work
directory once it is scored (one variant at a time there, beside the shards and the fp32
model); :attr:`bytes_written` counts what was written here and :attr:`device_bytes` what was
pushed to the device.  :meth:`subset` makes a
scorer over some of the images (the fp32 outputs sliced, not re-run): tune ranks candidates
on it and confirms the winners on every image.

With a task metric (``reference.metric``, ``edgecal tune --metric``) every output of the model
is fetched and kept per sample (output blob -> array), the score is the metric's
(:func:`~edgecal.quality.taskmetrics.score_metric`: its drop, the first output's cosine) and
until a :class:`RankingScorer` has chosen its images, :attr:`Scorer.harm` holds, per image, the
most points a variant scored on every image lost on it alone (the metric called on that image):
the ranking images of a metric other than top-1 start from those.
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgecal.calib.table import CalibrationTable
from edgecal.device import capture
from edgecal.device.base import Device
from edgecal.errors import ModelFormatError
from edgecal.fleet.scheduler import Fleet, FleetExhausted, Job, RetryPolicy
from edgecal.inputs.samples import SampleSource
from edgecal.int8.convert import QuantizedModel, quantize_layers
from edgecal.int8.delta import Delta, bin_patch, delta
from edgecal.quality.latency import median_ms
from edgecal.quality.metrics import Score, score_outputs
from edgecal.quality.taskmetrics import MetricFigures, Outputs, Top1, score_metric
from edgecal.quality.tuning import (
    Variant,
    metric_ranking_subset,
    per_sample_harm,
    ranking_subset,
    score_each,
)
from edgecal.workflows.calibrate import ProgressFactory, _no_progress
from edgecal.workflows.validate import Reference

#: Samples per run job when scoring: one job per variant up to 256 images (a job costs a
#: round trip to the agent and an artifact of its own; the images are decoded in it anyway).
SHARD_SIZE = 256

T = TypeVar("T")

#: One shard's answer: per sample ``blob -> array``, and per sample the seconds of its forward.
ShardRun = tuple[list[dict[str, np.ndarray]], list[float]]

#: Variants scored together (:meth:`Scorer.score_many`): one job per shard runs them all, each
#: a net loaded at once on the device and a pair of files pushed to it ...
BATCH = 8
#: ... and at most this many bytes of their ``.bin`` files (a large model: fewer at a time; one
#: at least), which bounds the device memory and disk they take.
BATCH_BYTES = 64 << 20
#: ... each variant's latency: whole forwards on this many first images of each shard.
TIMED_SAMPLES = 8


def shard_size(n_samples: int, n_devices: int) -> int:
    """Samples per shard: :data:`SHARD_SIZE`, smaller when that leaves a device without a
    shard (64 images on two devices: two shards of 32)."""
    if n_devices <= 1:
        return SHARD_SIZE
    return max(1, min(SHARD_SIZE, math.ceil(n_samples / n_devices)))


class Scorer:
    """``reference``'s fp32 outputs on its device over its samples; then :meth:`score` per int8
    variant.  ``devices``: run on these instead (the reference's device among them or not;
    see the module doc); ``retry``/``say``: their fleet's retry policy and event lines."""

    #: :meth:`score_many` computes only what each variant changes (False: whole forwards, as
    #: :meth:`score`; the benchmark compares the two)
    incremental: bool = True

    def __init__(
        self,
        reference: Reference,
        work_dir: Path,
        *,
        devices: Sequence[Device] = (),
        retry: RetryPolicy | None = None,
        say: Callable[[str], None] | None = None,
        progress: ProgressFactory | None = None,
    ) -> None:
        source, labels = reference.source, reference.labels
        self.device = reference.device
        self.devices = list(devices) or [reference.device]
        self.fleet = Fleet(self.devices, retry=retry, say=say) if len(self.devices) > 1 else None
        self.fp32 = fp32 = reference.fp32
        self.specs = source.specs
        self.runtime = reference.runtime
        self.threads = reference.threads
        self.work_dir = work_dir
        self.progress = progress or _no_progress
        self.output = fp32.output_blobs[0]
        self.labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
        self.metric = reference.metric
        self.metric_labels = (
            list(reference.metric_labels) if reference.metric_labels is not None else None
        )
        # a metric sees every output, the first still first (the one timed)
        self.blobs = list(fp32.output_blobs) if self.metric is not None else [self.output]
        self.evaluations = 0
        self.device_seconds = 0.0
        self.bytes_written = 0
        self.pushed_before = self._pushed()
        self.source = source
        self.shard_sizes: list[int] = []
        self.shards = self._write_shards(source, work_dir / "shards")
        self.n_samples = source.n_samples
        ref, ref_outputs, secs = self._run(fp32.param_path, fp32.bin_path, "fp32 reference")
        self.ref = ref  # the first output's rows (None with a metric: ref_outputs)
        self.ref_outputs = ref_outputs  # with a metric: every output, per sample
        self.fp32_secs = secs
        self.latency_fp32_ms = median_ms(secs)
        self.accuracy_fp32 = (
            float(np.mean(np.argmax(ref, 1) == self.labels))
            if self.labels is not None and ref is not None
            else None
        )
        self.last_outputs: np.ndarray | None = None  # of the last variant scored (no metric)
        self.last_secs: list[float] = []
        self.disagreed = np.zeros(self.n_samples, dtype=bool)  # by any variant scored
        self.harm = np.zeros(self.n_samples)  # with a metric: most points lost per image
        self.track_harm = False  # measure harm (a RankingScorer will choose from it)
        self.figures: dict[int, tuple[Score, MetricFigures]] = {}  # id(score) -> figures
        self.incremental_evaluations = 0  # variants scored that way
        self.layers_recomputed = 0  # ... the layers they ran
        self.layers_whole = 0  # ... and the layers their whole forwards would have run

    @property
    def classes(self) -> np.ndarray:
        """fp32's top-1 class of each image (of the first output, flattened)."""
        if self.ref is not None:
            return np.asarray(np.argmax(self.ref, 1))
        return np.array([int(np.argmax(o[self.output])) for o in self.ref_outputs])

    @property
    def drop_of(self) -> str:
        """What a score's drop is of: the metric's name, else ``accuracy`` (labels) or
        ``agreement``."""
        if self.metric is not None:
            return str(self.metric.name)
        return "accuracy" if self.labels is not None else "agreement"

    def figures_of(self, score: Score) -> MetricFigures | None:
        """The metric's figures behind ``score`` (one this scorer returned; None without a
        metric)."""
        got = self.figures.get(id(score))
        return got[1] if got is not None and got[0] is score else None

    def _write_shards(self, source: SampleSource, d: Path) -> list[Path]:
        d.mkdir(parents=True, exist_ok=True)
        size = shard_size(source.n_samples, len(self.devices))
        written = list(capture.iter_shards(iter(source), source.specs, d, lambda k: size))
        self.shard_sizes = [n for _, n in written]
        self.bytes_written += sum(p.stat().st_size for p, _ in written)
        return [p for p, _ in written]

    def first_alive(self) -> Device:
        """The first of the devices not given up (raises ``FleetExhausted`` when none is:
        a run would have raised it first)."""
        if self.fleet is None:
            return self.devices[0]
        alive = self.fleet.alive
        if not alive:
            raise FleetExhausted("every device of the tune was given up")
        return alive[0]

    def _pushed(self) -> int:
        return sum(d.bytes_pushed for d in self.devices)

    @property
    def device_bytes(self) -> int:
        """Bytes pushed to the devices' work directories since this scorer started."""
        return self._pushed() - self.pushed_before

    def _spread(
        self,
        what: str,
        run: Callable[[Device, int, str | None], Any],
        collect: Callable[[Device, int, str], Any],
        tick: Callable[[int, int], None],
    ) -> list[Any]:
        """``run(device, k, job_id)`` for every shard ``k``, its answers in shard order: one
        after the other on the one device, else over the fleet (``collect``: the answer of
        an interrupted job of shard ``k``, or None)."""
        total = sum(self.shard_sizes)
        if self.fleet is None:
            out: list[Any] = []
            for k in range(len(self.shards)):
                out.append(run(self.devices[0], k, None))
                tick(sum(self.shard_sizes[: k + 1]), total)
            return out
        got: dict[int, Any] = {}
        job: Job[int] = Job(
            start=lambda dev, k, job_id, _tick: run(dev, k, job_id),
            collect=collect,
            size=lambda k: self.shard_sizes[k],
            name=lambda k: f"{what}, shard {k + 1} of {len(self.shards)}",
            op=lambda k: "run",
            home=lambda k: str(self.shards[k]),
        )
        self.fleet.run(
            range(len(self.shards)),
            job,
            lambda k, answer, _board, _job_id: got.__setitem__(k, answer),
            total,
            tick,
        )
        return [got[k] for k in range(len(self.shards))]

    def subset(self, indices: Sequence[int], work_dir: Path) -> Scorer:
        """A scorer over ``indices`` of these images: the fp32 outputs are sliced (not run
        again), the shards written anew."""
        sub = copy.copy(self)
        idx = list(indices)
        sub.source = self.source.subset(idx)
        sub.work_dir = work_dir
        sub.bytes_written = 0
        sub.shards = sub._write_shards(sub.source, work_dir / "shards")  # sets its shard_sizes
        sub.n_samples = len(idx)
        sub.ref = None if self.ref is None else self.ref[idx]
        sub.ref_outputs = [self.ref_outputs[i] for i in idx] if self.ref_outputs else []
        sub.fp32_secs = [self.fp32_secs[i] for i in idx]
        sub.labels = None if self.labels is None else self.labels[idx]
        sub.metric_labels = (
            None if self.metric_labels is None else [self.metric_labels[i] for i in idx]
        )
        sub.accuracy_fp32 = (
            float(np.mean(np.argmax(sub.ref, 1) == sub.labels))
            if sub.labels is not None and sub.ref is not None
            else None
        )
        sub.evaluations = 0
        sub.incremental_evaluations = sub.layers_recomputed = sub.layers_whole = 0
        sub.device_seconds = 0.0
        sub.disagreed = self.disagreed[idx].copy()
        sub.harm = self.harm[idx].copy()
        sub.track_harm = False
        sub.figures = {}
        return sub

    def latencies(self, param: Path, bin: Path) -> tuple[list[float], list[float]]:
        """Per-image seconds of the fp32 model and of ``param``/``bin`` over every image,
        measured the same way, alternated shard by shard."""
        models = ((self.fp32.param_path, self.fp32.bin_path), (param, bin))

        def both(device: Device, k: int, job_id: str | None) -> tuple[list[float], list[float]]:
            secs = []
            for i, (p, b) in enumerate(models):
                work = capture.Workload(
                    p, b, self.specs, [self.shards[k]], [self.output], self.runtime, self.threads
                )
                jid = None if job_id is None else f"{job_id}-{i}"
                secs.append(capture.run_shard_timed(device, work, job_id=jid)[1])
            return secs[0], secs[1]

        fp32: list[float] = []
        int8: list[float] = []
        for a, b in self._spread(
            "latency", both, lambda dev, k, job_id: None, lambda done, total: None
        ):
            fp32.extend(a)
            int8.extend(b)
        return fp32, int8

    def _works(self, param: Path, bin: Path) -> list[capture.Workload]:
        """Per shard, the run of ``param``/``bin`` capturing the scored outputs."""
        return [
            capture.Workload(
                param, bin, self.specs, [shard], self.blobs, self.runtime, self.threads
            )
            for shard in self.shards
        ]

    def _run(
        self, param: Path, bin: Path, what: str
    ) -> tuple[np.ndarray | None, list[Outputs], list[float]]:
        """The first output's rows (without a metric), every output per sample (with one), and
        each sample's seconds."""
        t0 = time.perf_counter()
        tick = self.progress(what, self.n_samples)
        works = self._works(param, bin)
        answers: list[ShardRun] = self._spread(
            what,
            lambda dev, k, job_id: capture.run_shard_timed(dev, works[k], job_id=job_id),
            lambda dev, k, job_id: capture.collect_shard_timed(dev, job_id, works[k]),
            tick,
        )
        self.device_seconds += time.perf_counter() - t0
        return self._gathered(param, answers)

    def _gathered(
        self, param: Path, answers: Sequence[ShardRun]
    ) -> tuple[np.ndarray | None, list[Outputs], list[float]]:
        """:meth:`_run`'s answer from the shards' answers in shard order."""
        rows: list[np.ndarray] = []
        per_sample: list[Outputs] = []
        secs: list[float] = []
        for outs, lat in answers:
            if self.metric is None:
                rows.extend(o[self.output].ravel() for o in outs)
            else:
                per_sample.extend({b: o[b] for b in self.blobs} for o in outs)
            secs.extend(lat)
        if self.metric is not None:
            return None, per_sample, secs
        sizes = {r.size for r in rows}
        if len(sizes) != 1:
            raise ModelFormatError(
                f"{param}: output {self.output} changes size between images ({sorted(sizes)})"
            )
        return np.stack(rows), [], secs

    def write_variant(
        self, table: CalibrationTable | None, keep_fp32: Sequence[str]
    ) -> tuple[Path, Path]:
        """The int8 model of ``table`` with ``keep_fp32`` left in float, as files (named by
        content, so an identical variant is written and pushed once)."""
        return self._write(self._convert(Variant(table, tuple(keep_fp32))))

    def _convert(self, v: Variant) -> QuantizedModel:
        return quantize_layers(
            self.fp32.param, self.fp32.weights, v.table, keep_fp32=sorted(v.keep_fp32)
        )

    def _write_patch(
        self, base: QuantizedModel, q: QuantizedModel, feed: Sequence[str]
    ) -> capture.FedVariant:
        """Variant ``q`` as its ``.param`` and the pieces of its ``.bin`` that are not
        ``base``'s (``delta.bin_patch``), as files named by content."""
        data, pieces = bin_patch(base, q)
        return capture.FedVariant(
            self._stored(".param", q.param_text.encode()),
            feed,
            patch=self._stored(".patch", data),
            pieces=pieces,
            sha256=hashlib.sha256(q.bin_bytes).hexdigest(),
        )

    def _write(self, q: QuantizedModel) -> tuple[Path, Path]:
        return self._stored(".param", q.param_text.encode()), self._stored(".bin", q.bin_bytes)

    def _stored(self, suffix: str, content: bytes) -> Path:
        """``content`` as a file of the variants folder named by its digest: identical files
        are written (and pushed) once."""
        d = self.work_dir / "variants"
        d.mkdir(exist_ok=True)
        path = d / f"{hashlib.sha256(content).hexdigest()[:16]}{suffix}"
        if not path.exists():
            path.write_bytes(content)
            self.bytes_written += len(content)
        return path

    def score_files(self, param: Path, bin: Path, what: str = "int8 variant") -> Score:
        return self._judged(param, *self._run(param, bin, what))

    def _judged(
        self, param: Path, got: np.ndarray | None, outs: list[Outputs], secs: list[float]
    ) -> Score:
        """The score of ``param``'s outputs (:meth:`_gathered`)."""
        self.evaluations += 1
        self.last_secs = secs
        if self.metric is not None:
            return self._score_metric(param, outs, secs)
        assert got is not None and self.ref is not None
        self.last_outputs = got
        if got.shape == self.ref.shape:
            self.disagreed |= np.argmax(got, 1) != np.argmax(self.ref, 1)
        if got.shape != self.ref.shape:
            raise ModelFormatError(
                f"{param}: output {self.output} has {got.shape[1]} values, the fp32 model's "
                f"{self.ref.shape[1]}: the int8 model does not match the fp32 model"
            )
        return score_outputs(self.ref, got, self.labels, self.accuracy_fp32, median_ms(secs))

    def _score_metric(self, param: Path, outs: list[Outputs], secs: list[float]) -> Score:
        assert self.metric is not None
        for i, (a, b) in enumerate(zip(self.ref_outputs, outs, strict=True)):
            x, y = a[self.output], b[self.output]
            if x.shape != y.shape:
                raise ModelFormatError(
                    f"{param}: output {self.output} of sample {i} is {y.shape}, the fp32 "
                    f"model's {x.shape}: the int8 model does not match the fp32 model"
                )
            self.disagreed[i] |= int(np.argmax(x)) != int(np.argmax(y))
        score, figs = score_metric(
            self.metric,
            self.ref_outputs,
            outs,
            self.metric_labels,
            median_ms(secs),
        )
        if self.track_harm and not isinstance(self.metric, Top1):
            self.harm = np.maximum(
                self.harm,
                per_sample_harm(self.metric, self.ref_outputs, outs, self.metric_labels),
            )
        self.figures[id(score)] = (score, figs)
        return score

    def score(
        self,
        table: CalibrationTable | None,
        keep_fp32: Sequence[str] = (),
        what: str = "int8 variant",
    ) -> Score:
        param, binf = self.write_variant(table, keep_fp32)
        try:
            return self.score_files(param, binf, what=what)
        finally:  # scored: neither the devices' copies nor the host's is needed again
            self._forget([param, binf])

    def _forget(self, files: Sequence[Path]) -> None:
        """Remove ``files`` here and their copies on the devices -- but not the copy of a file
        with the fp32 model's bytes (the device keeps one copy of equal files: a variant with
        every layer in float is the fp32 model's ``.bin``)."""
        kept = [self.fp32.param_path, self.fp32.bin_path]
        gone = [f for f in files if not any(_same_bytes(f, k) for k in kept)]
        for device in self.fleet.alive if self.fleet is not None else self.devices:
            device.discard(gone)
        for f in files:
            f.unlink(missing_ok=True)

    def score_many(
        self,
        variants: Sequence[Variant],
        base: Variant,
        stop: Callable[[], bool] | None = None,
    ) -> list[Score]:
        """The :meth:`score` of each of ``variants``, computing on the device only what each
        changes against ``base`` (:mod:`edgecal.int8.delta`): per image the base runs once,
        and each variant only its changed layers and what follows them, from the base's
        blobs.  The outputs are those of the variant's whole forward; a variant's latency is
        that of its whole forward on the first :data:`TIMED_SAMPLES` images of each shard.
        A variant whose layers are not the base's (another structure) is scored whole; with
        :attr:`incremental` False, every one is.

        The variants run :data:`BATCH` at a time (one job per shard each); the next batch is
        converted here while the device runs one.  ``stop()`` (a time budget) is asked before
        each batch: the scores of the variants scored before it said so, in order."""
        if not self.incremental:
            return score_each(self.score, variants, stop)
        qb = self._convert(base)
        base_files = self._write(qb)
        written: list[Path] = []  # the chunk's variants' files
        scores: list[Score] = []

        def convert(v: Variant) -> tuple[QuantizedModel, Delta | None]:
            q = self._convert(v)  # pure: runs beside the device's work
            return q, delta(qb, q, self.blobs)

        chunks = [variants[at : at + BATCH] for at in range(0, len(variants), BATCH)]
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="variants") as pool:
            ahead = [pool.submit(convert, v) for v in chunks[0]] if chunks else []
            try:
                for k, chunk in enumerate(chunks):
                    if stop is not None and stop():
                        break
                    ready = [fut.result() for fut in ahead]
                    ahead = (
                        [pool.submit(convert, v) for v in chunks[k + 1]]
                        if k + 1 < len(chunks)
                        else []
                    )
                    planned: list[tuple[int, capture.FedVariant, str]] = []
                    got: dict[int, Score] = {}
                    for i, (v, (q, d)) in enumerate(zip(chunk, ready, strict=True)):
                        if d is None:
                            got[i] = self.score(v.table, v.keep_fp32, what=v.what)
                            continue
                        fed = self._write_patch(qb, q, d.feed)
                        written.extend(x for x in (fed.param, fed.patch) if x is not None)
                        planned.append((i, fed, v.what))
                        self.layers_recomputed += len(d.recomputed)
                        self.layers_whole += len(q.param.layers)
                    for batch in _batches(planned, lambda p: p[1].size):
                        what = batch[0][2] + (
                            f" and {len(batch) - 1} more" if len(batch) > 1 else ""
                        )
                        runs = self._run_variants(*base_files, [f for _, f, _ in batch], what)
                        for (i, f, _), answers in zip(batch, runs, strict=True):
                            got[i] = self._judged(f.param, *self._gathered(f.param, answers))
                            self.incremental_evaluations += 1
                    scores.extend(got[i] for i in range(len(chunk)))
                    self._forget(sorted(set(written) - set(base_files)))  # scored: not needed
                    written.clear()
            finally:
                for fut in ahead:
                    fut.cancel()
                self._forget(sorted({*written, *base_files}))
        return scores

    def _run_variants(
        self, param: Path, bin: Path, variants: Sequence[capture.FedVariant], what: str
    ) -> list[list[ShardRun]]:
        """Per variant, its answers of every shard (in shard order), ``param``/``bin`` the
        base."""
        t0 = time.perf_counter()
        tick = self.progress(what, self.n_samples)
        works = self._works(param, bin)
        per_shard: list[list[ShardRun]] = self._spread(
            what,
            lambda dev, k, job_id: capture.run_shard_variants(
                dev, works[k], variants, TIMED_SAMPLES, job_id=job_id
            ),
            lambda dev, k, job_id: None,  # an interrupted job is run again
            tick,
        )
        self.device_seconds += time.perf_counter() - t0
        return [[shard[j] for shard in per_shard] for j in range(len(variants))]


def _batches(items: Sequence[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    """``items`` in order, in batches of at most :data:`BATCH` items and :data:`BATCH_BYTES`
    of ``size`` (an item larger than that alone)."""
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and (len(batch) == BATCH or total + n > BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


class RankingScorer:
    """Scores on a subset of a :class:`Scorer`'s images, chosen at the first use; the whole
    set when it is small.  Top-1 (no metric, or ``top1``): ``ranking_subset``, where a variant
    scored so far disagreed with fp32 on top-1, plus a class-stratified sample; another metric:
    ``metric_ranking_subset``, the images it lost most on (``Scorer.harm``), then a seeded
    random sample."""

    def __init__(self, full: Scorer, work_dir: Path, size: int) -> None:
        self.full, self.work_dir, self.size = full, work_dir, size
        full.track_harm = True  # until the subset is chosen
        self.sub: Scorer | None = None
        self.indices: list[int] = []

    def scorer(self) -> Scorer:
        if self.sub is None:
            full = self.full
            if full.metric is None or isinstance(full.metric, Top1):
                self.indices = ranking_subset(full.classes, full.disagreed, size=self.size)
            else:
                self.indices = metric_ranking_subset(full.harm, size=self.size)
            full.track_harm = False
            self.sub = full.subset(self.indices, self.work_dir)
        return self.sub

    def score(
        self,
        table: CalibrationTable | None,
        keep_fp32: Sequence[str] = (),
        what: str = "int8 variant",
    ) -> Score:
        return self.scorer().score(table, keep_fp32, what=what + " (ranking images)")

    def score_many(
        self,
        variants: Sequence[Variant],
        base: Variant,
        stop: Callable[[], bool] | None = None,
    ) -> list[Score]:
        return self.scorer().score_many(
            [replace(v, what=v.what + " (ranking images)") for v in variants], base, stop
        )
