"""Typed host API over the agent's capture ops: what the calibration pipeline calls.

Every function pushes what the job needs (content-addressed, so repeated pushes are free), runs
one job per call (``run_outputs``: one per shard) and returns numpy values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.calib.histogram import NUM_BINS
from edgecal.device.base import DEFAULT_JOB_TIMEOUT_S, Device, JobResult, Progress
from edgecal.errors import ProtocolError
from edgecal.inputs.model import Model
from edgecal.inputs.spec import InputSpec
from edgecal_agent.messages import EQ_RESULT, EQ_SIMILARITY, InputDesc, ProtocolViolation
from edgecal_agent.npzio import load_npz, npz_bytes
from edgecal_agent.shards import write_shard


@dataclass(frozen=True)
class EqLayerResult:
    """``sim[j, k]``: summed cosine of candidate ``k`` for scale row ``j`` (last row: bottom);
    ``sim_start``/``sim_end``: the summed cosine with the starting and with the chosen scales;
    ``search``: how the agent searched ("fast": per-candidate terms, "literal": one probe per
    candidate and row; both give the same sums).  ``sim_samples[j, k]``: the samples
    ``sim[j, k]`` covers, ``n_samples`` for a complete sum, fewer for a candidate the agent
    pruned (its partial sum; agent result form 2); ``None``: every sum complete."""

    sim: np.ndarray
    weight_scales: np.ndarray
    bottom_scale: np.float32
    sim_start: float = float("nan")
    sim_end: float = float("nan")
    search: str = ""
    sim_samples: np.ndarray | None = None
    n_samples: int = 0


@dataclass(frozen=True)
class Workload:
    """What a capture job runs: the model's files, its inputs, the shards to run it over, the
    blobs to capture, and the runtime with its threads."""

    param: Path
    bin: Path
    specs: Sequence[InputSpec]
    shards: Sequence[Path] = ()
    blobs: Sequence[str] = ()
    runtime: str = "calibration"
    threads: int = 1

    @classmethod
    def of(
        cls,
        model: Model,
        specs: Sequence[InputSpec],
        blobs: Sequence[str],
        runtime: str,
        threads: int,
    ) -> Workload:
        """Capturing ``blobs`` of ``model`` (no shards yet: see :meth:`on`)."""
        return cls(model.param_path, model.bin_path, specs, (), blobs, runtime, threads)

    def on(self, *shards: Path) -> Workload:
        """The same work over ``shards`` instead."""
        return replace(self, shards=list(shards))


def _descs(specs: Sequence[InputSpec]) -> list[InputDesc]:
    return [InputDesc.from_dict(s.to_dict()) for s in specs]


def write_shards(
    samples: Iterable[tuple[np.ndarray, ...]],
    specs: Sequence[InputSpec],
    out_dir: Path,
    shard_size: int = 256,
) -> list[Path]:
    """Write samples (one array per input: uint8 ``(rows, cols, 3)`` BGR for image inputs,
    float32 for npy inputs) as ``.npz`` shards of ``shard_size`` samples.  Holds one shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [path for path, _ in iter_shards(samples, specs, out_dir, lambda k: shard_size)]


