"""The three reference cases (tests/data/reference) as typed, ready-to-shard samples."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgecal.device.base import Device, Progress
from edgecal.device.capture import (
    Workload,
    absmax_request,
    histogram_request,
    parse_absmax,
    parse_histograms,
)
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
    return [
        folder / line.split()[0]
        for line in (folder / name).read_text().splitlines()
        if line.strip()
    ]


def load_case(name: str) -> Case:
    folder = REFERENCE / name
    cross = json.loads((REFERENCE / "crosscheck.json").read_text())[name]
    layers = tuple(cross)
    blobs = tuple(cross[layer]["bottom_blob"] for layer in layers)
    if name == "digits":
        specs: tuple[InputSpec, ...] = (
            InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32)),
        )
        samples = tuple((read_bgr(p),) for p in _list(folder, "images.txt"))
    elif name == "npy":
        specs = (InputSpec("in0", "npy", shape=(10, 6, 3)),)
        samples = tuple(
            (np.load(p, allow_pickle=False).astype(np.float32),)
            for p in _list(folder, "samples.txt")
        )
    elif name == "multi":
        specs = (
            InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32)),
            InputSpec("in1", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (16, 16)),
        )
        samples = tuple(
            (read_bgr(a), read_bgr(b))
            for a, b in zip(_list(folder, "list_a.txt"), _list(folder, "list_b.txt"), strict=True)
        )
    else:
        raise ValueError(name)
    return Case(name, folder / "model.param", folder / "model.bin", specs, samples, layers, blobs)


# -- the two capture passes, one job each, composed as the calibration pipeline composes them --
def capture_absmax(
    device: Device,
    param: Path,
    bin: Path,
    specs: Sequence[InputSpec],
    shards: Sequence[Path],
    blobs: Sequence[str],
    *,
    progress: Progress | None = None,
) -> dict[str, tuple[np.float32, int]]:
    """Pass 1: per blob ``(absmax, elements_per_sample)`` over every sample of the shards."""
    params = absmax_request(device, Workload(param, bin, specs, shards, blobs))
    return parse_absmax(device, device.run_job("absmax", params, progress=progress), blobs)


def capture_histograms(
    device: Device,
    param: Path,
    bin: Path,
    specs: Sequence[InputSpec],
    shards: Sequence[Path],
    blobs: Sequence[str],
    absmax: Mapping[str, float],
) -> dict[str, np.ndarray]:
    """Pass 2: per blob the uint64 ``[2048]`` histogram of ``|x|`` over ``[0, absmax]``."""
    params = histogram_request(device, Workload(param, bin, specs, shards, blobs), absmax)
    return parse_histograms(device, device.run_job("histogram", params), blobs)
