"""Merged calibration statistics on disk: a versioned ``.npz``, loaded without pickle.

Layout (schema 1): ``schema`` int64 scalar, ``layers`` and ``blobs`` unicode arrays (the layer
whose input blob was measured, and that blob), ``absmax`` float32 ``[n]``,
``elements_per_sample`` int64 ``[n]``, ``counts`` uint64 ``[n, 2048]`` and ``meta`` (a JSON
string: the model files and their sha256, runtime, device, sample count).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecal.calib.histogram import NUM_BINS, BlobHistogram
from edgecal.errors import HistogramFileError
from edgecal.files.atomic import write_bytes_atomic
from edgecal_agent.npzio import NpzArchive, load_npz

HISTOGRAM_SCHEMA = 1
_KEYS = ("schema", "layers", "blobs", "absmax", "elements_per_sample", "counts", "meta")


@dataclass
class HistogramSet:
    """Per calibrated layer (keyed by layer name, as the table is): its input blob's statistics."""

    blobs: dict[str, str]  # layer -> blob
    stats: dict[str, BlobHistogram]  # layer -> histogram
    meta: dict[str, Any] = field(default_factory=dict)


def histograms_to_bytes(hs: HistogramSet) -> bytes:
    layers = list(hs.stats)
    buf = io.BytesIO()
    np.savez(
        buf,
        schema=np.int64(HISTOGRAM_SCHEMA),
        layers=np.array(layers, dtype=np.str_),
        blobs=np.array([hs.blobs[k] for k in layers], dtype=np.str_),
        absmax=np.array([hs.stats[k].absmax for k in layers], dtype=np.float32),
        elements_per_sample=np.array(
            [hs.stats[k].elements_per_sample for k in layers], dtype=np.int64
        ),
        counts=np.stack([hs.stats[k].counts for k in layers]).astype(np.uint64)
        if layers
        else np.zeros((0, NUM_BINS), np.uint64),
        meta=np.array(json.dumps(hs.meta, sort_keys=True)),
    )
    return buf.getvalue()


def save_histograms(path: Path, hs: HistogramSet) -> None:
    write_bytes_atomic(path, histograms_to_bytes(hs))


def _member(z: NpzArchive, key: str, kinds: str, ndim: int, path: Path) -> np.ndarray:
    """Member ``key``: an array of ``ndim`` dimensions whose dtype kind is one of ``kinds``."""
    arr = z[key]
    if arr.ndim != ndim or (arr.size and arr.dtype.kind not in kinds):
        raise HistogramFileError(
            f"{path}: member {key!r} is {arr.dtype.str} {arr.shape}, not what this schema holds"
        )
    return arr


def load_histograms(path: Path) -> HistogramSet:
    try:
        with load_npz(path) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise HistogramFileError(
                    f"{path} is not an edgecal histogram file (missing {', '.join(missing)})",
                    hint="write one with 'edgecal calibrate --histograms-out FILE'",
                )
            schema = int(_member(z, "schema", "iu", 0, path))
            if schema != HISTOGRAM_SCHEMA:
                raise HistogramFileError(
                    f"{path} has histogram schema {schema}; this edgecal reads schema "
                    f"{HISTOGRAM_SCHEMA}",
                    hint="re-run 'edgecal calibrate' with this edgecal version",
                )
            layers = [str(x) for x in _member(z, "layers", "U", 1, path)]
            blobs = [str(x) for x in _member(z, "blobs", "U", 1, path)]
            with np.errstate(over="ignore"):  # beyond float32: inf, refused below
                absmax = _member(z, "absmax", "fiu", 1, path).astype(np.float32)
            eps = _member(z, "elements_per_sample", "iu", 1, path).astype(np.int64)
            counts = _member(z, "counts", "iu", 2, path)
            if counts.size and counts.dtype.kind == "i" and counts.min() < 0:
                raise HistogramFileError(f"{path}: negative histogram counts")
            counts = counts.astype(np.uint64)
            meta = json.loads(str(_member(z, "meta", "U", 0, path)))
    except HistogramFileError:
        raise
    except FileNotFoundError:
        raise HistogramFileError(f"histogram file {path} does not exist") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: ProtocolViolation, JSON
        raise HistogramFileError(f"{path} is not a readable histogram file ({exc})") from None
    n = len(layers)
    if not (len(blobs) == n == absmax.shape[0] == eps.shape[0] and counts.shape == (n, NUM_BINS)):
        raise HistogramFileError(f"{path}: array sizes do not agree ({n} layers)")
    if len(set(layers)) != n:
        raise HistogramFileError(f"{path}: a layer is listed twice")
    bad = [i for i in range(n) if not (np.isfinite(absmax[i]) and absmax[i] >= 0)]
    if bad:
        more = f", and {len(bad) - 1} more layer(s)" if len(bad) > 1 else ""
        raise HistogramFileError(
            f"{path}: the input blob absmax of layer {layers[bad[0]]} is "
            f"{float(absmax[bad[0]])!r}, not a finite value >= 0{more}",
            hint="the file is damaged: write it again with 'edgecal calibrate "
            "--histograms-out FILE'",
        )
    stats = {
        layer: BlobHistogram(
            counts=counts[i].copy(), absmax=np.float32(absmax[i]), elements_per_sample=int(eps[i])
        )
        for i, layer in enumerate(layers)
    }
    return HistogramSet(blobs=dict(zip(layers, blobs, strict=True)), stats=stats, meta=meta)
