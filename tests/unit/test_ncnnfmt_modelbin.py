from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from edgecal.errors import ModelFormatError, UnsupportedLayerError
from edgecal.ncnnfmt.half import float32_to_float16_bits
from edgecal.ncnnfmt.modelbin import TAG_F16, WeightRecord, read_modelbin, write_records
from edgecal.ncnnfmt.param import parse_param

REF = Path(__file__).resolve().parents[1] / "data" / "reference"


@pytest.mark.parametrize("case", ["digits", "npy", "multi"])
@pytest.mark.parametrize("stem", ["model", "int8_kl", "int8_aciq"])
def test_reference_round_trip(case: str, stem: str) -> None:
    pf = parse_param((REF / case / f"{stem}.param").read_text())
    data = (REF / case / f"{stem}.bin").read_bytes()
    weights = read_modelbin(pf, data)
    assert write_records(r for lw in weights.values() for r in lw.values()) == data


def test_digits_storage() -> None:
    pf = parse_param((REF / "digits" / "model.param").read_text())
    w = read_modelbin(pf, (REF / "digits" / "model.bin").read_bytes())
    assert list(w) == ["convrelu_0", "convdwrelu_0", "convrelu_1", "convrelu_2", "linear_7"]
    assert w["convrelu_0"]["weight"].storage == "f16"
    assert w["convrelu_0"]["bias"].storage == "raw"
    assert w["linear_7"]["weight"].values.size == 5120


def test_short_and_long_bin() -> None:
    pf = parse_param((REF / "npy" / "model.param").read_text())
    data = (REF / "npy" / "model.bin").read_bytes()
    with pytest.raises(ModelFormatError, match="ran out of data in layer 'linear_6'"):
        read_modelbin(pf, data[:-4], "m.bin")
    with pytest.raises(ModelFormatError, match="4 bytes left over"):
        read_modelbin(pf, data + b"\0\0\0\0", "m.bin")


def test_unknown_weight_layer() -> None:
    pf = parse_param("7767517\n2 2\nInput in0 0 1 in0\nFancyConv f 1 1 in0 out 0=3\n")
    with pytest.raises(UnsupportedLayerError, match=r"'f'.*'FancyConv'"):
        read_modelbin(pf, b"")


def test_codebook_and_padding() -> None:
    pf = parse_param("7767517\n2 2\nInput in0 0 1 in0\nInnerProduct fc 1 1 in0 out 0=1 1=0 2=3\n")
    table = np.arange(256, dtype="<f4")
    data = struct.pack("<I", 0x01020304) + table.tobytes() + bytes([5, 6, 7, 0])
    rec = read_modelbin(pf, data)["fc"]["weight"]
    assert rec.storage == "codebook"
    assert rec.values.tolist() == [5.0, 6.0, 7.0]
    f16 = write_records([WeightRecord("w", "f16", np.array([1.0, 2.0, 3.0], np.float32))])
    assert struct.unpack("<I", f16[:4])[0] == TAG_F16 and len(f16) == 12


def test_ncnn_half_matches_pyncnn() -> None:
    ncnn = pytest.importorskip("ncnn")
    rng = np.random.default_rng(3)
    tie = np.float32(1 + 2**-11)
    for n in (1, 3, 4, 7, 37):
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        x[-1] = tie
        keep = np.ascontiguousarray(x)
        m = ncnn.Mat(keep)
        got = np.array(ncnn.cast_float32_to_float16(m)).view(np.uint16)
        assert np.array_equal(got, float32_to_float16_bits(x)), n
