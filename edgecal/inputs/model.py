"""Loading an ncnn model pair from disk into the pure format objects, with clear errors."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from edgecal.calib.weights import CALIBRATED_TYPES
from edgecal.errors import ModelFormatError, UsageError
from edgecal.files.userfile import path_text, read_bytes
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


def model_file(value: object, name: str) -> Path:
    """``value`` (the argument ``name``) as a path (:func:`~edgecal.files.userfile.path_text`:
    a ``str``, ``os.PathLike`` or ``bytes``) naming a file, else a :class:`UsageError` naming
    ``name``."""
    text = path_text(value, name)
    if not text:
        raise UsageError(f"{name}: an empty file name", hint=f"give {name} the model file's path")
    return Path(text)


def load_model(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str]) -> Model:
    """The ncnn model of ``param_path`` and ``bin_path`` (``str`` or ``os.PathLike``), read and
    checked."""
    param_p, bin_p = model_file(param_path, "param_path"), model_file(bin_path, "bin_path")
    param_bytes = read_bytes(param_p, "param file")
    bin_bytes = read_bytes(bin_p, "bin file")
    try:
        text = param_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(
            f"{param_p} is not a text .param file",
            hint="pass the .param first and the .bin second",
        ) from None
    param = parse_param(text, source=str(param_p))
    try:
        weights = read_modelbin(param, bin_bytes, source=str(bin_p))
    except ModelFormatError as exc:
        if str(bin_p) in exc.message or str(param_p) in exc.message:
            raise
        raise type(exc)(f"{param_p}: {exc.message}", hint=exc.hint) from None
    return Model(
        param_path=param_p,
        bin_path=bin_p,
        param=param,
        weights=weights,
        param_sha256=hashlib.sha256(param_bytes).hexdigest(),
        bin_sha256=hashlib.sha256(bin_bytes).hexdigest(),
    )
