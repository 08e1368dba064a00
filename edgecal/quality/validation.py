"""What ``edgecal validate`` measures and writes: the int8 model's quantized layers, the
per-board figures (:class:`ValidationResult`) and the validation document (:class:`ValidationDoc`,
``validation.json``), each with one ``to_dict``/``from_dict`` (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from edgecal.calib.weights import CALIBRATED_TYPES
from edgecal.errors import ModelFormatError
from edgecal.ncnnfmt.param import ParamFile
from edgecal.quality.consistency import Consistency
from edgecal.quality.jsondoc import Malformed, Obj, read_fields
from edgecal.quality.latency import Latency
from edgecal.quality.rundoc import RESULT_SCHEMA, json_safe
from edgecal.quality.taskmetrics import MetricFigures


@dataclass(frozen=True)
class QuantLayer:
    """A quantized layer of the int8 model: its top blob and, when requantize-fused
    (``8=1xx``: the top is int8 codes), the scale that dequantizes it."""

    name: str
    type: str
    top: str
    scale_term: int
    top_scale: float | None

    @property
    def requantized(self) -> bool:
        return self.scale_term > 100


def quantized_layers(
    pf: ParamFile, weights: dict[str, Any], source: str = "int8 model"
) -> list[QuantLayer]:
    """Convolution/ConvolutionDepthWise/InnerProduct layers with ``8=`` (int8_scale_term)."""
    out: list[QuantLayer] = []
    for layer in pf.layers:
        if layer.type not in CALIBRATED_TYPES:
            continue
        term = layer.param_int(8, 0)
        if not term:
            continue
        scale: float | None = None
        if term > 100:
            rec = weights.get(layer.name, {}).get("top_scale")
            if rec is None or np.asarray(rec.values).size < 1:
                raise ModelFormatError(
                    f"{source}: layer {layer.name} has 8={term} but no top scale in its .bin"
                )
            scale = float(np.asarray(rec.values, dtype=np.float32).ravel()[0])
            if not (scale > 0.0 and math.isfinite(scale)):
                raise ModelFormatError(f"{source}: layer {layer.name} has top scale {scale}")
        out.append(QuantLayer(layer.name, layer.type, layer.tops[0], term, scale))
    return out


def check_same_network(fp32: ParamFile, int8: ParamFile, fp32_src: str, int8_src: str) -> None:
    """The int8 model must be the fp32 model's graph: same layers (type, name, blobs)."""
    a = [(x.type, x.name, tuple(x.bottoms), tuple(x.tops)) for x in fp32.layers]
    b = [(x.type, x.name, tuple(x.bottoms), tuple(x.tops)) for x in int8.layers]
    if a == b:
        return
    if len(a) != len(b):
        why = f"{len(b)} layers vs {len(a)}"
    else:
        i = next(k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        why = f"layer {i} is {b[i][0]} {b[i][1]} there, {a[i][0]} {a[i][1]} here"
    raise ModelFormatError(
        f"{int8_src} is not an int8 model of {fp32_src} ({why})",
        hint="pass the int8 model quantized from this fp32 model, or use --table",
    )


#: The figures of a board a gate baseline may lack (``lenient`` reading): a missing one fails
#: its check later instead of refusing the file.
_NUMBERS = (
    "agreement",
    "cosine_mean",
    "cosine_min",
    "sqnr_mean_db",
    "sqnr_min_db",
    "latency_fp32_ms",
    "latency_int8_ms",
)
_LAYER_NUMBERS = ("cosine_mean", "cosine_min", "sqnr_db")


def _lenient_number(value: Any) -> float | None:
    """A figure of a gate's document as a float ("inf"/"nan" strings too), else ``None``."""
    if type(value) is float:
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass
class LayerFigures:
    name: str
    type: str
    top: str
    requantized: bool
    top_scale: float | None
    cosine_mean: float
    cosine_min: float
    sqnr_db: float
    #: keys the document lacked or held unreadable (``lenient`` reading only)
    missing: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "type": self.type,
            "top": self.top,
            "requantized": self.requantized,
            "top_scale": self.top_scale,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "sqnr_db": self.sqnr_db,
        }
        return {k: v for k, v in d.items() if k not in self.missing}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "", *, lenient: bool = False) -> LayerFigures:
        """One of ``results[i].layers`` of a validation document (:meth:`to_dict`);
        :class:`Malformed` names the JSON path of a bad value.  ``lenient``: see
        :meth:`ValidationDoc.from_dict`."""
        if lenient and isinstance(doc, dict):
            return cls._lenient(doc)
        return read_fields(cls, Obj.of(doc, where))

    @classmethod
    def _lenient(cls, d: dict[str, Any]) -> LayerFigures:
        missing: list[str] = []
        values: list[float] = []
        for key in _LAYER_NUMBERS:
            value = _lenient_number(d.get(key))
            if value is None:
                missing.append(key)
                value = math.nan
            values.append(value)
        kind, top, requantized = d.get("type"), d.get("top"), d.get("requantized")
        if not isinstance(kind, str):
            missing.append("type")
        if not isinstance(top, str):
            missing.append("top")
        if not isinstance(requantized, bool):
            missing.append("requantized")
        if "top_scale" not in d:
            missing.append("top_scale")
        return cls(
            str(d.get("name")),
            kind if isinstance(kind, str) else "",
            top if isinstance(top, str) else "",
            requantized is True,
            _lenient_number(d.get("top_scale")),
            values[0],
            values[1],
            values[2],
            frozenset(missing),
        )

    def figure(self, name: str) -> float | None:
        """Figure ``name``, ``None`` when the document lacked it."""
        return None if name in self.missing else float(getattr(self, name))


