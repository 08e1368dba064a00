"""The host <-> agent messages: JSON requests and responses, their versions and validation.

This module is the single source of truth for both ends: ``edgecal`` imports it, the agent
runs it.  Stdlib only; Python 3.9.  The arrays that travel beside the messages are
:mod:`edgecal_agent.npzio` (``.npz`` files, never pickle) and :mod:`edgecal_agent.shards`
(the sample shards).

Job-dir protocol (``<workdir>`` is the device's work directory)::

    <workdir>/jobs/<job_id>/request.json     written by the host (plus any job input files)
    <workdir>/jobs/<job_id>/*.npz            artifacts written by the agent
    <workdir>/jobs/<job_id>/response.json    written by the agent atomically, LAST

Serve mode (``python -m edgecal_agent serve --workdir W``): the agent prints one
``EDGECAL-READY <protocol> <agent_version>`` line on stdout, then reads one job id per line on
stdin and answers ``EDGECAL-DONE <job_id>`` on stdout once ``response.json`` is in place.
Progress goes to stdout too, before the job's DONE line, as ``EDGECAL-PROGRESS <job_id> <done>
<total>``: on one stream the host reads every progress line of a job before its end (on stderr,
a short job's lines could reach the host after its DONE and be lost).  Stdout carries nothing
but these protocol lines.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any, TypeVar

from edgecal_agent import PROTOCOL_VERSION

# -- stream lines --------------------------------------------------------------------------------
READY_PREFIX = "EDGECAL-READY"
DONE_PREFIX = "EDGECAL-DONE"
PROGRESS_PREFIX = "EDGECAL-PROGRESS"

REQUEST_FILE = "request.json"
#: The agent refuses a larger ``request.json`` (BadRequest) and a longer job-id line on stdin.
MAX_REQUEST_BYTES = 16 << 20
MAX_JOB_LINE = 1024
RESPONSE_FILE = "response.json"
JOBS_DIR = "jobs"
#: Pushed inputs live at ``files/<sha256 of the content>/<name>``: the agent checks each one
#: against its folder name before its first use (``InputCorrupt`` otherwise).
FILES_DIR = "files"
_CONTENT_RE = re.compile(r"^" + FILES_DIR + r"/([0-9a-f]{64})/[^/]+$")

OPS = ("hello", "absmax", "histogram", "run", "eq_layer", "sleep")
RUNTIMES = ("calibration", "deployed")
INPUT_KINDS = ("image", "npy")
PIXEL_TYPES = ("BGR", "RGB", "GRAY", "RGBA", "BGRA")
EQ_MAX_SAMPLES = 50
#: The similarity an ``eq_layer`` result's sums use (``result["similarity"]``; the definition is
#: in :mod:`edgecal_agent.eqsearch`).  The host refuses a result that names another one.
EQ_SIMILARITY = "unit-f64"
#: The form of an ``eq_layer`` result (``result["eq_result"]``; absent: 1, every sum complete).
#: 2: the bottom scale's candidates are pruned exactly (:mod:`edgecal_agent.eqsearch`): the
#: artifact's ``sim_samples`` says over how many samples each entry of ``sim`` is summed; an
#: entry summed over fewer than ``n_samples`` is a partial sum that can no longer be picked.
EQ_RESULT = 2
#: What a cosine may exceed 1 by in the pruning bound of an ``eq_layer`` result of form 2, per
#: remaining sample: a cosine is at most 1 in exact arithmetic; its float64 value and the
#: rounding of a sum of 50 of them stay below 1e-13.
EQ_PRUNE_SLACK = 1e-6


def content_digest(rel: str) -> str | None:
    """The sha256 a workdir-relative path promises (``files/<sha256>/<name>``), else None."""
    m = _CONTENT_RE.match(rel)
    return m.group(1) if m else None


_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ProtocolViolation(ValueError):
    """A message or file does not follow this protocol."""


class ProtocolMismatch(ProtocolViolation):
    """The other side speaks a different major protocol version."""

    def __init__(self, remote: object, local: int = PROTOCOL_VERSION, who: str = "peer") -> None:
        super().__init__(
            f"{who} speaks edgecal agent protocol {remote!r}, this side speaks protocol {local}; "
            "host and agent must use the same major protocol version"
        )
        self.remote = remote
        self.local = local


def check_protocol(remote: object, who: str = "peer") -> None:
    """Raise :class:`ProtocolMismatch` unless ``remote`` is our major protocol version."""
    if type(remote) is not int or remote != PROTOCOL_VERSION:
        raise ProtocolMismatch(remote, PROTOCOL_VERSION, who)


# -- validation helpers --------------------------------------------------------------------------
def _req(d: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ProtocolViolation(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise ProtocolViolation(f"{where}: missing field {key!r}")
    return _typed(d[key], types, f"{where}.{key}")


def _opt(
    d: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str, default: Any
) -> Any:
    if not isinstance(d, Mapping):
        raise ProtocolViolation(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d or d[key] is None:
        return default
    return _typed(d[key], types, f"{where}.{key}")


def _typed(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    tt = types if isinstance(types, tuple) else (types,)
    # bool is an int subclass; never accept it where a number is meant
    if isinstance(value, bool) and bool not in tt:
        raise ProtocolViolation(f"{where}: expected {_names(tt)}, got bool")
    if not isinstance(value, tt):
        raise ProtocolViolation(f"{where}: expected {_names(tt)}, got {type(value).__name__}")
    return value


def _float(value: Any, where: str) -> float:
    """A JSON number as a float (an int too large for a float is a violation, not a crash)."""
    try:
        return float(_typed(value, (int, float), where))
    except OverflowError:
        raise ProtocolViolation(f"{where}: number too large for a float") from None


def _names(tt: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in tt)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    _typed(value, list, where)
    return tuple(_typed(v, str, f"{where}[{i}]") for i, v in enumerate(value))


def _num_list(value: Any, where: str) -> tuple[float, ...]:
    _typed(value, list, where)
    return tuple(_float(v, f"{where}[{i}]") for i, v in enumerate(value))


def check_relpath(path: str, where: str) -> str:
    """A workdir- or job-relative POSIX path with no ``..`` and no absolute root."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or "\x00" in path:
        raise ProtocolViolation(f"{where}: {path!r} must be a relative path inside the workdir")
    return path


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise ProtocolViolation(f"job id {job_id!r} must match {_JOB_ID_RE.pattern}")
    return job_id


