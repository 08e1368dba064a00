"""The three reference cases (tests/data/reference) as typed, ready-to-shard samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgecal.inputs.spec import InputSpec

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


def read_bgr(path: Path) -> np.ndarray:
    """What cv::imread(path, 1) gives for these lossless PNGs: uint8 (rows, cols, 3) BGR."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


@dataclass(frozen=True)
class Case:
    name: str
    param: Path
    bin: Path
    specs: tuple[InputSpec, ...]
    samples: tuple[tuple[np.ndarray, ...], ...]
    layers: tuple[str, ...]  # calibrated layers, in order
    blobs: tuple[str, ...]  # their bottom blobs


def _list(folder: Path, name: str) -> list[Path]:
    return [folder / line.split()[0] for line in (folder / name).read_text().splitlines()
            if line.strip()]


def load_case(name: str) -> Case:
    folder = REFERENCE / name
    cross = json.loads((REFERENCE / "crosscheck.json").read_text())[name]
    layers = tuple(cross)
    blobs = tuple(cross[layer]["bottom_blob"] for layer in layers)
    if name == "digits":
        specs: tuple[InputSpec, ...] = (
            InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32)),)
        samples = tuple((read_bgr(p),) for p in _list(folder, "images.txt"))
    elif name == "npy":
        specs = (InputSpec("in0", "npy", shape=(10, 6, 3)),)
        samples = tuple((np.load(p, allow_pickle=False).astype(np.float32),)
                        for p in _list(folder, "samples.txt"))
    elif name == "multi":
        specs = (
            InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32)),
            InputSpec("in1", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (16, 16)),
        )
        samples = tuple((read_bgr(a), read_bgr(b)) for a, b in
                        zip(_list(folder, "list_a.txt"), _list(folder, "list_b.txt"),
                            strict=True))
    else:
        raise ValueError(name)
    return Case(name, folder / "model.param", folder / "model.bin", specs, samples, layers,
                blobs)