def _lenient_figures(
    d: dict[str, Any], names: tuple[str, ...]
) -> tuple[dict[str, float], set[str]]:
    """``names`` read leniently (NaN where unreadable), and the unreadable ones."""
    values: dict[str, float] = {}
    missing: set[str] = set()
    for name in names:
        value = _lenient_number(d.get(name))
        if value is None:
            missing.add(name)
            value = math.nan
        values[name] = value
    return values, missing


_F = TypeVar("_F", bound="ModelFiles")


@dataclass(frozen=True)
class ModelFiles:
    """A model's files as given and their hashes (``fp32`` of a board's figures)."""

    param: str | None
    bin: str | None
    param_sha256: str | None
    bin_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[_F], doc: Any, where: str = "") -> _F:
        """What :meth:`to_dict` wrote (every field text or null)."""
        o = Obj.of(doc, where)
        return cls(*(o.opt_text(f.name) for f in fields(cls)))


@dataclass(frozen=True)
class Int8Files(ModelFiles):
    """The int8 model's files (``int8`` of a board's figures): also the table it was made from
    (``--table``), ``None`` when the int8 model was given."""

    table: str | None = None


@dataclass
class ValidationResult:
    """One board's figures: what :func:`edgecal.workflows.validate.validate` measures, with the
    models' files (``fp32``/``int8``) once the caller knows them; ``results[i]`` of a validation
    document."""

    n_samples: int
    output_blob: str
    runtime: str
    threads: int
    top1_fp32: float | None
    top1_int8: float | None
    agreement: float
    cosine_mean: float
    cosine_min: float
    sqnr_mean_db: float
    sqnr_min_db: float
    latency_fp32_ms: float
    latency_int8_ms: float
    layers: list[LayerFigures]
    device: dict[str, Any] = field(default_factory=dict)
    fp32: ModelFiles | None = None
    int8: Int8Files | None = None
    #: The int8 model's output on every image, ``(n_samples, n_values)``: what cross-board
    #: consistency compares (not part of :meth:`to_dict`).
    int8_outputs: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: keys the document lacked or held unreadable (``lenient`` reading only)
    missing: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    #: the task metric's figures (``validate --metric``; absent from the document without it)
    metric: MetricFigures | None = None
    #: the latencies with their spread (median = ``latency_*_ms``; absent from older documents)
    latency_fp32: Latency | None = None
    latency_int8: Latency | None = None

    @property
    def board(self) -> str:
        """The board's name (``device.name``)."""
        return str(self.device.get("name", ""))

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """``"fp32"``/``"int8"`` -> their files and hashes, for those known."""
        return {
            k: m.to_dict() for k, m in (("fp32", self.fp32), ("int8", self.int8)) if m is not None
        }

    def figure(self, name: str) -> float | None:
        """Figure ``name`` as a float, ``None`` when absent (no labels, or the document lacked
        it)."""
        value = getattr(self, name)
        return None if name in self.missing or value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "n_samples": self.n_samples,
            "output_blob": self.output_blob,
            "runtime": self.runtime,
            "threads": self.threads,
            "top1_fp32": self.top1_fp32,
            "top1_int8": self.top1_int8,
            "agreement": self.agreement,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "sqnr_mean_db": self.sqnr_mean_db,
            "sqnr_min_db": self.sqnr_min_db,
            "latency_fp32_ms": self.latency_fp32_ms,
            "latency_int8_ms": self.latency_int8_ms,
            "layers": [x.to_dict() for x in self.layers],
            "device": dict(self.device),
            **self.models,
        }
        if self.metric is not None:
            d["metric"] = self.metric.to_dict()
        for key in ("latency_fp32", "latency_int8"):
            lat = getattr(self, key)
            if lat is not None:
                d[key] = lat.to_dict()
        return json_safe({k: v for k, v in d.items() if k not in self.missing})

    @classmethod
    def from_dict(cls, doc: Any, where: str = "", *, lenient: bool = False) -> ValidationResult:
        """What :meth:`to_dict` wrote; :class:`Malformed` names the JSON path of a bad value.
        ``lenient``: see :meth:`ValidationDoc.from_dict`."""
        o = Obj.of(doc, where)
        device = o.opt_obj("device")
        files = {k: o.opt_obj(k) for k in ("fp32", "int8")}
        fp32 = (
            ModelFiles.from_dict(files["fp32"].d, files["fp32"].where)
            if files["fp32"] is not None
            else None
        )
        int8 = (
            Int8Files.from_dict(files["int8"].d, files["int8"].where)
            if files["int8"] is not None
            else None
        )
        if lenient:
            d = o.d
            layers = d.get("layers")
            figures, missing = _lenient_figures(d, _NUMBERS)
            n, threads = d.get("n_samples"), d.get("threads")
            texts = {k: d.get(k) for k in ("output_blob", "runtime")}
            for key, value in (("n_samples", n), ("threads", threads)):
                if isinstance(value, bool) or not isinstance(value, int):
                    missing.add(key)
            for key, value in texts.items():
                if not isinstance(value, str):
                    missing.add(key)
            for key in ("top1_fp32", "top1_int8", "layers"):
                if key not in d:
                    missing.add(key)
            f = figures
            metric = None
            if d.get("metric") is not None:
                try:
                    metric = MetricFigures.from_dict(d["metric"], o.at("metric"))
                except Malformed:
                    missing.add("metric")
            spreads: dict[str, Latency | None] = {}
            for key in ("latency_fp32", "latency_int8"):
                spreads[key] = None
                if d.get(key) is not None:
                    try:
                        spreads[key] = Latency.from_dict(d[key], o.at(key))
                    except Malformed:
                        missing.add(key)
            return cls(
                metric=metric,
                latency_fp32=spreads["latency_fp32"],
                latency_int8=spreads["latency_int8"],
                n_samples=n if isinstance(n, int) and "n_samples" not in missing else 0,
                output_blob=str(texts["output_blob"]) if "output_blob" not in missing else "",
                runtime=str(texts["runtime"]) if "runtime" not in missing else "",
                threads=threads if isinstance(threads, int) and "threads" not in missing else 0,
                top1_fp32=_lenient_number(d.get("top1_fp32")),
                top1_int8=_lenient_number(d.get("top1_int8")),
                layers=[
                    LayerFigures._lenient(x)
                    for x in (layers if isinstance(layers, list) else [])
                    if isinstance(x, dict)
                ],
                device=dict(device.d) if device else {},
                fp32=fp32,
                int8=int8,
                agreement=f["agreement"],
                cosine_mean=f["cosine_mean"],
                cosine_min=f["cosine_min"],
                sqnr_mean_db=f["sqnr_mean_db"],
                sqnr_min_db=f["sqnr_min_db"],
                latency_fp32_ms=f["latency_fp32_ms"],
                latency_int8_ms=f["latency_int8_ms"],
                missing=frozenset(missing),
            )
        return read_fields(
            cls,
            o,
            device=dict(device.d) if device else {},
            fp32=fp32,
            int8=int8,
        )


