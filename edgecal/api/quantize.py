"""Quantize: a model and a calibration table in, the int8 model out (what ncnn2int8 does)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecal.api.samples import ModelArg, model_inputs, resolve_model
from edgecal.calib.table import CalibrationTable, parse_table
from edgecal.errors import TableError
from edgecal.files.outputs import Output, check_outputs, input_paths, write_outputs
from edgecal.files.userfile import read_text
from edgecal.inputs.arguments import model_arg, names_arg, optional_path_arg, path_arg


@dataclass
class Quantized:
    """The int8 model written: which layers are int8, kept in float, fused.
    :meth:`to_dict` is ``edgecal quantize --json``."""

    param: str
    bin: str
    quantized: list[str]
    kept_float: list[str]
    fused: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_table(path: str | os.PathLike[str]) -> CalibrationTable:
    """A calibration table file (of edgecal or ncnn2table); one without a single scale line
    (empty, or only comments and blank lines) is refused: every layer would silently stay in
    float."""
    p = Path(os.fspath(path))
    table = parse_table(read_text(p, "table"), source=str(p))
    if not table:
        raise TableError(
            f"table {p} has no scale lines (it is empty, or holds only comments and blank "
            "lines): no layer could be quantized",
            hint="give the table edgecal calibrate (or ncnn2table) wrote for this model",
        )
    return table


def quantize(
    model: ModelArg,
    out_param: str | os.PathLike[str],
    out_bin: str | os.PathLike[str],
    *,
    table: str | os.PathLike[str] | None,
    keep_fp32: Sequence[str] = (),
    ncnn_compat: bool = False,
) -> Quantized:
    """Write the int8 model of ``model`` (loaded, or its ``(param, bin)``) with ``table``'s
    scales.  ``table=None`` is ncnn2int8 without a table (weights stored as fp16, only Gemm
    and SDPA quantized);
    ``keep_fp32``: layers kept in float; ``ncnn_compat``: ncnn2int8's exact bytes, its quirks
    included (README: "What is exact")."""
    from edgecal.int8.convert import quantize_model

    model, keep_fp32 = model_arg(model), names_arg(keep_fp32, "keep_fp32")
    param_s, bin_s = path_arg(out_param, "out_param"), path_arg(out_bin, "out_bin")
    o_param, o_bin = Path(param_s), Path(bin_s)
    table_s = optional_path_arg(table, "table")
    table_path = None if table_s is None else Path(table_s)
    check_outputs(
        [Output("output .param", param_s), Output("output .bin", bin_s)],
        [*model_inputs(model, "input"), *input_paths("table", [table_path])],
    )
    loaded = resolve_model(model)
    scales = None if table_path is None else read_table(table_path)
    try:
        text, data, report = quantize_model(
            loaded.param, loaded.weights, scales, keep_fp32=keep_fp32, ncnn_compat=ncnn_compat
        )
    except TableError as exc:
        raise TableError(f"{table_path}: {exc.message}", hint=exc.hint) from None
    write_outputs([(o_param, text.encode()), (o_bin, data)])
    return Quantized(
        param_s,
        bin_s,
        report.quantized,
        report.kept_float,
        report.fused,
        report.warnings,
    )