# -- request parameters --------------------------------------------------------------------------
@dataclass(frozen=True)
class InputDesc:
    """One model input: the agent-side mirror of ``edgecal.inputs.spec.InputSpec.to_dict()``."""

    blob: str
    kind: str = "image"
    pixel: str = "BGR"
    mean: tuple[float, ...] = ()
    norm: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ProtocolViolation(f"input {self.blob!r}: kind {self.kind!r} not in {INPUT_KINDS}")
        if self.pixel not in PIXEL_TYPES:
            raise ProtocolViolation(
                f"input {self.blob!r}: pixel {self.pixel!r} not in {PIXEL_TYPES}"
            )

    def target_size(self, cols: int, rows: int) -> tuple[int, int]:
        """ncnn2table's resize rule (spec 2.3)."""
        w = self.shape[0] if len(self.shape) > 0 else 0
        h = self.shape[1] if len(self.shape) > 1 else 0
        if w > 0 and h > 0:
            return w, h
        if w <= 0 and h <= 0:
            return cols, rows
        if h <= 0:
            s = cols / w
            return w, int(rows / s)
        s = rows / h
        return int(cols / s), h

    def to_dict(self) -> dict[str, Any]:
        return {
            "blob": self.blob,
            "kind": self.kind,
            "pixel": self.pixel,
            "mean": list(self.mean),
            "norm": list(self.norm),
            "shape": list(self.shape),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "input") -> InputDesc:
        shape = _opt(d, "shape", list, where, [])
        return cls(
            blob=_req(d, "blob", str, where),
            kind=_opt(d, "kind", str, where, "image"),
            pixel=_opt(d, "pixel", str, where, "BGR"),
            mean=_num_list(_opt(d, "mean", list, where, []), f"{where}.mean"),
            norm=_num_list(_opt(d, "norm", list, where, []), f"{where}.norm"),
            shape=tuple(_typed(v, int, f"{where}.shape[{i}]") for i, v in enumerate(shape)),
        )


