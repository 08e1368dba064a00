"""Regenerate the per-layer fixtures in this folder (NOT run by the tests).

Usage (torch + pnnx venv)::

    /tmp/trainvenv/bin/python tests/data/layers/make_layers.py

* ``pnnx_*``: tiny torch modules exported with ``pnnx.export`` once with ``fp16=False``
  (``<name>.param/.bin``) and, for layers with tagged weights, once with ``fp16=True``
  (``<name>_fp16.param/.bin``).
* ``hand_*``: layer types pnnx does not emit from plain torch modules (Scale, Bias, MemoryData
  incl. 4-D, RMSNorm/LayerNorm/GroupNorm/InstanceNorm without affine, Embed with bias, Gemm with
  constant A (transA=1) + constant C, Gemm with constant B (transB=0) + row-broadcast C, Gemm with
  constant A and B).  The ``.bin`` is written here record by record (tag + data, zero padded to
  4 bytes), independently of edgecal's writer.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

TAG_F32 = 0x00000000
TAG_F16 = 0x01306B47


def _pad(b: bytes) -> bytes:
    return b + b"\0" * ((-len(b)) % 4)


def tagged(values: np.ndarray, fp16: bool = False) -> bytes:
    v = np.asarray(values, np.float32).reshape(-1)
    if fp16:
        return _pad(struct.pack("<I", TAG_F16) + v.astype("<f2").tobytes())
    return struct.pack("<I", TAG_F32) + v.astype("<f4").tobytes()


def raw(values: np.ndarray) -> bytes:
    return np.asarray(values, np.float32).reshape(-1).astype("<f4").tobytes()


def _write(name: str, param: str, data: bytes) -> None:
    (HERE / f"{name}.param").write_text(param)
    (HERE / f"{name}.bin").write_bytes(data)


def hand_models() -> None:
    rng = np.random.default_rng(20261020)

    def r(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, size=shape).astype(np.float32)

    # Scale (with bias) then Bias, on a 3x4x4 blob.
    _write(
        "hand_scale_bias",
        "7767517\n3 3\n"
        "Input            in0   0 1 in0 0=4 1=4 2=3\n"
        "Scale            scale 1 1 in0 s 0=3 1=1\n"
        "Bias             bias  1 1 s out0 0=3\n",
        raw(r(3)) + raw(r(3)) + raw(r(3)),
    )
    # MemoryData of 1, 2, 3 and 4 dims (raw, load_type 1) and one tagged fp16 (21=0).
    _write(
        "hand_memorydata",
        "7767517\n5 5\n"
        "MemoryData       md1   0 1 md1 0=5\n"
        "MemoryData       md2   0 1 md2 0=4 1=3\n"
        "MemoryData       md3   0 1 md3 0=4 1=3 2=2\n"
        "MemoryData       md4   0 1 md4 0=2 1=3 11=2 2=2\n"
        "MemoryData       md5   0 1 md5 0=3 1=2 21=0\n",
        raw(r(5)) + raw(r(12)) + raw(r(24)) + raw(r(24)) + tagged(r(6), fp16=True),
    )
    # Norms without affine read nothing; RMSNorm with affine reads gamma only.
    _write(
        "hand_norms",
        "7767517\n6 6\n"
        "Input            in0   0 1 in0 0=6 1=4 2=4\n"
        "InstanceNorm     in_na 1 1 in0 a 0=4 1=1.000000e-05 2=0\n"
        "GroupNorm        gn_na 1 1 a b 0=2 1=4 2=1.000000e-05 3=0\n"
        "LayerNorm        ln_na 1 1 b c 0=6 1=1.000000e-05 2=0\n"
        "RMSNorm          rms_na 1 1 c d 0=6 1=1.000000e-05 2=0\n"
        "RMSNorm          rms   1 1 d out0 0=6 1=1.000000e-05\n",
        raw(r(6)),
    )
    # Embed with bias (fp16 weight).
    _write(
        "hand_embed_bias",
        "7767517\n2 2\n"
        "Input            in0   0 1 in0 0=4\n"
        "Embed            embed 1 1 in0 out0 0=6 1=10 2=1 3=60\n",
        tagged(r(60), fp16=True) + raw(r(6)),
    )
    # Gemm: constant A (M=3,K=5) stored transposed (transA=1), input B (K x N=4, transB=0),
    # constant C full M x N (broadcast type 3).
    _write(
        "hand_gemm_a",
        "7767517\n2 2\n"
        "Input            in0   0 1 in0 0=4 1=5\n"
        "Gemm             gemm  1 1 in0 out0 2=1 3=0 4=1 5=0 6=1 7=3 8=4 9=5 10=3\n",
        tagged(r(5, 3)) + tagged(r(3, 4)),
    )
    # Gemm: input A (M=3 x K=5), constant B stored K x N (transB=0, N=4), C per column (type 4),
    # alpha 0.5, beta 2, fp16 weights (ncnn computes alpha * (A*B + beta*C)).
    _write(
        "hand_gemm_b",
        "7767517\n2 2\n"
        "Input            in0   0 1 in0 0=5 1=3\n"
        "Gemm             gemm  1 1 in0 out0 0=5.000000e-01 1=2.000000e+00 3=0 4=0 5=1 6=1 "
        "7=0 8=4 9=5 10=4\n",
        tagged(r(5, 4), fp16=True) + tagged(r(4), fp16=True),
    )
    # Gemm: constant A (transA=0) and constant B (transB=1), no input, scalar C (type 0).
    _write(
        "hand_gemm_ab",
        "7767517\n1 1\n"
        "Gemm             gemm  0 1 out0 4=1 5=1 6=1 7=3 8=4 9=5 10=0 3=1\n",
        tagged(r(3, 5)) + tagged(r(4, 5)) + tagged(r(1)),
    )


def pnnx_models() -> None:
    import pnnx
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(7)

    class Emb(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e = nn.Embedding(10, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.e(x)

    class MHA(nn.Module):
        def __init__(self, **kw: int) -> None:
            super().__init__()
            self.m = nn.MultiheadAttention(8, 2, batch_first=True, **kw)

        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.m(q, k, v, need_weights=False)[0]

    class SelfMHA(MHA):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.m(x, x, x, need_weights=False)[0]

    class Rec(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x)[0]

    class MatB(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(x, self.w)

    class Sdpa(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v)

    class Seq(nn.Module):
        def __init__(self, *mods: nn.Module) -> None:
            super().__init__()
            self.names = [f"op{i}" for i in range(len(mods))]
            for n, m in zip(self.names, mods, strict=True):
                setattr(self, n, m)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for n in self.names:
                x = getattr(self, n)(x)
            return x

    seq = Seq

    def rnd(*s: int) -> torch.Tensor:
        return torch.rand(*s) - 0.5

    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    ln, gn, inorm = nn.LayerNorm(6), nn.GroupNorm(2, 4), nn.InstanceNorm2d(3, affine=True)
    for m in (ln, gn, inorm):
        with torch.no_grad():
            m.weight.uniform_(0.5, 2)
            m.bias.uniform_(-1, 1)

    cases: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], bool]] = {
        # name: (module, example inputs, also export fp16)
        "embed": (Emb(), (torch.tensor([[1, 3, 5, 9]]),), True),
        "mha": (SelfMHA(), (rnd(1, 5, 8),), True),
        "mha_kv": (MHA(kdim=6, vdim=5), (rnd(1, 5, 8), rnd(1, 7, 6), rnd(1, 7, 5)), False),
        "rnn": (Rec(nn.RNN(5, 4, batch_first=True)), (rnd(1, 6, 5),), True),
        "rnn_bi": (Rec(nn.RNN(5, 4, batch_first=True, bidirectional=True)), (rnd(1, 6, 5),), False),
        "lstm": (Rec(nn.LSTM(5, 4, batch_first=True)), (rnd(1, 6, 5),), True),
        "lstm_proj_bi": (
            Rec(nn.LSTM(5, 6, batch_first=True, bidirectional=True, proj_size=3)),
            (rnd(1, 6, 5),),
            True,
        ),
        "gru": (Rec(nn.GRU(5, 4, batch_first=True)), (rnd(1, 6, 5),), False),
        "gru_bi": (Rec(nn.GRU(5, 4, batch_first=True, bidirectional=True)), (rnd(1, 6, 5),), True),
        "gemm": (MatB(), (rnd(3, 6),), True),
        "sdpa": (Sdpa(), (rnd(1, 2, 5, 4), rnd(1, 2, 6, 4), rnd(1, 2, 6, 4)), False),
        "deconv": (seq(nn.ConvTranspose2d(3, 4, (3, 2), stride=2)), (rnd(1, 3, 5, 5),), True),
        "deconvdw": (seq(nn.ConvTranspose2d(4, 4, 3, groups=4)), (rnd(1, 4, 5, 5),), True),
        "conv1d": (seq(nn.Conv1d(3, 4, 3)), (rnd(1, 3, 9),), True),
        "conv3d": (seq(nn.Conv3d(2, 3, (2, 3, 3))), (rnd(1, 2, 4, 5, 5),), True),
        "bn": (seq(nn.ReLU(), bn), (rnd(1, 3, 4, 4),), False),
        "ln": (seq(ln), (rnd(1, 4, 6),), False),
        "gn": (seq(gn), (rnd(1, 4, 3, 3),), False),
        "in": (seq(inorm), (rnd(1, 3, 4, 4),), False),
        "prelu": (seq(nn.PReLU(3)), (rnd(1, 3, 4, 4),), False),
        "rmsnorm": (seq(nn.RMSNorm(6, eps=1e-5)), (rnd(1, 4, 6),), False),
    }
    with torch.no_grad():
        for m in cases.values():
            for p in m[0].parameters():
                if p.dim() >= 1 and p.numel() > 3:
                    p.uniform_(-0.8, 0.8)
    for name, (module, inputs, with_fp16) in cases.items():
        module.eval()
        for fp16 in (False, True) if with_fp16 else (False,):
            with tempfile.TemporaryDirectory() as tmp:
                pt = Path(tmp) / "m.pt"
                with torch.no_grad():
                    pnnx.export(module, str(pt), inputs, fp16=fp16)
                out = f"{name}_fp16" if fp16 else name
                shutil.copy(Path(tmp) / "m.ncnn.param", HERE / f"{out}.param")
                shutil.copy(Path(tmp) / "m.ncnn.bin", HERE / f"{out}.bin")


if __name__ == "__main__":
    hand_models()
    pnnx_models()
