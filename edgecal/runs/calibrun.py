"""A calibration's run directory: the manifest of its images and shards, and each shard's
result as it arrives, so an interrupted run resumes without redoing finished shards.

Files (next to ``run.json``, see :mod:`edgecal.runs.rundir`):

* ``manifest.json`` (schema :data:`MANIFEST_SCHEMA`): the model (paths and sha256), the input
  specs, every sample's files and their sha256, the shard plan (``start``, ``count`` and a digest
  of the shard's images), and the options the result depends on (method, runtime, threads).
* ``parts/absmax/NNNNN.npz`` and ``parts/histogram/NNNNN.npz`` (schema :data:`PART_SCHEMA`): one
  shard's pass-1 or pass-2 result, written atomically once the device's answer is in; named by
  shard, so a shard can never be counted twice.  Each part carries the run id (the sha256 of
  the manifest: model hashes, images, preprocessing, method and options), and a part of
  another run, or any other ``.npz`` in ``parts/``, is an error naming the file.
* ``run.lock``: held (``flock``) by the one process working in the run (:mod:`edgecal.runs.lock`).
* ``parts/ranges.npz``: the abs-max ranges of pass 2, fixed once pass 1 is complete.

Before the table is written, :func:`check_accounting` proves that the parts of each pass cover
every shard of the plan exactly once with the images the manifest names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.calib.histogram import NUM_BINS
from edgecal.errors import CalibrationError, InputFileError
from edgecal.files.atomic import write_bytes_atomic
from edgecal.files.userfile import not_a_file
from edgecal.inputs.model import Model
from edgecal.inputs.samples import SampleSource
from edgecal.inputs.spec import InputSpec
from edgecal.runs.lock import LOCK, RunLock
from edgecal.runs.rundir import RunDir, file_sha256

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
PART_SCHEMA = 2  # 2: the run id in every part
PART_NAME = re.compile(r"[0-9]{5}\.npz")
PARTS = "parts"
PASSES = ("absmax", "histogram")


def plan_shards(
    n: int, first: int = 32, largest: int = 256, workers: int = 1, tail: int | None = None
) -> list[tuple[int, int]]:
    """``(start, count)`` of each shard: ``first``, twice that, ... up to ``largest`` samples
    (the first shard is ready early; later shards keep the number of jobs small).  With several
    ``workers`` a shard is also at most the samples left / (2 x workers), not below ``tail``
    (default ``first // 4``): the shards shrink again towards the end, so the workers finish a
    pass together instead of all but one waiting for the last big shard (a job costs ~0.05 s
    besides its samples on an emulated board, so small last shards are cheap)."""
    tail = max(1, first // 4) if tail is None else max(1, tail)
    out: list[tuple[int, int]] = []
    start, k = 0, 0
    while start < n:
        count = min(largest, first << min(k, 16), n - start)
        if workers > 1:
            count = min(count, max(tail, -(-(n - start) // (2 * workers))))
        out.append((start, count))
        start += count
        k += 1
    return out


def shard_digest(hashes: Sequence[Sequence[str]], start: int, count: int) -> str:
    """One sha256 over the files of samples ``start .. start+count`` (every input)."""
    h = hashlib.sha256()
    for i in range(start, start + count):
        for per_input in hashes:
            h.update(bytes.fromhex(per_input[i]))
    return h.hexdigest()


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    count: int
    digest: str


@dataclass(frozen=True)
class Manifest:
    param: str
    bin: str
    param_sha256: str
    bin_sha256: str
    inputs: list[dict[str, Any]]
    samples: list[list[str]]  # [input][sample] paths
    sample_sha256: list[list[str]]
    shards: list[Shard]
    method: str
    runtime: str
    threads: int
    histograms: bool
    options: dict[str, Any]  # what resume needs to finish the job: outputs, flags, devices

    @property
    def n_samples(self) -> int:
        return len(self.samples[0]) if self.samples else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": MANIFEST_SCHEMA,
            "model": {
                "param": self.param,
                "bin": self.bin,
                "param_sha256": self.param_sha256,
                "bin_sha256": self.bin_sha256,
            },
            "inputs": [dict(x) for x in self.inputs],
            "samples": [
                {"paths": list(p), "sha256": list(h)}
                for p, h in zip(self.samples, self.sample_sha256, strict=True)
            ],
            "shards": [
                {"index": s.index, "start": s.start, "count": s.count, "digest": s.digest}
                for s in self.shards
            ],
            "method": self.method,
            "runtime": self.runtime,
            "threads": self.threads,
            "histograms": self.histograms,
            "options": dict(self.options),
        }

    @property
    def run_id(self) -> str:
        """What the run's results depend on, as one sha256 (every part carries it)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: Any, source: str) -> Manifest:
        def bad(why: str) -> InputFileError:
            return InputFileError(
                f"{source}: not a calibration manifest ({why})",
                hint="resume a run directory written by `edgecal calibrate --run-dir`",
            )

        if not isinstance(d, dict):
            raise bad("not a JSON object")
        if d.get("schema") != MANIFEST_SCHEMA:
            raise InputFileError(
                f"{source}: manifest schema {d.get('schema')!r}, this edgecal "
                f"reads schema {MANIFEST_SCHEMA}",
                hint="finish the run with the edgecal version that started it",
            )
        try:
            m = d["model"]
            samples = d["samples"]
            shards = [
                Shard(int(s["index"]), int(s["start"]), int(s["count"]), str(s["digest"]))
                for s in d["shards"]
            ]
            out = cls(
                param=str(m["param"]),
                bin=str(m["bin"]),
                param_sha256=str(m["param_sha256"]),
                bin_sha256=str(m["bin_sha256"]),
                inputs=[dict(x) for x in d["inputs"]],
                samples=[[str(p) for p in s["paths"]] for s in samples],
                sample_sha256=[[str(h) for h in s["sha256"]] for s in samples],
                shards=shards,
                method=str(d["method"]),
                runtime=str(d["runtime"]),
                threads=int(d["threads"]),
                histograms=bool(d["histograms"]),
                options=dict(d.get("options") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"{type(e).__name__}: {e}") from None
        n = out.n_samples
        if any(len(p) != n for p in out.samples) or any(len(h) != n for h in out.sample_sha256):
            raise bad("the sample lists differ in length")
        starts = [s.start for s in shards]
        ends = [s.start + s.count for s in shards]
        if (
            [s.index for s in shards] != list(range(len(shards)))
            or starts[:1] not in ([0], [])
            or starts[1:] != ends[:-1]
            or (ends[-1] if ends else 0) != n
            or any(s.count < 1 for s in shards)
        ):
            raise bad("the shard plan does not cover the samples once each")
        return out


def first_shard_size(n: int, workers: int) -> int:
    """Small enough that every worker gets several shards (a fleet shares the work, a lost
    board loses little), at most 32."""
    return max(1, min(32, n // max(1, 4 * workers)))


def build_manifest(
    model: Model,
    source: SampleSource,
    *,
    method: str,
    runtime: str,
    threads: int,
    histograms: bool,
    options: Mapping[str, Any],
    workers: int = 1,
) -> Manifest:
    """Hash every sample file and plan the shards (for ``workers`` devices)."""
    hashes = [[file_sha256(Path(p)) for p in paths] for paths in source.paths]
    plan = plan_shards(
        source.n_samples, first_shard_size(source.n_samples, workers), workers=workers
    )
    shards = [
        Shard(k, start, count, shard_digest(hashes, start, count))
        for k, (start, count) in enumerate(plan)
    ]
    return Manifest(  # absolute paths: `--resume` works from any folder
        param=os.path.abspath(model.param_path),
        bin=os.path.abspath(model.bin_path),
        param_sha256=model.param_sha256,
        bin_sha256=model.bin_sha256,
        inputs=[s.to_dict() for s in source.specs],
        samples=[[os.path.abspath(p) for p in paths] for paths in source.paths],
        sample_sha256=hashes,
        shards=shards,
        method=method,
        runtime=runtime,
        threads=threads,
        histograms=histograms,
        options=dict(options),
    )


def check_unchanged(manifest: Manifest, model: Model, source: str) -> None:
    """The model and every sample are still what the run started with."""
    if (model.param_sha256, model.bin_sha256) != (manifest.param_sha256, manifest.bin_sha256):
        raise CalibrationError(
            f"{source}: the model changed since the run started ({manifest.param}, {manifest.bin})",
            hint="start a new run (a new --run-dir) for the new model",
        )
    for paths, hashes in zip(manifest.samples, manifest.sample_sha256, strict=True):
        for p, h in zip(paths, hashes, strict=True):
            kind = not_a_file(p)  # never opened: hashing a FIFO would wait forever
            if kind is not None:
                raise CalibrationError(
                    f"{source}: sample {p} of the run is now {kind}, not a file",
                    hint="restore the file, or start a new run",
                )
            try:
                now = file_sha256(Path(p))
            except OSError as e:
                raise CalibrationError(
                    f"{source}: sample {p} of the run cannot be read ({e.strerror})",
                    hint="restore the file, or start a new run",
                ) from None
            if now != h:
                raise CalibrationError(
                    f"{source}: sample {p} changed since the run started",
                    hint="restore the file, or start a new run",
                )


def source_of(manifest: Manifest) -> SampleSource:
    specs = tuple(InputSpec.from_dict(d) for d in manifest.inputs)
    return SampleSource(specs, tuple(tuple(Path(p) for p in ps) for ps in manifest.samples))


# ----------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Part:
    """One shard's answer for one pass."""

    pass_name: str
    index: int
    count: int
    digest: str
    board: str
    job_id: str
    blobs: list[str]
    values: dict[str, Any]  # absmax: blob -> (float32, elements_per_sample); histogram: counts


def part_bytes(part: Part, run_id: str = "") -> bytes:
    buf = io.BytesIO()
    arrays: dict[str, Any] = {
        "schema": np.int64(PART_SCHEMA),
        "meta": np.array(
            json.dumps(
                {
                    "run": run_id,
                    "pass": part.pass_name,
                    "index": part.index,
                    "count": part.count,
                    "digest": part.digest,
                    "board": part.board,
                    "job_id": part.job_id,
                    "blobs": part.blobs,
                }
            )
        ),
    }
    if part.pass_name == "absmax":
        arrays["absmax"] = np.array([part.values[b][0] for b in part.blobs], np.float32)
        arrays["eps"] = np.array([part.values[b][1] for b in part.blobs], np.int64)
    else:
        arrays["counts"] = (
            np.stack([np.asarray(part.values[b], np.uint64) for b in part.blobs])
            if part.blobs
            else np.zeros((0, NUM_BINS), np.uint64)
        )
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_part(path: Path, run_id: str | None = None) -> Part:
    """One part file; with ``run_id``, only a part of that run (else an error naming it)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["schema"]) != PART_SCHEMA:
                raise InputFileError(
                    f"{path}: part schema {int(z['schema'])}, this edgecal reads {PART_SCHEMA}",
                    hint="delete it; `--resume` then runs that shard again",
                )
            meta = json.loads(str(z["meta"]))
            if run_id is not None and meta.get("run") != run_id:
                raise InputFileError(
                    f"{path}: a shard result of another run (its model, images, "
                    "preprocessing or options differ from this run's manifest)",
                    hint="delete it; `--resume` then runs that shard again",
                )
            blobs = [str(b) for b in meta["blobs"]]
            if meta["pass"] == "absmax":
                a, e = z["absmax"].astype(np.float32), z["eps"].astype(np.int64)
                values: dict[str, Any] = {b: (a[i], int(e[i])) for i, b in enumerate(blobs)}
            else:
                c = z["counts"].astype(np.uint64)
                values = {b: c[i].copy() for i, b in enumerate(blobs)}
            return Part(
                str(meta["pass"]),
                int(meta["index"]),
                int(meta["count"]),
                str(meta["digest"]),
                str(meta["board"]),
                str(meta["job_id"]),
                blobs,
                values,
            )
    except InputFileError:
        raise
    except Exception as e:  # a torn or foreign file: never half-trusted
        raise InputFileError(
            f"{path}: unreadable shard result ({type(e).__name__}: {e})",
            hint="delete it; `--resume` then runs that shard again",
        ) from None


class CalibRun:
    """The run directory of one calibration: manifest plus parts."""

    def __init__(self, run: RunDir, manifest: Manifest, lock: RunLock | None = None) -> None:
        self.run = run
        self.manifest = manifest
        self.run_id = manifest.run_id
        self._lock = lock
        # parts reach the disk before they count (a resumed run trusts them); a temporary run,
        # removed when it ends and never resumed, sets this False
        self.durable = True

    @classmethod
    def create(cls, path: Path, manifest: Manifest, argv: Sequence[str]) -> CalibRun:
        """Make the run directory (new, or an existing empty folder) and lock it for this
        process until :meth:`close` (or the process ends)."""
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise InputFileError(
                    f"--run-dir {path} is a file, not a folder", hint="give a new folder"
                ) from None
        except OSError as exc:
            raise InputFileError(
                f"{path}: cannot create the run directory ({exc.strerror})",
                hint="choose a writable --run-dir",
            ) from None
        lock = RunLock.acquire(path)
        try:
            if (path / MANIFEST).exists():
                raise CalibrationError(
                    f"{path} already holds a calibration run",
                    hint=f"continue it with `edgecal calibrate --resume {_q(path)}`, or choose "
                    "another --run-dir",
                )
            other = sorted(n for n in os.listdir(path) if n != LOCK)
            if other:
                raise InputFileError(
                    f"--run-dir {path} is not empty (it holds {other[0]}"
                    + (f" and {len(other) - 1} more" if len(other) > 1 else "")
                    + ")",
                    hint="give a new or empty folder",
                )
            run = RunDir.create(
                path,
                "calibrate",
                argv,
                {
                    "fp32_param": {"path": manifest.param, "sha256": manifest.param_sha256},
                    "fp32_bin": {"path": manifest.bin, "sha256": manifest.bin_sha256},
                    "images": {"count": manifest.n_samples},
                },
            )
            run.write_json(MANIFEST, manifest.to_dict())
        except BaseException:
            lock.release()
            raise
        return cls(run, manifest, lock)

    @classmethod
    def open(cls, path: Path, argv: Sequence[str]) -> CalibRun:
        """An existing run, locked for this process until :meth:`close`."""
        run = RunDir.open(path)
        if not run.has(MANIFEST):
            raise InputFileError(
                f"{path}: no {MANIFEST}: not a calibration run directory",
                hint="pass the --run-dir of an `edgecal calibrate` run",
            )
        lock = RunLock.acquire(path)
        try:
            manifest = Manifest.from_dict(run.read_json(MANIFEST), str(path / MANIFEST))
            RunDir.create(path, "calibrate", argv)  # records the resume command
        except BaseException:
            lock.release()
            raise
        return cls(run, manifest, lock)

    def close(self) -> None:
        """Let another process work in the run directory."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _path(self, pass_name: str, index: int) -> Path:
        return self.run.path / PARTS / pass_name / f"{index:05d}.npz"

    def has(self, pass_name: str, index: int) -> bool:
        return self._path(pass_name, index).is_file()

    def write(self, part: Part) -> None:
        path = self._path(part.pass_name, part.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, part_bytes(part, self.run_id), durable=self.durable)

    def _files(self, pass_name: str) -> dict[int, Path]:
        """The part files of a pass by shard; anything else ending in ``.npz`` there, or a
        shard the plan does not have, is an error naming the file (never silently used)."""
        folder = self.run.path / PARTS / pass_name
        if not folder.is_dir():
            return {}
        out: dict[int, Path] = {}
        n = len(self.manifest.shards)
        for p in sorted(folder.glob("*.npz")):
            if not PART_NAME.fullmatch(p.name) or int(p.stem) >= n:
                raise CalibrationError(
                    f"{p}: not a shard result of this run (its {pass_name} results are "
                    f"00000.npz .. {max(n - 1, 0):05d}.npz)",
                    hint=f"move the file out of {folder}, then resume with "
                    f"`edgecal calibrate --resume {_q(self.run.path)}`",
                )
            out[int(p.stem)] = p
        return out

    def parts(self, pass_name: str) -> list[Part]:
        out = []
        for index, path in self._files(pass_name).items():
            part = read_part(path, self.run_id)
            if (part.pass_name, part.index) != (pass_name, index):
                raise CalibrationError(
                    f"{path}: holds the {part.pass_name} result of shard {part.index}, not "
                    f"the {pass_name} result of shard {index}",
                    hint="delete it; `--resume` then runs that shard again",
                )
            out.append(part)
        return out

    def done(self, pass_name: str) -> set[int]:
        return set(self._files(pass_name))

    def write_ranges(self, absmax: Mapping[str, tuple[np.float32, int]]) -> None:
        blobs = list(absmax)
        buf = io.BytesIO()
        np.savez(
            buf,
            blobs=np.array(blobs, dtype=np.str_),
            absmax=np.array([absmax[b][0] for b in blobs], np.float32),
            eps=np.array([absmax[b][1] for b in blobs], np.int64),
        )
        write_bytes_atomic(
            self.run.path / PARTS / "ranges.npz", buf.getvalue(), durable=self.durable
        )


def _q(path: Path) -> str:
    """A path as typed in a shell command (absolute: it works from any folder)."""
    import shlex

    return shlex.quote(os.path.abspath(path))


def check_accounting(
    manifest: Manifest, parts: Sequence[Part], pass_name: str, blobs: Sequence[str], source: str
) -> None:
    """Every shard of the plan answered exactly once, for the images the manifest names and
    the blobs asked; the counts add up to the number of samples."""
    by_index: dict[int, Part] = {}
    for p in parts:
        if p.pass_name != pass_name:
            raise CalibrationError(
                f"{source}: a {p.pass_name} result among the {pass_name} results (shard {p.index})"
            )
        if p.index in by_index:
            raise CalibrationError(f"{source}: shard {p.index} answered twice in {pass_name}")
        by_index[p.index] = p
    plan = {s.index: s for s in manifest.shards}
    missing = sorted(set(plan) - set(by_index))
    extra = sorted(set(by_index) - set(plan))
    if missing or extra:
        raise CalibrationError(
            f"{source}: {pass_name} results are missing for shards {missing[:10]}"
            if missing
            else f"{source}: {pass_name} results for unknown shards {extra[:10]}",
            hint="resume the run to compute the missing shards",
        )
    for index, part in by_index.items():
        want = plan[index]
        if (part.count, part.digest) != (want.count, want.digest):
            raise CalibrationError(
                f"{source}: shard {index}'s {pass_name} result is for other images "
                f"({part.count} samples, digest {part.digest[:12]}; the plan says "
                f"{want.count}, {want.digest[:12]})",
                hint="delete that shard's result and resume",
            )
        if part.blobs != list(blobs):
            raise CalibrationError(
                f"{source}: shard {index}'s {pass_name} result covers blobs "
                f"{part.blobs}, expected {list(blobs)}"
            )
    total = sum(p.count for p in by_index.values())
    if total != manifest.n_samples:
        raise CalibrationError(
            f"{source}: {pass_name} results count {total} samples, the "
            f"manifest {manifest.n_samples}"
        )