_T = TypeVar("_T", bound="_Texts")


@dataclass(frozen=True)
class _Texts:
    """A message part whose JSON form is its fields, as they are: strings, each one a relative
    path (:func:`check_relpath`) unless :meth:`_check` says otherwise."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[_T], d: Mapping[str, Any], where: str) -> _T:
        return cls(
            **{f.name: cls._check(f.name, _req(d, f.name, str, where), where) for f in fields(cls)}
        )

    @classmethod
    def _check(cls, name: str, value: str, where: str) -> str:
        return check_relpath(value, f"{where}.{name}")


@dataclass(frozen=True)
class ModelFiles(_Texts):
    """Workdir-relative paths of the ``.param`` and ``.bin`` files."""

    param: str
    bin: str


def _runtime(d: Mapping[str, Any], where: str) -> str:
    runtime = _opt(d, "runtime", str, where, "calibration")
    if runtime not in RUNTIMES:
        raise ProtocolViolation(f"{where}.runtime: {runtime!r} not in {RUNTIMES}")
    return runtime


def _threads(d: Mapping[str, Any], where: str) -> int:
    threads = _opt(d, "threads", int, where, 1)
    if threads < 1:
        raise ProtocolViolation(f"{where}.threads: must be >= 1, got {threads}")
    return threads


@dataclass(frozen=True)
class HelloParams:
    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "params") -> HelloParams:
        _typed(d, Mapping, where)
        return cls()


@dataclass(frozen=True)
class SleepParams:
    """Diagnostic op: sleep ``seconds`` (liveness and timeout tests)."""

    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "params") -> SleepParams:
        seconds = _float(_opt(d, "seconds", (int, float), where, 0.0), f"{where}.seconds")
        if not 0.0 <= seconds <= 3600.0:
            raise ProtocolViolation(f"{where}.seconds: must be in [0, 3600], got {seconds}")
        return cls(seconds)


@dataclass(frozen=True)
class _OnShards:
    """The start of the parameters of an op that runs the model over sample shards.
    :meth:`to_dict`: the fields in their order, as they are but these three."""

    model: ModelFiles
    inputs: tuple[InputDesc, ...]
    shards: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, **self._shards_dict()}

    def _shards_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "inputs": [i.to_dict() for i in self.inputs],
            "shards": list(self.shards),
        }

    @staticmethod
    def _read_shards(d: Mapping[str, Any], where: str, inputs: list[Any]) -> dict[str, Any]:
        """``model``, ``inputs`` (their list already read) and ``shards`` of ``d``."""
        return {
            "model": ModelFiles.from_dict(_req(d, "model", dict, where), f"{where}.model"),
            "inputs": tuple(
                InputDesc.from_dict(x, f"{where}.inputs[{i}]") for i, x in enumerate(inputs)
            ),
            "shards": tuple(
                check_relpath(s, f"{where}.shards")
                for s in _str_list(_req(d, "shards", list, where), f"{where}.shards")
            ),
        }


@dataclass(frozen=True)
class CompareParams:
    """``run`` with ``compare`` (agent >= 0.3.0): besides the outputs, compare each blob of
    ``pairs`` with the same blob of the reference ``model`` (validate's fp32 model) on every
    sample, on the device, and answer only the sums (``layers_<k>.npz``), never the blobs.

    ``pairs``: ``(blob, scale)``; ``scale`` (not None): the run's blob holds raw int8 codes
    (a requantized top) whose values are ``codes / scale`` in float32.
    """

    model: ModelFiles
    pairs: tuple[tuple[str, float | None], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "pairs": [[b, s] for b, s in self.pairs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> CompareParams:
        pairs = []
        for i, item in enumerate(_req(d, "pairs", list, where)):
            at = f"{where}.pairs[{i}]"
            if not isinstance(item, list) or len(item) != 2:
                raise ProtocolViolation(f"{at}: must be [blob, scale or null]")
            blob = _typed(item[0], str, f"{at}[0]")
            scale = None if item[1] is None else _float(item[1], f"{at}[1]")
            if scale is not None and not (0.0 < scale < math.inf):
                raise ProtocolViolation(f"{at}[1]: a scale must be positive and finite")
            pairs.append((blob, scale))
        if not pairs:
            raise ProtocolViolation(f"{where}.pairs: at least one pair is needed")
        return cls(
            ModelFiles.from_dict(_req(d, "model", dict, where), f"{where}.model"), tuple(pairs)
        )


#: A ``run`` with ``variants`` names at most this many of them (each is a net loaded at once).
MAX_VARIANTS = 32
#: ... and times each variant's whole forward on at most this many of its first samples.
MAX_TIMED_SAMPLES = 64


#: A variant's ``.bin`` made on the device from at most this many pieces.
MAX_SEGMENTS = 1 << 16


@dataclass(frozen=True)
class BinPatch:
    """A variant's ``.bin`` put together on the device (agent >= 0.4.0), so that only what the
    variant changes is pushed: ``segments`` in order, each ``(source, offset, length)`` bytes
    of the base's ``.bin`` (source 0: the job's model) or of the pushed file ``data`` (source
    1); the result must have the digest ``sha256``."""

    data: str
    segments: tuple[tuple[int, int, int], ...]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "segments": [list(x) for x in self.segments],
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> BinPatch:
        segments = []
        items = _req(d, "segments", list, where)
        if len(items) > MAX_SEGMENTS:
            raise ProtocolViolation(f"{where}.segments: at most {MAX_SEGMENTS}, got {len(items)}")
        for i, item in enumerate(items):
            at = f"{where}.segments[{i}]"
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
                or item[0] not in (0, 1)
                or item[1] < 0
                or item[2] < 0
            ):
                raise ProtocolViolation(
                    f"{at}: must be [source 0 or 1, offset >= 0, length >= 0] (whole numbers)"
                )
            segments.append((item[0], item[1], item[2]))
        digest = _req(d, "sha256", str, where)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ProtocolViolation(f"{where}.sha256: 64 lowercase hex digits, got {digest!r}")
        data = check_relpath(_req(d, "data", str, where), f"{where}.data")
        return cls(data, tuple(segments), digest)


@dataclass(frozen=True)
class VariantRun:
    """One variant of a ``run`` with ``variants``: its files and the blobs it is fed from the
    base model (``feed``: every blob the variant's changed layers and what follows them read
    from the unchanged part, and each output the variant does not change).  Its ``.bin`` is
    either a pushed file (``model``) or made on the device (``param`` and ``patch``)."""

    param: str
    bin: str | None
    feed: tuple[str, ...]
    patch: BinPatch | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.patch is not None:
            return {"param": self.param, "patch": self.patch.to_dict(), "feed": list(self.feed)}
        return {"model": {"param": self.param, "bin": self.bin}, "feed": list(self.feed)}

    @classmethod
    def from_dict(cls, item: Any, at: str) -> VariantRun:
        if not isinstance(item, dict):
            raise ProtocolViolation(f"{at}: must be an object {{model, feed}}")
        feed = _str_list(_req(item, "feed", list, at), f"{at}.feed")
        if not feed:
            raise ProtocolViolation(f"{at}.feed: at least one blob is needed")
        if len(set(feed)) != len(feed):
            raise ProtocolViolation(f"{at}.feed: a blob is named twice")
        patch = _opt(item, "patch", dict, at, None)
        if patch is None:
            model = ModelFiles.from_dict(_req(item, "model", dict, at), f"{at}.model")
            return cls(model.param, model.bin, feed)
        if "model" in item:
            raise ProtocolViolation(f"{at}: either model or param and patch, not both")
        param = check_relpath(_req(item, "param", str, at), f"{at}.param")
        return cls(param, None, feed, BinPatch.from_dict(patch, f"{at}.patch"))


@dataclass(frozen=True)
class VariantsParams:
    """``run`` with ``variants`` (agent >= 0.4.0): score several variants of the job's model
    (the *base*), computing per sample only what each variant changes.

    Per sample the agent runs the base model once (every blob kept), then for each variant a
    fresh extractor of the variant's net is given the base's ``feed`` blobs as ncnn holds them
    (raw: packing, storage and int8 codes as they are) and computes the run's ``blobs`` from
    them: the variant's changed layers and what follows, nothing before.  The answer is each
    variant's outputs (``outputs_<k>.npz``, members ``v<j>_s<i>_b<b>``), the same values a
    whole forward of the variant gives, and, for each of the job's first ``timed_samples``
    samples, the seconds of a whole forward of each variant (``latency_s``: one list per
    variant), timed as the ``timed`` run times its model.  A variant's ``.bin`` may be made on
    the device from the base's and a pushed piece (:class:`BinPatch`).
    """

    models: tuple[VariantRun, ...]
    timed_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [v.to_dict() for v in self.models],
            "timed_samples": self.timed_samples,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> VariantsParams:
        models = [
            VariantRun.from_dict(item, f"{where}.models[{i}]")
            for i, item in enumerate(_req(d, "models", list, where))
        ]
        if not 1 <= len(models) <= MAX_VARIANTS:
            raise ProtocolViolation(
                f"{where}.models: 1 to {MAX_VARIANTS} variants, got {len(models)}"
            )
        timed = _opt(d, "timed_samples", int, where, 0)
        if not 0 <= timed <= MAX_TIMED_SAMPLES:
            raise ProtocolViolation(
                f"{where}.timed_samples: must be in [0, {MAX_TIMED_SAMPLES}], got {timed}"
            )
        return cls(tuple(models), timed)


@dataclass(frozen=True)
class CaptureParams(_OnShards):
    """``absmax`` / ``histogram`` / ``run``: run the model over the shards, capture ``blobs``.

    ``absmax`` (histogram only) gives the fixed range of every blob, from the absmax pass.
    ``timed`` (run only, agent >= 0.2.0): also time, per sample, a fresh extractor computing
    only ``blobs[0]`` (the result's ``latency_s``); an older agent ignores it and answers no
    ``latency_s``, which the host reports.  ``compare`` (run only, agent >= 0.3.0):
    :class:`CompareParams`.  ``variants`` (run only, agent >= 0.4.0, neither ``timed`` nor
    ``compare`` beside it): :class:`VariantsParams`.
    """

    blobs: tuple[str, ...]
    runtime: str = "calibration"
    threads: int = 1
    absmax: Mapping[str, float] | None = None
    timed: bool = False
    compare: CompareParams | None = None
    variants: VariantsParams | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **self._shards_dict(),
            "blobs": list(self.blobs),
            "runtime": self.runtime,
            "threads": self.threads,
        }
        if self.absmax is not None:
            d["absmax"] = {k: float(v) for k, v in self.absmax.items()}
        if self.timed:
            d["timed"] = True
        if self.compare is not None:
            d["compare"] = self.compare.to_dict()
        if self.variants is not None:
            d["variants"] = self.variants.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "params") -> CaptureParams:
        inputs = _req(d, "inputs", list, where)
        if not inputs:
            raise ProtocolViolation(f"{where}.inputs: at least one input is needed")
        absmax = _opt(d, "absmax", dict, where, None)
        if absmax is not None:
            absmax = {
                _typed(k, str, f"{where}.absmax key"): _float(v, f"{where}.absmax[{k!r}]")
                for k, v in absmax.items()
            }
        compare = _opt(d, "compare", dict, where, None)
        variants = _opt(d, "variants", dict, where, None)
        timed = bool(_opt(d, "timed", bool, where, False))
        if variants is not None and (timed or compare is not None):
            raise ProtocolViolation(
                f"{where}.variants: a run with variants is neither timed nor compared "
                "(its timed_samples time the variants)"
            )
        shards = cls._read_shards(d, where, inputs)
        blobs = _str_list(_req(d, "blobs", list, where), f"{where}.blobs")
        if variants is not None and not blobs:
            raise ProtocolViolation(f"{where}.blobs: a run with variants needs at least one blob")
        return cls(
            **shards,
            blobs=blobs,
            runtime=_runtime(d, where),
            threads=_threads(d, where),
            absmax=absmax,
            timed=timed,
            compare=None
            if compare is None
            else CompareParams.from_dict(compare, f"{where}.compare"),
            variants=None
            if variants is None
            else VariantsParams.from_dict(variants, f"{where}.variants"),
        )


@dataclass(frozen=True)
class EqLayerParams(_OnShards):
    """``eq_layer``: the EQ scale search of one layer (spec 2.9, intended algorithm).

    ``probe_param``, ``probe_prefix`` and ``candidates`` name files inside the job directory:
    the probe net's ``.param`` text, its ``.bin`` up to (not including) the weight scales, and
    an npz with ``candidates`` float32 ``(n_weight_scales + 1, steps)``, ``weight_scales``
    float32 ``(n_weight_scales,)`` and ``bottom_scale`` float32 ``(1,)``.
    """

    bottom: str
    top: str
    probe_param: str = "probe.param"
    probe_prefix: str = "probe_prefix.bin"
    candidates: str = "candidates.npz"
    max_samples: int = EQ_MAX_SAMPLES

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "params") -> EqLayerParams:
        inputs = _req(d, "inputs", list, where)
        max_samples = _opt(d, "max_samples", int, where, EQ_MAX_SAMPLES)
        if not 1 <= max_samples <= EQ_MAX_SAMPLES:
            raise ProtocolViolation(
                f"{where}.max_samples: must be in [1, {EQ_MAX_SAMPLES}], got {max_samples}"
            )
        files: dict[str, Any] = {
            k: check_relpath(_opt(d, k, str, where, default), f"{where}.{k}")
            for k, default in (
                ("probe_param", "probe.param"),
                ("probe_prefix", "probe_prefix.bin"),
                ("candidates", "candidates.npz"),
            )
        }
        return cls(
            **cls._read_shards(d, where, inputs),
            bottom=_req(d, "bottom", str, where),
            top=_req(d, "top", str, where),
            max_samples=max_samples,
            **files,
        )


Params = Any  # one of the *Params classes above, chosen by op
PARAM_TYPES: dict[str, Any] = {
    "hello": HelloParams,
    "sleep": SleepParams,
    "absmax": CaptureParams,
    "histogram": CaptureParams,
    "run": CaptureParams,
    "eq_layer": EqLayerParams,
}


def _envelope(message: Request | Response) -> dict[str, Any]:
    """What every request and response starts with: the protocol, the op and the job."""
    return {"protocol": message.protocol, "op": message.op, "job_id": message.job_id}


@dataclass(frozen=True)
class Request:
    op: str
    job_id: str
    params: Params = field(default_factory=HelloParams)
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ProtocolViolation(f"unknown op {self.op!r}; known ops: {', '.join(OPS)}")
        check_job_id(self.job_id)
        if not isinstance(self.params, PARAM_TYPES[self.op]):
            raise ProtocolViolation(
                f"op {self.op!r} takes {PARAM_TYPES[self.op].__name__}, "
                f"got {type(self.params).__name__}"
            )
        if self.op == "histogram" and self.params.absmax is None:
            raise ProtocolViolation("op 'histogram' needs params.absmax (blob -> absmax)")

    def to_dict(self) -> dict[str, Any]:
        return {**_envelope(self), "params": self.params.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Request:
        check_protocol(_req(d, "protocol", int, "request"), "the request")
        op = _req(d, "op", str, "request")
        if op not in OPS:
            raise ProtocolViolation(f"unknown op {op!r}; known ops: {', '.join(OPS)}")
        params = PARAM_TYPES[op].from_dict(_opt(d, "params", dict, "request", {}), "params")
        return cls(op=op, job_id=_req(d, "job_id", str, "request"), params=params)


# -- response ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorInfo:
    kind: str
    message: str
    traceback: str = ""
    #: What the host needs to say more than the message (agent >= 0.2.4, e.g. which samples
    #: gave a non-finite activation); JSON data only.
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "message": self.message,
            "traceback": self.traceback,
        }
        if self.details:
            d["details"] = dict(self.details)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "error") -> ErrorInfo:
        return cls(
            kind=_req(d, "kind", str, where),
            message=_req(d, "message", str, where),
            traceback=_opt(d, "traceback", str, where, ""),
            details=_opt(d, "details", dict, where, {}),
        )


@dataclass(frozen=True)
class Artifact(_Texts):
    """A job-relative file the agent wrote, with its sha256 (hex)."""

    file: str
    sha256: str

    @classmethod
    def _check(cls, name: str, value: str, where: str) -> str:
        if name == "file":
            return super()._check(name, value, where)
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ProtocolViolation(f"{where}.sha256: not a sha256 hex digest: {value!r}")
        return value


@dataclass(frozen=True)
class Response:
    op: str
    job_id: str
    ok: bool
    agent_version: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, Artifact] = field(default_factory=dict)
    error: ErrorInfo | None = None
    timing_s: Mapping[str, float] = field(default_factory=dict)
    ru_maxrss_kb: int = 0
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.ok == (self.error is not None):
            raise ProtocolViolation("a response has an error exactly when ok is false")

    def to_dict(self) -> dict[str, Any]:
        return {
            **_envelope(self),
            "ok": self.ok,
            "agent_version": self.agent_version,
            "result": dict(self.result),
            "artifacts": {k: a.to_dict() for k, a in self.artifacts.items()},
            "error": None if self.error is None else self.error.to_dict(),
            "timing_s": dict(self.timing_s),
            "ru_maxrss_kb": self.ru_maxrss_kb,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Response:
        check_protocol(_req(d, "protocol", int, "response"), "the agent")
        arts = _opt(d, "artifacts", dict, "response", {})
        err = _opt(d, "error", dict, "response", None)
        timing = _opt(d, "timing_s", dict, "response", {})
        return cls(
            op=_req(d, "op", str, "response"),
            job_id=_req(d, "job_id", str, "response"),
            ok=_req(d, "ok", bool, "response"),
            agent_version=_opt(d, "agent_version", str, "response", ""),
            result=_opt(d, "result", dict, "response", {}),
            artifacts={
                _typed(k, str, "response.artifacts key"): Artifact.from_dict(
                    v, f"response.artifacts[{k!r}]"
                )
                for k, v in arts.items()
            },
            error=None if err is None else ErrorInfo.from_dict(err, "response.error"),
            timing_s={k: _float(v, f"response.timing_s[{k!r}]") for k, v in timing.items()},
            ru_maxrss_kb=_opt(d, "ru_maxrss_kb", int, "response", 0),
        )


def dumps(message: Request | Response) -> str:
    return json.dumps(message.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n"
