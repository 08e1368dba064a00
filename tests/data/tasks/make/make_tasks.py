"""Build the task-metric test models (tests/data/tasks): small real ncnn models of the kinds the
task metrics are for, exported by torch + pnnx, with their float32 ``.npy`` samples.

* ``ctc/``: a tiny CTC text recogniser: 1x16x64 "text line" -> convs -> (T=32, 11) scores
  (class 0 the blank, 1..10 the digits of ``charset.txt``); ``labels.csv``: each sample's text.
* ``seg/``: a tiny probability-map model (DB-like): 1x32x32 -> convs -> 1x32x32 sigmoid map of
  the bright blobs.
* ``two/``: a two-output model: 3x16x16 -> a 10-class score vector and a 4x8x8 map.

Run ``python make_tasks.py`` (torch 2.13.0+cpu, pnnx 20261020, numpy) from any folder; it writes
into the folder above this one.  Seeded; a few hundred training steps on synthetic data, so the
models are not good, only real: int8 changes some of their outputs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

OUT = Path(__file__).resolve().parent.parent
SEED = 20261206
N_SAMPLES = 12


def pnnx_export(model: nn.Module, example: tuple[torch.Tensor, ...], out: Path) -> None:
    """torch.jit.trace + pnnx (fp32 weights); keeps model.param / model.bin in ``out``."""
    model.eval()
    with tempfile.TemporaryDirectory() as td:
        tdp = Path(td)
        torch.jit.trace(model, example).save(str(tdp / "model.pt"))
        shapes = ",".join("[" + ",".join(str(s) for s in t.shape) + "]" for t in example)
        cmd = ["pnnx", "model.pt", f"inputshape={shapes}", "fp16=0"]
        subprocess.run(cmd, cwd=tdp, check=True, stdout=subprocess.DEVNULL)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tdp / "model.ncnn.param", out / "model.param")
        shutil.copyfile(tdp / "model.ncnn.bin", out / "model.bin")


def save_samples(out: Path, xs: np.ndarray) -> list[str]:
    """``xs`` (n, c, h, w) float32 as samples/s00.npy ... and samples.txt; the file names."""
    d = out / "samples"
    d.mkdir(parents=True, exist_ok=True)
    names = []
    for i, x in enumerate(xs):
        name = f"s{i:02d}.npy"
        np.save(d / name, np.ascontiguousarray(x, dtype=np.float32))
        names.append(name)
    (out / "samples.txt").write_text("".join(f"samples/{n}\n" for n in names))
    return names


# ----------------------------------------------------------------------------- CTC recogniser

CHARSET = "0123456789"
T_STEPS = 32
CTC_STEPS = 300


def glyphs(rng: np.random.Generator) -> np.ndarray:
    """A fixed random 12x5 binary glyph per character."""
    return (rng.random((len(CHARSET), 12, 5)) > 0.5).astype(np.float32)


def text_line(rng: np.random.Generator, glyph: np.ndarray) -> tuple[np.ndarray, str]:
    """A 16x64 line with 2..5 characters, and its text."""
    n = int(rng.integers(2, 6))
    text = "".join(CHARSET[int(k)] for k in rng.integers(0, len(CHARSET), n))
    img = rng.normal(0.0, 0.05, (16, 64)).astype(np.float32)
    x = int(rng.integers(0, 4))
    for ch in text:
        img[2:14, x : x + 5] += glyph[CHARSET.index(ch)]
        x += 5 + int(rng.integers(3, 7))
    return img, text


class Recogniser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)  # 8x32
        self.c3 = nn.Conv2d(32, 32, (8, 1))  # 1x32: one column per time step
        self.head = nn.Conv2d(32, len(CHARSET) + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        x = self.head(x)  # (1, classes, 1, T)
        return x.squeeze(2).permute(0, 2, 1)  # (1, T, classes)


def make_ctc() -> None:
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    glyph = glyphs(rng)
    model = Recogniser()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctc = nn.CTCLoss(blank=0)
    for _ in range(CTC_STEPS):
        batch = [text_line(rng, glyph) for _ in range(32)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        targets = [torch.tensor([CHARSET.index(c) + 1 for c in b[1]]) for b in batch]
        logp = model(x).log_softmax(2).permute(1, 0, 2)  # (T, N, C)
        loss = ctc(
            logp,
            torch.cat(targets),
            torch.full((len(batch),), T_STEPS, dtype=torch.long),
            torch.tensor([len(t) for t in targets]),
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = OUT / "ctc"
    samples = [text_line(rng, glyph) for _ in range(N_SAMPLES)]
    pnnx_export(model, (torch.zeros(1, 1, 16, 64),), out)
    names = save_samples(out, np.stack([s[0] for s in samples])[:, None])
    (out / "charset.txt").write_text("".join(c + "\n" for c in CHARSET))
    (out / "labels.csv").write_text(
        "file,label\n" + "".join(f"{n},{s[1]}\n" for n, s in zip(names, samples))
    )
    print(f"ctc: final loss {float(loss.detach()):.3f}")


# ----------------------------------------------------------------------------- probability map


def blobs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 32x32 noisy image with 1..3 bright discs, and their mask."""
    yy, xx = np.mgrid[:32, :32]
    mask = np.zeros((32, 32), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx, r = rng.integers(4, 28), rng.integers(4, 28), rng.integers(2, 6)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    img = mask * rng.uniform(0.5, 1.0) + rng.normal(0.0, 0.25, (32, 32))
    return img.astype(np.float32), mask


class ProbMap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return torch.sigmoid(self.c3(x))


def make_seg() -> None:
    rng = np.random.default_rng(SEED + 1)
    torch.manual_seed(SEED + 1)
    model = ProbMap()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        batch = [blobs(rng) for _ in range(32)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        loss = nn.functional.binary_cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = OUT / "seg"
    pnnx_export(model, (torch.zeros(1, 1, 32, 32),), out)
    save_samples(out, np.stack([blobs(rng)[0] for _ in range(N_SAMPLES)])[:, None])
    print(f"seg: final loss {float(loss.detach()):.3f}")


# ----------------------------------------------------------------------------- two outputs


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)  # 8x8
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.AvgPool2d(2)  # 4x4
        self.fc = nn.Linear(16 * 4 * 4, 10)
        self.map = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        scores = self.fc(torch.flatten(self.pool(x), 1))
        return scores, self.map(x)


def make_two() -> None:
    rng = np.random.default_rng(SEED + 2)
    torch.manual_seed(SEED + 2)
    model = TwoHeads()
    protos = rng.normal(0.0, 1.0, (10, 3, 16, 16)).astype(np.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        y = rng.integers(0, 10, 32)
        x = protos[y] + rng.normal(0.0, 0.8, (32, 3, 16, 16)).astype(np.float32)
        scores, fmap = model(torch.from_numpy(x))
        target = torch.from_numpy(x[:, :, ::2, ::2].mean(1, keepdims=True)).repeat(1, 4, 1, 1)
        loss = nn.functional.cross_entropy(scores, torch.from_numpy(y)) + (
            nn.functional.mse_loss(fmap, target)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = OUT / "two"
    pnnx_export(model, (torch.zeros(1, 3, 16, 16),), out)
    y = rng.integers(0, 10, N_SAMPLES)
    save_samples(out, protos[y] + rng.normal(0.0, 0.8, (N_SAMPLES, 3, 16, 16)).astype(np.float32))
    print(f"two: final loss {float(loss.detach()):.3f}")


if __name__ == "__main__":
    make_ctc()
    make_seg()
    make_two()
