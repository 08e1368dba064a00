"""Walk an ncnn ``.bin`` against its ``.param``, and write weight records back.

The ``.bin`` is a plain concatenation, in layer order, of whatever each layer's ``load_model``
reads (see :mod:`edgecal.ncnnfmt.weightspec`).  Tagged records start with a uint32 storage tag:

=============  ==========================================================
``0x00000000`` float32
``0x01306B47`` float16, padded to 4 bytes
``0x000D4B38`` int8, padded to 4 bytes
``0x0002C056`` float32 ("raw with extra scaling", read as plain float32)
other          legacy codebook: 256 float32, then n uint8 indices padded to 4
=============  ==========================================================
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgecal.errors import ModelFormatError
from edgecal.ncnnfmt.half import float16_bits_to_float32, float32_to_float16_bits
from edgecal.ncnnfmt.param import ParamFile
from edgecal.ncnnfmt.weightspec import record_specs

TAG_F32 = 0x00000000
TAG_F16 = 0x01306B47
TAG_I8 = 0x000D4B38
TAG_F32_SCALED = 0x0002C056

STORAGES = ("f32", "f16", "i8", "f32_scaled", "codebook", "raw")


@dataclass
class WeightRecord:
    name: str
    storage: str  # one of STORAGES; "raw" = untagged float32
    values: np.ndarray  # float32, or int8 codes for "i8"

    @property
    def tagged(self) -> bool:
        return self.storage != "raw"


LayerWeights = dict[str, WeightRecord]


def _pad4(n: int) -> int:
    return (n + 3) & ~3


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def take(self, nbytes: int, layer: str, what: str) -> bytes:
        end = self.pos + nbytes
        if end > len(self.data):
            raise ModelFormatError(
                f"{self.source}: ran out of data in layer {layer!r} reading {what}: needs bytes "
                f"{self.pos}..{end}, file has {len(self.data)} bytes",
                hint="the .bin does not belong to this .param, or it is truncated",
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk


def _read_tagged(r: _Reader, layer: str, name: str, count: int) -> WeightRecord:
    (tag,) = struct.unpack("<I", r.take(4, layer, f"{name} tag"))
    what = f"{name} ({count} values)"
    if tag in (TAG_F32, TAG_F32_SCALED):
        vals = np.frombuffer(r.take(4 * count, layer, what), dtype="<f4").astype(np.float32)
        return WeightRecord(name, "f32" if tag == TAG_F32 else "f32_scaled", vals)
    if tag == TAG_F16:
        raw = r.take(_pad4(2 * count), layer, what)
        bits = np.frombuffer(raw[: 2 * count], dtype="<u2")
        return WeightRecord(name, "f16", float16_bits_to_float32(bits))
    if tag == TAG_I8:
        raw = r.take(_pad4(count), layer, what)
        return WeightRecord(name, "i8", np.frombuffer(raw[:count], dtype=np.int8).copy())
    table = np.frombuffer(r.take(1024, layer, f"{name} codebook"), dtype="<f4")
    idx = np.frombuffer(r.take(_pad4(count), layer, what)[:count], dtype=np.uint8)
    return WeightRecord(name, "codebook", table[idx].astype(np.float32))


def read_modelbin(pf: ParamFile, data: bytes, source: str = "<bin>") -> dict[str, LayerWeights]:
    """Decode every weight record; keyed by layer name, only layers that have weights."""
    r = _Reader(data, source)
    out: dict[str, LayerWeights] = {}
    for layer in pf.layers:
        specs = record_specs(layer)
        if not specs:
            continue
        recs: LayerWeights = {}
        for spec in specs:
            if spec.count < 0:
                raise ModelFormatError(
                    f"{source}: layer {layer.name!r}: negative size for {spec.name}"
                )
            if spec.tagged:
                rec = _read_tagged(r, layer.name, spec.name, spec.count)
            else:
                raw = r.take(4 * spec.count, layer.name, f"{spec.name} ({spec.count} float32)")
                rec = WeightRecord(
                    spec.name, "raw", np.frombuffer(raw, dtype="<f4").astype(np.float32)
                )
            recs[spec.name] = rec
        out[layer.name] = recs
    if r.pos != len(data):
        raise ModelFormatError(
            f"{source}: {len(data) - r.pos} bytes left over after the last layer: the .param "
            f"implies {r.pos} bytes, the file has {len(data)}",
            hint="the .bin does not belong to this .param",
        )
    return out


def ncnn_half(values: np.ndarray, *, ncnn_compat: bool = False) -> np.ndarray:
    """float32 values rounded to fp16 the way ncnn's x86 cast does (see :mod:`.half`)."""
    return float16_bits_to_float32(float32_to_float16_bits(values, ncnn_compat=ncnn_compat))


def encode_record(rec: WeightRecord) -> bytes:
    """One record as ncnn's ModelWriter lays it out: tag (if tagged), payload, zero pad to 4."""
    vals = np.asarray(rec.values)
    if rec.storage == "raw":
        payload = vals.astype("<f4").tobytes()
        return payload
    if rec.storage == "i8":
        payload = struct.pack("<I", TAG_I8) + vals.astype(np.int8).tobytes()
    elif rec.storage == "f16":
        # Exact for values that are already fp16 (use ncnn_half() first to emulate ncnn's cast).
        with np.errstate(over="ignore", invalid="ignore"):
            bits = vals.astype(np.float32).astype(np.float16).view(np.uint16)
        payload = struct.pack("<I", TAG_F16) + bits.astype("<u2").tobytes()
    elif rec.storage == "f32_scaled":
        payload = struct.pack("<I", TAG_F32_SCALED) + vals.astype("<f4").tobytes()
    elif rec.storage in ("f32", "codebook"):
        payload = struct.pack("<I", TAG_F32) + vals.astype("<f4").tobytes()
    else:
        raise ValueError(f"unknown storage {rec.storage!r}")
    return payload + b"\0" * (_pad4(len(payload)) - len(payload))


def write_records(records: Iterable[WeightRecord]) -> bytes:
    return b"".join(encode_record(rec) for rec in records)