def iter_shards(
    samples: Iterable[tuple[np.ndarray, ...]],
    specs: Sequence[InputSpec],
    out_dir: Path,
    shard_size: Callable[[int], int],
) -> Iterator[tuple[Path, int]]:
    """Like :func:`write_shards`, yielding ``(path, n_samples)`` as soon as each shard is
    written; shard ``k`` holds ``shard_size(k)`` samples (the last one may hold fewer)."""
    descs = _descs(specs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = 0
    want = max(1, int(shard_size(0)))
    batch: list[tuple[np.ndarray, ...]] = []
    for sample in samples:
        batch.append(tuple(sample))
        if len(batch) == want:
            path = out_dir / f"shard_{k:05d}.npz"
            write_shard(path, batch, descs)
            yield path, len(batch)
            batch.clear()
            k += 1
            want = max(1, int(shard_size(k)))
    if batch:
        path = out_dir / f"shard_{k:05d}.npz"
        write_shard(path, batch, descs)
        yield path, len(batch)


def _model_params(device: Device, work: Workload) -> dict[str, Any]:
    param, bin_, *shards = device.push_many(
        [Path(work.param), Path(work.bin), *(Path(s) for s in work.shards)]
    )
    return {
        "model": {"param": param, "bin": bin_},
        "inputs": [s.to_dict() for s in work.specs],
        "shards": shards,
    }


def _run_params(device: Device, work: Workload) -> dict[str, Any]:
    """What every capture job of ``work`` is given: the model, inputs, shards, blobs, runtime."""
    params = _model_params(device, work)
    params.update(blobs=list(work.blobs), runtime=work.runtime, threads=work.threads)
    return params


@contextlib.contextmanager
def _artifact(device: Device, job: JobResult, key: str) -> Iterator[Any]:
    """The job's ``.npz`` artifact, open; a damaged one is a ``ProtocolError``."""
    if key not in job.artifacts:
        raise ProtocolError(f"{device.name}: the agent's reply lacks the artifact {key}")
    try:
        with load_npz(job.artifacts[key]) as npz:
            yield npz
    except ProtocolViolation as e:
        raise ProtocolError(
            f"{device.name}: artifact {key} of job {job.response.get('job_id')} is damaged: {e}",
            hint="re-run; if it persists, check the board's disk",
        ) from None


def _blob_names(device: Device, npz: Any, blobs: Sequence[str]) -> list[str]:
    names = [str(n) for n in npz["names"]]
    if names != list(blobs):
        raise ProtocolError(
            f"{device.name}: the agent answered for blobs {names}, asked for {list(blobs)}"
        )
    return names


def absmax_request(device: Device, work: Workload) -> dict[str, Any]:
    """Push what pass 1 needs; the ``absmax`` job's parameters."""
    return _run_params(device, work)


def parse_absmax(
    device: Device, job: JobResult, blobs: Sequence[str]
) -> dict[str, tuple[np.float32, int]]:
    with _artifact(device, job, "absmax.npz") as npz:
        names = _blob_names(device, npz, blobs)
        absmax = np.asarray(npz["absmax"], dtype=np.float32)
        per_sample = np.asarray(npz["elements_per_sample"], dtype=np.int64)
    return {n: (absmax[i], int(per_sample[i])) for i, n in enumerate(names)}


def histogram_request(
    device: Device, work: Workload, absmax: Mapping[str, float]
) -> dict[str, Any]:
    """Push what pass 2 needs; the ``histogram`` job's parameters."""
    params = _run_params(device, work)
    params["absmax"] = {b: float(np.float32(absmax[b])) for b in work.blobs}
    return params


def parse_histograms(device: Device, job: JobResult, blobs: Sequence[str]) -> dict[str, np.ndarray]:
    with _artifact(device, job, "histograms.npz") as npz:
        names = _blob_names(device, npz, blobs)
        counts = np.asarray(npz["counts"])
    if counts.dtype != np.uint64 or counts.shape != (len(names), NUM_BINS):
        raise ProtocolError(
            f"{device.name}: histogram counts are {counts.dtype} "
            f"{counts.shape}, expected uint64 ({len(names)}, {NUM_BINS})"
        )
    return {n: counts[i].copy() for i, n in enumerate(names)}


def _outputs(device: Device, job: JobResult, blobs: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """A ``run`` job's answer: per sample ``blob -> float32 array``."""
    with _artifact(device, job, "outputs_0.npz") as npz:
        _blob_names(device, npz, blobs)
        return [
            {b: np.asarray(npz[f"s{i:06d}_b{k}"], dtype=np.float32) for k, b in enumerate(blobs)}
            for i in range(int(npz["n_samples"]))
        ]


def run_outputs(
    device: Device,
    work: Workload,
    *,
    progress: Progress | None = None,
    timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
) -> Iterator[dict[str, np.ndarray]]:
    """Per sample, ``blob -> float32 array`` (ncnn's ``(c, h, w)`` layout), one job per shard."""
    base = _model_params(device, work.on())
    total = 0
    for shard in work.shards:
        with load_npz(shard) as npz:
            total += int(npz["n_samples"])
    done_before = 0
    for shard in work.shards:
        params = dict(
            base,
            shards=[device.push(Path(shard))],
            blobs=list(work.blobs),
            runtime=work.runtime,
            threads=work.threads,
        )

        def shard_progress(done: int, total: int, offset: int = done_before) -> None:
            if progress is not None:
                progress(offset + done, total)

        job = device.run_job(
            "run",
            params,
            timeout_s=timeout_s,
            progress=shard_progress if progress is not None else None,
        )
        outs = _outputs(device, job, work.blobs)
        yield from outs
        done_before += len(outs)


def eq_search_layer(
    device: Device,
    work: Workload,
    bottom: str,
    top: str,
    probe_param: str,
    probe_prefix: bytes,
    candidates: np.ndarray,
    weight_scales: Sequence[float] | np.ndarray,
    bottom_scale: float | np.float32,
    max_samples: int = 50,
    *,
    progress: Progress | None = None,
    timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
    job_id: str | None = None,
) -> EqLayerResult:
    """EQ's greedy scale search for one layer, run on the device in one round trip.

    ``probe_param``/``probe_prefix``: a one-layer net (``Input`` + the layer with ``8=1``/``2``)
    and its ``.bin`` up to the weight scales; the agent appends the candidate weight scales and
    the bottom scale as ``<f4`` for every trial.  ``candidates``: float32
    ``(len(weight_scales) + 1, steps)``, the last row for the bottom scale.  ``work``: the
    model and the shards (its blobs, runtime and threads do not apply).  ``job_id``: the
    caller's id for the job (see :meth:`Device.collect_job` and :func:`collect_eq_layer`).
    """
    ws = np.asarray(weight_scales, dtype=np.float32).reshape(-1)
    cand = np.asarray(candidates, dtype=np.float32)
    if cand.ndim != 2 or cand.shape[0] != ws.size + 1:
        raise ValueError(f"candidates must have shape ({ws.size + 1}, steps), got {cand.shape}")
    params = _model_params(device, work)
    params.update(bottom=bottom, top=top, max_samples=max_samples)
    files = {
        "probe.param": probe_param.encode("utf-8"),
        "probe_prefix.bin": bytes(probe_prefix),
        "candidates.npz": npz_bytes(
            {
                "candidates": cand,
                "weight_scales": ws,
                "bottom_scale": np.array([bottom_scale], np.float32),
            }
        ),
    }
    job = device.run_job(
        "eq_layer", params, timeout_s=timeout_s, progress=progress, files=files, job_id=job_id
    )
    return parse_eq_layer(device, job, cand.shape, ws.shape)


def collect_eq_layer(
    device: Device, job_id: str, candidates_shape: tuple[int, ...]
) -> EqLayerResult | None:
    """The answer of an interrupted :func:`eq_search_layer` job ``job_id`` if the agent wrote
    it (``None`` when not)."""
    job = device.collect_job(job_id)
    if job is None:
        return None
    return parse_eq_layer(device, job, candidates_shape, (candidates_shape[0] - 1,))


def parse_eq_layer(
    device: Device,
    job: JobResult,
    candidates_shape: tuple[int, ...],
    weight_scales_shape: tuple[int, ...],
) -> EqLayerResult:
    """An ``eq_layer`` job's answer, checked against the shapes asked for."""
    if job.result.get("similarity") != EQ_SIMILARITY:
        raise ProtocolError(
            f"{device.name}: eq_layer answered similarity sums of kind "
            f"{job.result.get('similarity')!r}, this edgecal expects {EQ_SIMILARITY!r}",
            hint="let edgecal re-deploy the agent to the device",
        )
    form = job.result.get("eq_result", 1)
    if form not in (1, EQ_RESULT):
        raise ProtocolError(
            f"{device.name}: eq_layer answered in form {form!r}, this edgecal reads 1 and "
            f"{EQ_RESULT}",
            hint="let edgecal re-deploy the agent to the device",
        )
    with _artifact(device, job, "eq.npz") as npz:
        sim = np.asarray(npz["sim"], dtype=np.float64)
        counts = n_samples = None
        if form == EQ_RESULT:  # pruned candidates: the samples each sum covers
            counts = np.asarray(npz["sim_samples"], dtype=np.int64)
            n_samples = int(np.asarray(npz["n_samples"]))
        new_ws = np.asarray(npz["weight_scales"], dtype=np.float32)
        new_bottom = np.float32(np.asarray(npz["bottom_scale"]).reshape(-1)[0])
        sim_start = float(np.asarray(npz["sim_start"], dtype=np.float64))
        sim_end = float(np.asarray(npz["sim_end"], dtype=np.float64))
    if (
        sim.shape != tuple(candidates_shape)
        or new_ws.shape != tuple(weight_scales_shape)
        or (counts is not None and counts.shape != sim.shape)
    ):
        raise ProtocolError(
            f"{device.name}: eq_layer answered sim {sim.shape} and "
            f"{new_ws.shape} weight scales for {tuple(candidates_shape)} candidates"
        )
    return EqLayerResult(
        sim=sim,
        weight_scales=new_ws,
        bottom_scale=new_bottom,
        sim_start=sim_start,
        sim_end=sim_end,
        search=str(job.result.get("search", "")),
        sim_samples=counts,
        n_samples=n_samples or 0,
    )


def run_shard_timed(
    device: Device,
    work: Workload,
    *,
    timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
    job_id: str | None = None,
) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """One ``run`` job of ``work`` (one shard): per sample ``blob -> float32 array``, and per
    sample the seconds the agent's ``extract`` of the first blob alone took (fresh extractor,
    the runtime's threads).  Needs agent >= 0.2.0 (the ``timed`` run parameter).  ``job_id``:
    the caller's id for the job (see :func:`collect_shard_timed`)."""
    params = _run_params(device, work)
    params["timed"] = True
    return _timed_outputs(
        device, device.run_job("run", params, timeout_s=timeout_s, job_id=job_id), work
    )


@dataclass(frozen=True)
class Comparison:
    """A ``run`` compared on the device with a reference model (agent >= 0.3.0): its files
    and, per blob, the scale of the run's raw int8 codes (``None``: float values).  The agent
    answers :data:`~edgecal_agent.stats.PAIR_SUMS` per sample and blob, never the blobs."""

    param: Path
    bin: Path
    pairs: Sequence[tuple[str, float | None]]


def run_shard_compared(
    device: Device, work: Workload, compare: Comparison, *, timeout_s: float = DEFAULT_JOB_TIMEOUT_S
) -> tuple[list[dict[str, np.ndarray]], list[float], np.ndarray]:
    """:func:`run_shard_timed` of ``work`` (one shard), and per sample and pair of
    ``compare`` the four sums ``(samples, pairs, 4)`` float64 against the reference."""
    params = _run_params(device, work)
    param, bin_ = device.push_many([Path(compare.param), Path(compare.bin)])
    params["timed"] = True
    params["compare"] = {
        "model": {"param": param, "bin": bin_},
        "pairs": [[b, None if s is None else float(s)] for b, s in compare.pairs],
    }
    job = device.run_job("run", params, timeout_s=timeout_s)
    outs, secs = _timed_outputs(device, job, work)
    blobs = [b for b, _ in compare.pairs]
    with _artifact(device, job, "layers_0.npz") as npz:
        _blob_names(device, npz, blobs)
        sums = np.asarray(npz["sums"], dtype=np.float64)
    if sums.shape != (len(outs), len(blobs), 4):
        raise ProtocolError(
            f"{device.name}: the agent's per-blob sums have shape {sums.shape}, expected "
            f"{(len(outs), len(blobs), 4)}"
        )
    return outs, secs, sums


@dataclass(frozen=True)
class FedVariant:
    """A variant of a ``run``'s model (agent >= 0.4.0): its ``.param``, the blobs of the run's
    model it is fed (:func:`edgecal.int8.delta.delta`'s ``feed``), and its ``.bin``: the
    whole file ``bin``, or made on the device from ``pieces`` (``(source, offset, length)``:
    :func:`edgecal.int8.delta.bin_patch`) of the run's model's ``.bin`` and of the file
    ``patch``, whose digest is ``sha256`` -- then only ``patch`` is pushed."""

    param: Path
    feed: Sequence[str]
    bin: Path | None = None
    patch: Path | None = None
    pieces: Sequence[tuple[int, int, int]] = ()
    sha256: str = ""

    @property
    def size(self) -> int:
        """Bytes of its whole ``.bin`` (what the device loads)."""
        if self.bin is not None:
            return self.bin.stat().st_size
        return sum(length for _, _, length in self.pieces)

    def request(self, device: Device) -> dict[str, Any]:
        """Its entry of the ``variants`` request, its files pushed to ``device``."""
        if self.patch is None:
            assert self.bin is not None
            param, bin_ = device.push_many([self.param, self.bin])
            return {"model": {"param": param, "bin": bin_}, "feed": list(self.feed)}
        param, data = device.push_many([self.param, self.patch])
        return {
            "param": param,
            "patch": {
                "data": data,
                "segments": [list(x) for x in self.pieces],
                "sha256": self.sha256,
            },
            "feed": list(self.feed),
        }


def run_shard_variants(
    device: Device,
    work: Workload,
    variants: Sequence[FedVariant],
    timed_samples: int,
    *,
    timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
    job_id: str | None = None,
) -> list[tuple[list[dict[str, np.ndarray]], list[float]]]:
    """One ``run`` job of ``work`` (one shard; its model is the *base*) with ``variants``: per
    variant, per sample ``blob -> float32 array`` of the variant, computed on the device from
    the base's ``feed`` blobs; and the seconds of a whole forward of the variant on each of
    the shard's first ``timed_samples`` samples."""
    params = _run_params(device, work)
    params["variants"] = {
        "models": [v.request(device) for v in variants],
        "timed_samples": timed_samples,
    }
    job = device.run_job("run", params, timeout_s=timeout_s, job_id=job_id)
    with _artifact(device, job, "outputs_0.npz") as npz:
        _blob_names(device, npz, work.blobs)
        n = int(npz["n_samples"])
        got = int(npz["n_variants"]) if "n_variants" in npz else None
        if got != len(variants):
            raise ProtocolError(
                f"{device.name}: the agent answered {got} variants for "
                f"{len(variants)}; it predates agent 0.4.0",
                hint="let edgecal re-deploy the agent to the device",
            )
        outs = [
            [
                {
                    b: np.asarray(npz[f"v{j}_s{i:06d}_b{k}"], dtype=np.float32)
                    for k, b in enumerate(work.blobs)
                }
                for i in range(n)
            ]
            for j in range(len(variants))
        ]
    latency = job.result.get("latency_s", [])
    want = min(timed_samples, n)
    if (
        not isinstance(latency, list)
        or len(latency) != len(variants)
        or any(not isinstance(x, list) or len(x) != want for x in latency)
    ):
        raise ProtocolError(
            f"{device.name}: the agent did not time {want} samples of each of "
            f"{len(variants)} variants"
        )
    return [(o, [float(x) for x in secs]) for o, secs in zip(outs, latency, strict=True)]


def collect_shard_timed(
    device: Device, job_id: str, work: Workload
) -> tuple[list[dict[str, np.ndarray]], list[float]] | None:
    """The answer of an interrupted :func:`run_shard_timed` job ``job_id`` if the agent wrote
    it (``None`` when not)."""
    job = device.collect_job(job_id)
    return None if job is None else _timed_outputs(device, job, work)


def _timed_outputs(
    device: Device, job: JobResult, work: Workload
) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    latency = job.result.get("latency_s")
    outs = _outputs(device, job, work.blobs)
    n = len(outs)
    if not isinstance(latency, list) or len(latency) != n:
        raise ProtocolError(
            f"{device.name}: the agent did not time the run (no latency_s for "
            f"{n} samples); it predates agent 0.2.0",
            hint="let edgecal re-deploy the agent to the device",
        )
    return outs, [float(x) for x in latency]
