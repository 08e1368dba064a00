"""ncnn2int8 in pure Python: fp32 model + calibration table -> int8 ``.param`` text and ``.bin``.

Reproduces ``tools/quantize/ncnn2int8.cpp`` byte for byte on the reference models: the same
per-layer quantization, requantize fusion, ModelWriter-style ``.param`` and ``.bin`` layout, and
every other tagged weight stored as fp16.  Deliberate differences, all safer:

* a layer whose blob line is present but ``<layer>_param_0`` is missing is kept in float with a
  warning (upstream stops quantizing every later layer of that type); one whose
  ``<layer>_param_0`` line is present but its blob line missing is kept in float with a warning
  too (upstream: silently);
* ModelWriter keys it does not know are kept (upstream drops them, e.g. Reshape ``12=0``);
* a table naming layers the model lacks, or with the wrong number of weight scales, is refused;
* a layer that already has int8 weights (a converted model converted again) is left as is with a
  warning (upstream would quantize the int8 codes again as if they were float weights);
* Embed/MHA/RNN/LSTM/GRU layers listed in ``keep_fp32`` do not need a table;
* Gemm's constant-B scale is ``127/absmax`` over the whole of B.  Upstream's loop (as read in
  ncnn2int8.cpp at a4d2ea1, the reference tools' commit) runs over ``B_data.w``,
  which for a model stored with ``transB=1`` (pnnx's Linear/matmul form, B loaded as a 2-D
  ``K x N`` Mat) is only the first row of B, so larger rows saturate at +-127;
* fp16 of a still-float weight rounds its last ``n % 4`` values too (the reference ncnn2int8's
  scalar converter truncates them; pip ncnn 1.0.20261020 rounds);
* a weight whose ``w * s`` is out of int32 range (an ``inf`` or absurd scale) saturates to
  ``+-127`` by its sign (upstream: ``-127`` whatever the sign);
* a Gemm A row or B whose absmax is denormal gets scale 1 and a warning (upstream: ``inf``).

``ncnn_compat=True`` (``quantize --ncnn-compat``) turns off the numeric differences so the
``.bin`` is ncnn2int8's (1.0.20260722) byte for byte: the ``transB=1`` Gemm B scale from the
first row only, the fp16 scalar tail truncated (:mod:`edgecal.ncnnfmt.half`), ``-127`` for
every weight whose ``w * s`` is out of int32 range, e.g. under an ``inf`` scale
(:mod:`edgecal.int8.quantize`), ``inf`` Gemm A/B scales for denormal rows, and a missing
``<layer>_param_N`` line leaving every later layer of that type in float.  The other items
above stay: they refuse or keep as is what upstream would silently break.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgecal.calib.table import (
    CalibrationTable,
    is_weight_key,
    refuse_unusable_scales,
    weight_key,
)
from edgecal.calib.weights import CALIBRATED_TYPES, STATIC_TYPES
from edgecal.errors import ConversionError, TableError
from edgecal.int8.fusion import fuse_requantize
from edgecal.int8.quantize import absmax_scales, quantize_rows, quantize_tensor
from edgecal.ncnnfmt.modelbin import LayerWeights, WeightRecord, encode_record, ncnn_half
from edgecal.ncnnfmt.modelwriter import modelwriter_params
from edgecal.ncnnfmt.param import Layer, ParamFile, int_value, render_param
from edgecal.ncnnfmt.weightspec import record_specs


@dataclass
class ConversionReport:
    quantized: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    fused: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _State:
    def __init__(
        self, layers: list[Layer], weights: dict[str, LayerWeights], ncnn_compat: bool
    ) -> None:
        self.layers = layers
        self.weights = weights
        self.compat = ncnn_compat
        # ncnn_compat: types whose upstream quantize_<type>() loop returned at a missing key
        self.stopped: set[str] = set()
        self.int8: set[str] = set()
        self.bottom_scales: dict[str, np.ndarray] = {}
        self.report = ConversionReport()

    def rec(self, layer: Layer, name: str) -> WeightRecord:
        try:
            return self.weights[layer.name][name]
        except KeyError:
            raise ConversionError(f"layer {layer.name!r} has no {name!r} weights") from None

    def put(self, layer: Layer, name: str, values: np.ndarray, storage: str) -> None:
        self.weights.setdefault(layer.name, {})[name] = WeightRecord(name, storage, values)

    def put_i8(self, layer: Layer, name: str, codes: np.ndarray) -> None:
        self.put(layer, name, codes.reshape(-1).astype(np.int8), "i8")

    def rows(self, weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
        return quantize_rows(weights, scales, ncnn_compat=self.compat)

    def tensor(self, weights: np.ndarray, scale: float) -> np.ndarray:
        return quantize_tensor(weights, scale, ncnn_compat=self.compat)

    def put_raw(self, layer: Layer, name: str, values: np.ndarray) -> None:
        self.put(layer, name, np.asarray(values, dtype=np.float32).reshape(-1), "raw")


def _check_table(pf: ParamFile, table: CalibrationTable) -> None:
    names = {layer.name for layer in pf.layers}
    missing = []
    for key in table:
        owner = key.rsplit("_param_", 1)[0] if is_weight_key(key) else key
        if owner not in names and owner not in missing:
            missing.append(owner)
    if missing:
        raise TableError(
            f"the calibration table names {len(missing)} layer(s) the model does not have: "
            + ", ".join(missing),
            hint="the table was made for another model",
        )


def used_table_keys(table: CalibrationTable, quantized: Sequence[str]) -> list[str]:
    """The table records a conversion that quantized ``quantized`` read, in table order."""
    owners = set(quantized)
    return [k for k in table if (k.rsplit("_param_", 1)[0] if is_weight_key(k) else k) in owners]


def _scales(table: CalibrationTable, layer: Layer, index: int, expected: int) -> np.ndarray | None:
    values = table.weight_scales(layer.name, index)
    if values is None:
        return None
    if values.size != expected:
        raise TableError(
            f"table key {weight_key(layer.name, index)!r} has {values.size} weight scales but "
            f"layer {layer.name!r} ({layer.type}) needs {expected}",
            hint="the table was made for another model",
        )
    return values.astype(np.float32)


def _quantize_calibrated(
    st: _State, layer: Layer, table: CalibrationTable | None, keep: set[str]
) -> None:
    name = layer.name
    if table is None or name in keep or layer.type in st.stopped:
        st.report.kept_float.append(name)
        return
    blob = table.get(name)
    if blob is None:
        if table.weight_scales(name) is not None:  # both lines missing: float on purpose
            st.report.warnings.append(_missing_blob_warning(table, layer))
        st.report.kept_float.append(name)
        return
    if blob.size != 1:
        raise TableError(
            f"table line {name!r} has {blob.size} values, a blob scale needs exactly 1"
        )
    weight = st.rec(layer, "weight") if name in st.weights else None
    if weight is None or layer.param_int(8, 0) or weight.storage == "i8":
        st.report.warnings.append(
            f"layer {name!r} has no float weights or is already int8; left as is"
        )
        st.report.kept_float.append(name)
        return
    if layer.type == "ConvolutionDepthWise":
        groups = layer.param_int(7, 1)
    else:
        groups = layer.param_int(0, 0)
    scales = _scales(table, layer, 0, groups)
    if scales is None:
        st.report.warnings.append(_missing_key_warning(st, layer, weight_key(name), table))
        st.report.kept_float.append(name)
        return
    w = weight.values.astype(np.float32)
    if groups <= 0 or w.size % groups:
        raise ConversionError(f"layer {name!r}: {w.size} weights do not split into {groups} rows")
    st.put_i8(layer, "weight", st.rows(w.reshape(groups, -1), scales))
    st.put_raw(layer, "weight_scales", scales)
    st.put_raw(layer, "bottom_scale", blob)
    layer.set_param(8, int_value(1 if layer.type == "ConvolutionDepthWise" else 2))
    st.int8.add(name)
    st.bottom_scales[name] = blob.astype(np.float32)
    st.report.quantized.append(name)


def _in_table(table: CalibrationTable | None) -> str:
    """``"in table FILE"`` for a table read from a file, else ``"in the table"``."""
    return f"in table {table.source}" if table is not None and table.source else "in the table"


def _missing_key_warning(st: _State, layer: Layer, key: str, table: CalibrationTable | None) -> str:
    """Warn about a missing weight-scale line; in compat mode stop the type like upstream."""
    upstream = (
        "ncnn2int8 prints 'this layer need to be quantized, but no scale param!' and leaves "
        f"every later {layer.type} unquantized"
    )
    where = f"layer {layer.name!r}: no {key!r} line {_in_table(table)}"
    if st.compat:
        st.stopped.add(layer.type)
        return f"{where}; as {upstream} (--ncnn-compat)"
    return f"{where}; kept in float ({upstream})"


def _missing_blob_warning(table: CalibrationTable, layer: Layer) -> str:
    """Warn about a layer whose weight-scale line is in the table but its input blob scale
    line is not (ncnn2int8 too keeps it in float, silently)."""
    return (
        f"layer {layer.name!r}: no {layer.name!r} line (its input blob scale) "
        f"{_in_table(table)}, though {weight_key(layer.name)!r} is there; kept in float "
        f"(add the line from the table calibrate wrote, or drop {weight_key(layer.name)!r} "
        "to keep the layer in float on purpose)"
    )


def _rnn_rows(layer: Layer) -> tuple[int, int]:
    """(rows of weight_xc/weight_hc, hc row length) for RNN/LSTM/GRU."""
    dirs = 2 if layer.param_int(2, 0) == 2 else 1
    n = layer.param_int(0, 0)
    if layer.type == "RNN":
        return n * dirs, n
    if layer.type == "LSTM":
        return layer.param_int(3, n) * 4 * dirs, n
    return n * 3 * dirs, n


def _quantize_static(st: _State, layer: Layer, table: CalibrationTable) -> bool:
    """Embed/MHA/RNN/LSTM/GRU with the table's static weight scales; False if keys missing."""
    t = layer.type
    if t == "Embed":
        s = _scales(table, layer, 0, 1)
        if s is None:
            return False
        st.put_i8(layer, "weight", st.tensor(st.rec(layer, "weight").values, float(s[0])))
        st.put_raw(layer, "weight_scales", s)
        layer.set_param(18, int_value(2))
        return True
    if t == "MultiHeadAttention":
        e = layer.param_int(0, 0)
        found = [_scales(table, layer, i, n) for i, n in enumerate((e, e, e, 1))]
        parts = [p for p in found if p is not None]
        if len(parts) < len(found):
            return False
        for (wname, sname), s in zip(
            (
                ("q_weight", "q_weight_scales"),
                ("k_weight", "k_weight_scales"),
                ("v_weight", "v_weight_scales"),
                ("out_weight", "out_weight_scales"),
            ),
            parts,
            strict=True,
        ):
            w = st.rec(layer, wname).values
            codes = (
                st.tensor(w, float(s[0]))
                if sname == "out_weight_scales"
                else st.rows(
                    w.reshape(e, -1),
                    s,
                )
            )
            st.put_i8(layer, wname, codes)
            st.put_raw(layer, sname, s)
        layer.set_param(18, int_value(2))
        return True
    rows, hc_len = _rnn_rows(layer)
    sxc, shc = _scales(table, layer, 0, rows), _scales(table, layer, 1, rows)
    if sxc is None or shc is None:
        return False
    st.put_i8(layer, "weight_xc", st.rows(st.rec(layer, "weight_xc").values.reshape(rows, -1), sxc))
    st.put_i8(
        layer,
        "weight_hc",
        st.rows(st.rec(layer, "weight_hc").values.reshape(rows, hc_len), shc),
    )
    st.put_raw(layer, "weight_xc_scales", sxc)
    st.put_raw(layer, "weight_hc_scales", shc)
    layer.set_param(8, int_value(2))
    return True


