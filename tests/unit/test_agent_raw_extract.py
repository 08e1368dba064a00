"""The agent reads ncnn's raw (elempack-packed) fp32 blobs in place; it must visit exactly the
elements ncnn2table visits on the unpacked (``type=0``) blob, for every dims and packing."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from edgecal_agent import stats
from edgecal_agent.backend import NcnnModel, raw_visited
from edgecal_agent.messages import InputDesc

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"

# 4-D blobs packed (r: the ReLU of a, c=16) and not (a; b: c=3, cstep padded: 6*5*3 = 90 ->
# 92), 1-D packed (c: 24, d: 40), 2-D (e: 8 rows of 5), 3-D packed (g: c=8) and padded (h: c=3,
# 5 -> 8).  Which of them ncnn packs depends on the CPU; the test checks the ones x86 packs.
PARAM = """7767517
10 10
Input          in0  0 1 in0 0=6 1=5 11=3 2=2
Convolution3D  c3a  1 1 in0 a 0=16 1=3 11=3 21=3 4=1 14=1 24=1 5=1 6=864
ReLU           rl   1 1 a r
Convolution3D  c3b  1 1 r b 0=3 1=1 11=1 21=1 5=1 6=48
InnerProduct   ip0  1 1 b c 0=24 1=1 2=6480
InnerProduct   ip1  1 1 c d 0=40 1=1 2=960
Reshape        rs0  1 1 d e 0=5 1=8
Reshape        rs1  1 1 e f 0=5 1=1 2=8
Convolution    cv0  1 1 f g 0=8 1=1 5=1 6=64
Convolution    cv1  1 1 g h 0=3 1=1 5=1 6=24
"""
BLOBS = ["in0", "a", "r", "b", "c", "d", "e", "f", "g", "h"]
WEIGHTS = [(864, 16), (48, 3), (6480, 24), (960, 40), (64, 8), (24, 3)]


@pytest.fixture(scope="module")
def packed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("packed")
    rng = np.random.default_rng(7)
    blob = b""
    for n_weight, n_bias in WEIGHTS:
        blob += struct.pack("<I", 0) + rng.normal(0, 0.3, n_weight).astype("<f4").tobytes()
        blob += rng.normal(0, 0.3, n_bias).astype("<f4").tobytes()
    (d / "m.param").write_text(PARAM)
    (d / "m.bin").write_bytes(blob)
    return d / "m.param", d / "m.bin"


def _unpacked(
    model: NcnnModel, sample: tuple[np.ndarray, ...], inputs: list[InputDesc], blobs: list[str]
) -> list[np.ndarray]:
    return [
        stats.visited(np.array(mat))
        for _, mat in model.extract(sample, inputs, blobs, light_mode=False)
    ]


def _raw(
    model: NcnnModel, sample: tuple[np.ndarray, ...], inputs: list[InputDesc], blobs: list[str]
) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    model.for_each_visited(sample, inputs, blobs, lambda b, v: out.append(np.array(v)))
    return out


def _same_multiset(a: np.ndarray, b: np.ndarray) -> bool:
    return a.size == b.size and np.sort(a.reshape(-1)).tobytes() == np.sort(b.reshape(-1)).tobytes()


@pytest.mark.parametrize("runtime", ["calibration", "deployed"])
def test_raw_view_visits_what_ncnn2table_visits(
    packed_model: tuple[Path, Path], runtime: str
) -> None:
    param, bin_ = packed_model
    model = NcnnModel(str(param), str(bin_), runtime=runtime, threads=2)
    inputs = [InputDesc(blob="in0", kind="npy", shape=(6, 5, 3, 2))]
    rng = np.random.default_rng(1)
    seen_packs = set()
    ex = model.net.create_extractor()
    ex.input(
        "in0",
        model.ncnn.Mat(
            np.ascontiguousarray(rng.normal(size=(2, 3, 5, 6)).astype(np.float32))
        ).clone(),
    )
    for name in BLOBS:
        feat = model.ncnn.Mat()
        assert ex.extract(name, feat, 1) == 0
        seen_packs.add((feat.dims, feat.elempack > 1))
    del ex
    if runtime == "calibration" and model.ncnn.cpu_support_x86_avx():  # x86: pack 8
        assert {(4, True), (4, False), (1, True), (3, True), (3, False)} <= seen_packs
    for _ in range(3):
        sample = (rng.normal(size=(2, 3, 5, 6)).astype(np.float32),)
        want = _unpacked(model, sample, inputs, BLOBS)
        got = _raw(model, sample, inputs, BLOBS)
        assert [w.size for w in want] == [g.size for g in got]
        for name, w, g in zip(BLOBS, want, got, strict=True):
            assert _same_multiset(w, g), name
            assert stats.abs_max(w) == stats.abs_max(g)


@pytest.mark.parametrize("case", ["digits", "npy", "multi"])
def test_raw_view_on_reference_models(case: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
    from refcases import load_case

    c = load_case(case)
    model = NcnnModel(str(c.param), str(c.bin))
    inputs = [InputDesc.from_dict(s.to_dict()) for s in c.specs]
    blobs = list(model.blob_names)  # every blob of the net, in order
    for sample in c.samples[:3]:
        want = _unpacked(model, sample, inputs, blobs)
        got = _raw(model, sample, inputs, blobs)
        for name, w, g in zip(blobs, want, got, strict=True):
            assert _same_multiset(w, g), (case, name)


def test_raw_visited_refuses_non_fp32() -> None:
    import ncnn

    half = ncnn.Mat(4, 3, 8, elemsize=2, elempack=1)
    assert raw_visited(half) is None
    assert raw_visited(ncnn.Mat()).size == 0