SAVE_HINT = "write it with `edgecal validate --save-baseline FILE` (or pass a run directory)"


@dataclass
class ValidationDoc:
    """The validation document (``validation.json``, ``--save-baseline``, ``validate --json``):
    ``{"schema": 1, "results": [board, ...], "consistency": ...}``."""

    results: list[ValidationResult]
    consistency: Consistency | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "results": [r.to_dict() for r in self.results],
            "consistency": self.consistency.to_dict() if self.consistency else None,
        }

    @classmethod
    def from_dict(cls, doc: Any, *, lenient: bool = False) -> ValidationDoc:
        """What :meth:`to_dict` wrote; :class:`Malformed` says what is wrong (the JSON path of
        a bad value), with a hint.  Every board names its device, once.

        ``lenient`` (the gate's reading of a baseline or of results): only the structure is
        checked and there must be a board; a figure missing or unreadable is left out
        (``missing``; the gate fails its check) and the consistency entries may be partial."""
        if not isinstance(doc, dict):
            raise Malformed(
                f"not an edgecal validation file (a JSON {type(doc).__name__}, not an object)",
                hint=SAVE_HINT,
            )
        if "results" not in doc and "agreement" in doc and "schema" not in doc:
            raise Malformed(
                "a single-board figure set of an older edgecal, not a validation "
                'file (no "results" list)',
                hint=SAVE_HINT,
            )
        if "schema" not in doc:
            raise Malformed('not an edgecal validation file (no "schema")', hint=SAVE_HINT)
        if doc["schema"] != RESULT_SCHEMA:
            raise Malformed(
                f"validation schema {doc['schema']!r}, this edgecal reads schema {RESULT_SCHEMA}",
                hint="re-save it with this edgecal: `edgecal validate --save-baseline FILE`",
            )
        top = Obj.of(doc, "")
        results = doc.get("results")
        if "results" not in doc or (lenient and (not isinstance(results, list) or not results)):
            raise Malformed(
                'not an edgecal validation file (no "results" list of boards)', hint=SAVE_HINT
            )
        seen: set[str] = set()
        for i, res in enumerate(top.items("results")):
            if not isinstance(res, dict):
                raise Malformed(f"results[{i}] is not an object", hint=SAVE_HINT)
            dev = res.get("device")
            if not isinstance(dev, dict) or not isinstance(dev.get("name"), str) or not dev["name"]:
                raise Malformed(
                    f"results[{i}] does not name its device (device.name)", hint=SAVE_HINT
                )
            if dev["name"] in seen:
                raise Malformed(
                    f"board {dev['name']} appears twice in results",
                    hint="keep one validation per board",
                )
            seen.add(dev["name"])
        cons = doc.get("consistency")
        if cons is not None and not isinstance(cons, dict):
            raise Malformed('"consistency" is not an object', hint=SAVE_HINT)
        return cls(
            results=[
                ValidationResult.from_dict(o.d, o.where, lenient=lenient)
                for o in top.objs("results")
            ],
            consistency=None
            if cons is None
            else Consistency.from_dict(cons, "consistency", lenient=lenient),
        )
