"""Regenerate bench/data/resnet10: a 10-convolution ResNet-like net for 32x32 RGB (seeded).

Dev-only (never imported by edgecal or the benchmarks)::

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 pnnx numpy
    /tmp/tv/bin/python bench/make_resnet10.py

Calibrated layers: a 3x3 stem, three stages of (a 3x3 convolution, a residual block of two 3x3
convolutions), stride 2 into stages 2 and 3, global average pooling and a 10-way InnerProduct:
10 convolutions + 1 InnerProduct.  BatchNorm (random statistics) is folded by pnnx.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

OUT = Path(__file__).resolve().parent / "data" / "resnet10"


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    bn = nn.BatchNorm2d(cout)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = conv_bn(c, c), conv_bn(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class ResNet10(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.s1, self.b1 = conv_bn(16, 16), Block(16)
        self.s2, self.b2 = conv_bn(16, 32, 2), Block(32)
        self.s3, self.b3 = conv_bn(32, 64, 2), Block(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = self.b1(torch.relu(self.s1(x)))
        x = self.b2(torch.relu(self.s2(x)))
        x = self.b3(torch.relu(self.s3(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def main() -> None:
    torch.manual_seed(0)
    model = ResNet10().eval()
    exe = shutil.which("pnnx") or str(Path(sysconfig.get_path("scripts")) / "pnnx")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        traced = torch.jit.trace(model, (torch.rand(1, 3, 32, 32),))
        traced.save(str(Path(td) / "model.pt"))
        subprocess.run(
            [exe, "model.pt", "inputshape=[1,3,32,32]", "fp16=1"],
            cwd=td,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.copyfile(Path(td) / "model.ncnn.param", OUT / "model.param")
        shutil.copyfile(Path(td) / "model.ncnn.bin", OUT / "model.bin")


if __name__ == "__main__":
    main()
