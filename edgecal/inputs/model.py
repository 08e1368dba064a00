"""Loading an ncnn model pair from disk into the pure format objects, with clear errors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgecal.calib.weights import CALIBRATED_TYPES
from edgecal.errors import ModelFormatError
from edgecal.files.userfile import read_bytes
from edgecal.ncnnfmt.modelbin import LayerWeights, read_modelbin
from edgecal.ncnnfmt.param import Layer, ParamFile, parse_param

# The layers ncnn2table calibrates (activation scale of bottoms[0] + per-channel weight scales).


@dataclass
class Model:
    param_path: Path
    bin_path: Path
    param: ParamFile
    weights: dict[str, LayerWeights]
    param_sha256: str
    bin_sha256: str

    @property
    def calibrated_layers(self) -> list[Layer]:
        return [layer for layer in self.param.layers if layer.type in CALIBRATED_TYPES]

    @property
    def input_blobs(self) -> list[str]:
        return self.param.input_blobs()

    @property
    def output_blobs(self) -> list[str]:
        consumed = {b for layer in self.param.layers for b in layer.bottoms}
        return [t for layer in self.param.layers for t in layer.tops if t not in consumed]


def load_model(param_path: Path, bin_path: Path) -> Model:
    param_bytes = read_bytes(param_path, "param file")
    bin_bytes = read_bytes(bin_path, "bin file")
    try:
        text = param_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(
            f"{param_path} is not a text .param file",
            hint="pass the .param first and the .bin second",
        ) from None
    param = parse_param(text, source=str(param_path))
    try:
        weights = read_modelbin(param, bin_bytes, source=str(bin_path))
    except ModelFormatError as exc:
        if str(bin_path) in exc.message or str(param_path) in exc.message:
            raise
        raise type(exc)(f"{param_path}: {exc.message}", hint=exc.hint) from None
    return Model(
        param_path=param_path,
        bin_path=bin_path,
        param=param,
        weights=weights,
        param_sha256=hashlib.sha256(param_bytes).hexdigest(),
        bin_sha256=hashlib.sha256(bin_bytes).hexdigest(),
    )