_FLAG_KEY = {"RNN": 8, "LSTM": 8, "GRU": 8, "Embed": 18, "MultiHeadAttention": 18, "Gemm": 18}


def _already_int8(st: _State, layer: Layer) -> bool:
    """The layer already carries int8 weights (e.g. a converted model converted again).

    Quantizing again would treat the int8 codes as float weights and silently corrupt them.
    """
    if layer.param_int(_FLAG_KEY.get(layer.type, 18), 0):
        return True
    return any(rec.storage == "i8" for rec in st.weights.get(layer.name, {}).values())


def _quantize_gemm(st: _State, layer: Layer) -> None:
    m, n, k = layer.param_int(7, 0), layer.param_int(8, 0), layer.param_int(9, 0)
    if layer.param_int(4, 0) == 1:
        a = st.rec(layer, "A").values.astype(np.float32)
        a = a.reshape(k, m).T.copy() if layer.param_int(2, 0) == 1 else a.reshape(m, k)
        layer.set_param(2, int_value(0))
        scales = absmax_scales(a, ncnn_compat=st.compat)
        _warn_denormal_rows(st, layer, "A row", a, scales)
        st.put_i8(layer, "A", st.rows(a, scales))
        st.put_raw(layer, "A_scales", scales)
    if layer.param_int(5, 0) == 1:
        b = st.rec(layer, "B").values.astype(np.float32)
        stored_trans_b = layer.param_int(3, 0) == 1
        b = b.reshape(n, k) if stored_trans_b else b.reshape(k, n).T.copy()
        layer.set_param(3, int_value(1))
        # ncnn2int8 takes absmax over B_data.w: K (one row) for a B loaded as transB=1.
        scanned = b[:1] if st.compat and stored_trans_b else b
        scale = absmax_scales(scanned.reshape(1, -1), ncnn_compat=st.compat)
        _warn_denormal_rows(st, layer, "B", scanned.reshape(1, -1), scale)
        st.put_i8(layer, "B", st.tensor(b, float(scale[0])))
        st.put_raw(layer, "B_scale", scale)
    layer.set_param(18, int_value(2))


