"""edgecal: ncnn int8 calibration, conversion and validation, run where the model runs.

The public Python API (README: "Python API") is re-exported here and imported on first use, so
``import edgecal`` stays light and no layer below the API imports it::

    import edgecal

    digits = edgecal.ImageInput("calib.txt", pixel="RGB", mean=(127.5,) * 3)
    cal = edgecal.calibrate(("model.param", "model.bin"), digits, out="model.table")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Exported name -> the module that defines it.  Few and stable: what a user calls, the values
#: they pass and the results they get back.
_EXPORTS = {
    "calibrate": "edgecal.api.calibrate",
    "resume": "edgecal.api.calibrate",
    "table_from_histograms": "edgecal.api.table",
    "Calibration": "edgecal.api.calibrate",
    "quantize": "edgecal.api.quantize",
    "Quantized": "edgecal.api.quantize",
    "validate": "edgecal.api.validate",
    "Validation": "edgecal.api.validate",
    "tune": "edgecal.api.tune",
    "Tuned": "edgecal.api.tune",
    "check": "edgecal.api.check",
    "Thresholds": "edgecal.quality.gate",
    "write_report": "edgecal.api.report",
    "open_device": "edgecal.api.boards",
    "load_model": "edgecal.inputs.model",
    "ImageInput": "edgecal.inputs.spec",
    "TensorInput": "edgecal.inputs.spec",
    "Devices": "edgecal.fleet.prepare",
    "EdgecalError": "edgecal.errors",
}

__all__ = [  # _EXPORTS' names, spelled out for linters and type checkers
    "Calibration",
    "Devices",
    "EdgecalError",
    "ImageInput",
    "Quantized",
    "TensorInput",
    "Thresholds",
    "Tuned",
    "Validation",
    "__version__",
    "calibrate",
    "check",
    "load_model",
    "open_device",
    "quantize",
    "resume",
    "table_from_histograms",
    "tune",
    "validate",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what the names are, for type checkers (the layering test allows these)
    from edgecal.api.boards import open_device
    from edgecal.api.calibrate import Calibration, calibrate, resume
    from edgecal.api.check import check
    from edgecal.api.quantize import Quantized, quantize
    from edgecal.api.report import write_report
    from edgecal.api.table import table_from_histograms
    from edgecal.api.tune import Tuned, tune
    from edgecal.api.validate import Validation, validate
    from edgecal.errors import EdgecalError
    from edgecal.fleet.prepare import Devices
    from edgecal.inputs.model import load_model
    from edgecal.inputs.spec import ImageInput, TensorInput
    from edgecal.quality.gate import Thresholds
