"""Tables without a device: from saved histograms (:func:`table_from_histograms`, any method
that needs no device) or from the weights alone (:func:`weight_table`, ncnn2table without a
list)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal.api.samples import ModelArg, resolve_model
from edgecal.calib.build import TableBuild, build_table
from edgecal.calib.methods import METHODS, Method, parse_method
from edgecal.calib.table import CalibrationTable, render_table
from edgecal.errors import UsageError
from edgecal.files.outputs import Output, check_outputs, input_paths, write_outputs
from edgecal.inputs.arguments import model_arg, optional_path_arg, path_arg
from edgecal.inputs.model import load_model
from edgecal.runs.histfile import load_histograms
from edgecal.workflows.calibrate import table_from_histograms as thresholds_of


@dataclass
class HistogramTable:
    """A table made from saved histograms (:func:`table_from_histograms`)."""

    table: CalibrationTable
    build: TableBuild
    method: str
    table_path: str | None

    @property
    def warnings(self) -> list[str]:
        return list(self.build.warnings)

    def to_dict(self) -> dict[str, Any]:
        """The method, the table written (None: only returned), the warnings and per layer
        abs-max, threshold and scale (with every histogram rule's threshold), as
        :meth:`edgecal.Calibration.to_dict` has them."""
        return {
            "method": self.method,
            "table": self.table_path,
            "warnings": self.warnings,
            "layers": [i.to_dict() for i in self.build.per_layer],
        }


def table_from_histograms(
    histograms: str | os.PathLike[str],
    *,
    method: str | Method = Method.KL,
    param: str | os.PathLike[str] | None = None,
    bin: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> HistogramTable:
    """The table ``method`` gives from a histogram file (``calibrate(histograms_out=...)``),
    without a device; the model defaults to the one the file names."""
    hist_path = path_arg(histograms, "histograms")
    param_s, bin_s = optional_path_arg(param, "param"), optional_path_arg(bin, "bin")
    out_s = optional_path_arg(out, "out")
    hs = load_histograms(Path(hist_path))
    param_p = Path(param_s if param_s else hs.meta.get("param", ""))
    bin_p = Path(bin_s if bin_s else hs.meta.get("bin", ""))
    if out_s is not None:
        check_outputs(
            [Output("--out", out_s, text=True)],
            [
                *input_paths("histograms", [hist_path]),
                *input_paths("param", [param_p]),
                *input_paths("bin", [bin_p]),
            ],
        )
    model = load_model(param_p, bin_p)
    if (model.param_sha256, model.bin_sha256) != (
        hs.meta.get("param_sha256"),
        hs.meta.get("bin_sha256"),
    ):
        raise UsageError(
            f"{hist_path} was measured on another model than {param_p} / {bin_p}",
            hint="pass --param/--bin of the model the histograms were measured on",
        )
    m = parse_method(method)
    if METHODS[m].needs_device:
        raise UsageError(
            f"method {m.value} needs the device", hint=f"use 'edgecal calibrate --method {m.value}'"
        )
    build = thresholds_of(model, hs, m)
    if out_s is not None:
        write_outputs([(Path(out_s), render_table(build.table).encode())])
    return HistogramTable(build.table, build, m.value, out_s)


def weight_table(
    model: ModelArg, *, method: str | Method = Method.KL, out: str | os.PathLike[str] | None = None
) -> TableBuild:
    """The weight-only table (no samples: weight scales, no activation scales), as
    ncnn2table writes without a list."""
    model, out_s = model_arg(model), optional_path_arg(out, "out")
    loaded = resolve_model(model)
    layers = [(layer, loaded.weights.get(layer.name, {})) for layer in loaded.param.layers]
    build = build_table(layers, None, parse_method(method))
    if out_s is not None:
        write_outputs([(Path(out_s), render_table(build.table).encode())])
    return build