def _warn_denormal_rows(
    st: _State, layer: Layer, what: str, rows: np.ndarray, scales: np.ndarray
) -> None:
    a = np.fmax.reduce(np.abs(rows.astype(np.float32)), axis=1)
    with np.errstate(divide="ignore", over="ignore"):
        tiny = np.flatnonzero((a > 0) & ~np.isfinite(np.float32(127) / a))
    for i in tiny.tolist():
        label = what if rows.shape[0] == 1 else f"{what} {i}"
        st.report.warnings.append(
            f"layer {layer.name!r} (Gemm): {label} weights are all below 1e-30 (denormal, "
            f"largest |w| = {float(a[i]):.3g}); scale {float(scales[i]):g}"
            + (" as ncnn2int8 writes it" if st.compat else ", so they quantize to 0")
        )


def _flush_denormals(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32).copy()
    tiny = (np.abs(v).astype(np.float64) < 1e-30) & (v != 0)
    v[tiny] = 0
    return v


def _write_layer(layer: Layer, recs: LayerWeights, ncnn_compat: bool) -> bytes:
    chunks = []
    for spec in record_specs(layer):
        rec = recs.get(spec.name)
        if rec is None:
            raise ConversionError(f"layer {layer.name!r}: no {spec.name!r} record to write")
        if spec.tagged:
            out = (
                rec
                if rec.storage == "i8"
                else WeightRecord(rec.name, "f16", ncnn_half(rec.values, ncnn_compat=ncnn_compat))
            )
        else:
            out = WeightRecord(rec.name, "raw", _flush_denormals(rec.values))
        if out.values.size != spec.count:
            raise ConversionError(
                f"layer {layer.name!r}: {spec.name} has {out.values.size} values, "
                f"the params say {spec.count}"
            )
        chunks.append(encode_record(out))
    return b"".join(chunks)


@dataclass(frozen=True)
class QuantizedModel:
    """A converted model: its layers, its ``.param`` text, each layer's bytes of its ``.bin``
    (in layer order: the file is their concatenation) and the report."""

    param: ParamFile
    param_text: str
    chunks: list[bytes]
    report: ConversionReport

    @property
    def bin_bytes(self) -> bytes:
        return b"".join(self.chunks)


def quantize_layers(
    pf: ParamFile,
    weights: dict[str, LayerWeights],
    table: CalibrationTable | None,
    keep_fp32: Sequence[str] = (),
    *,
    ncnn_compat: bool = False,
) -> QuantizedModel:
    """Convert like ``ncnn2int8``.

    ``ncnn_compat``: reproduce ncnn2int8's numeric quirks too (module docstring).  This is the
    one switch for them; checks that refuse a table upstream would accept belong next to
    ``_check_table`` below and are skipped when it is set: a table whose records used by the
    conversion hold a scale that is zero, negative, NaN or inf is refused
    (:func:`refuse_unusable_scales`) unless it is set, and then converted as ncnn2int8 does.
    """
    names = [layer.name for layer in pf.layers]
    unknown = [k for k in keep_fp32 if k not in names]
    if unknown:
        raise ConversionError(
            "keep_fp32 names layers the model does not have: " + ", ".join(unknown)
        )
    keep = set(keep_fp32)
    if table is not None:
        _check_table(pf, table)
    layers = [layer.copy() for layer in pf.layers]
    st = _State(layers, {k: dict(v) for k, v in weights.items()}, ncnn_compat)

    for ltype in CALIBRATED_TYPES:
        for layer in layers:
            if layer.type == ltype:
                _quantize_calibrated(st, layer, table, keep)

    static = [
        layer
        for layer in layers
        if layer.type in STATIC_TYPES and layer.name not in keep and not _already_int8(st, layer)
    ]
    if static and table is None:
        raise ConversionError(
            "calibration table is required for static weight quantization of "
            + ", ".join(f"{layer.name} ({layer.type})" for layer in static)
        )
    for ltype in ("RNN", "LSTM", "GRU", "Embed", "Gemm", "MultiHeadAttention", "SDPA"):
        for layer in layers:
            if layer.type != ltype:
                continue
            if layer.name in keep or ltype in st.stopped:
                st.report.kept_float.append(layer.name)
            elif ltype != "SDPA" and _already_int8(st, layer):
                st.report.warnings.append(
                    f"layer {layer.name!r} ({ltype}) is already int8; left as is"
                )
                st.report.kept_float.append(layer.name)
            elif ltype == "Gemm":
                _quantize_gemm(st, layer)
                st.report.quantized.append(layer.name)
            elif ltype == "SDPA":
                layer.set_param(18, int_value(2))
                st.report.quantized.append(layer.name)
            elif _quantize_static(st, layer, table):  # type: ignore[arg-type]
                st.report.quantized.append(layer.name)
            else:
                st.report.warnings.append(
                    _missing_key_warning(st, layer, f"{layer.name}_param_*", table)
                )
                st.report.kept_float.append(layer.name)

    if table is not None and not ncnn_compat:
        refuse_unusable_scales(table, used_table_keys(table, st.report.quantized))
    for producer, consumer, top in fuse_requantize(layers, st.int8, st.bottom_scales):
        st.put_raw(layers[names.index(producer)], "top_scale", top)
        st.report.fused.append((producer, consumer))

    out_layers = [modelwriter_params(layer) for layer in layers]
    blob_count = len({b for layer in out_layers for b in (*layer.bottoms, *layer.tops)})
    pf_out = ParamFile(out_layers, blob_count)
    chunks = [
        _write_layer(layer, st.weights.get(layer.name, {}), ncnn_compat) for layer in out_layers
    ]
    return QuantizedModel(pf_out, render_param(pf_out), chunks, st.report)


def quantize_model(
    pf: ParamFile,
    weights: dict[str, LayerWeights],
    table: CalibrationTable | None,
    keep_fp32: Sequence[str] = (),
    *,
    ncnn_compat: bool = False,
) -> tuple[str, bytes, ConversionReport]:
    """Convert like ``ncnn2int8`` (:func:`quantize_layers`); returns the new ``.param`` text,
    ``.bin`` bytes and a report."""
    q = quantize_layers(pf, weights, table, keep_fp32, ncnn_compat=ncnn_compat)
    return q.param_text, q.bin_bytes, q.report
