"""Regenerate the tinted_digits sample: data, training and the pnnx export to ncnn.

    python samples/tinted_digits/train.py        (from any directory; writes next to this file)

Dev-only dependencies (never imported by edgecal):
    python3 -m venv /tmp/trainvenv
    /tmp/trainvenv/bin/pip install torch==2.13.0 pnnx scikit-learn Pillow numpy

What it does, all seeded:
  1. sklearn's bundled ``load_digits`` (1797 8x8 digits, values 0..16), split by a seeded
     permutation into 300 test digits and 1497 training digits.  The calibration set is 200 of
     the training digits (the first 200 of the training split, rendered once with their own seed).
  2. Each digit is rendered as a 48x48 8-bit RGB image: the 8x8 intensity map is upscaled to
     40x40 with our own float64 bilinear (half-pixel centres, edge clamping), placed on a 48x48
     canvas with a random shift of up to +-4 px, composited between a random background and a
     random foreground colour (at least CONTRAST apart), plus mild Gaussian noise, then rint to
     uint8.  Training re-renders every digit each epoch (fresh colours, shift and noise).
  3. A small CNN (7 convolutions incl. a residual block, see TintedDigitsNet) is trained with
     the exact input normalisation that ncnn applies with mean=127.5, norm=0.00784314 on RGB.
  4. torch.jit.trace + ``pnnx model.pt inputshape=[1,3,48,48] fp16=1``; only model.ncnn.param /
     model.ncnn.bin are kept, as model.param / model.bin.
  5. Writes calib/calib_XXX.png (200), calib.txt, calib_labels.csv, test/test_XXX.png (300),
     labels.csv.  PNGs are 8-bit RGB written by Pillow with optimize=True.

Torch on another CPU / thread count may train slightly different weights, so the committed
model files are the reference, not a rerun.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

OUT = Path(__file__).resolve().parent

SPLIT_SEED = 20261127
TRAIN_RENDER_SEED = 101
CALIB_RENDER_SEED = 202
TEST_RENDER_SEED = 303
TORCH_SEED = 11

N_TEST = 300
N_CALIB = 200

SIZE = 48  # network input: 3 x 48 x 48
DIGIT = 40  # upscaled digit size inside the 48x48 canvas
MAX_SHIFT = 4  # +-4 px around the centre
CONTRAST = 160.0  # minimum Euclidean RGB distance between foreground and background
NOISE_SIGMA = 3.0  # mild Gaussian pixel noise (in 0..255 units)

# ncnn preprocessing (ncnn2table style): pixel=RGB (from BGR), mean=127.5, norm=0.00784314
MEAN = np.float32(127.5)
NORM = np.float32(0.00784314)

WIDTHS = (16, 32, 96, 192)  # conv0, conv1/dw, pw/residual block, head
EPOCHS = 30
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4


# ----------------------------------------------------------------------------- data


def digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """8x8 float64 intensity maps in [0, 1] and uint8 labels: train / calib / test.

    calib is a subset of train (the first N_CALIB training digits)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images.astype(np.float64) / 16.0  # (1797, 8, 8)
    lab = d.target.astype(np.uint8)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(lab))
    test = perm[:N_TEST]
    train = perm[N_TEST:]
    calib = train[:N_CALIB]
    return {
        "train": (img[train], lab[train]),
        "calib": (img[calib], lab[calib]),
        "test": (img[test], lab[test]),
    }


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) half-pixel-centre bilinear weights with edge clamping (float64)."""
    m = np.zeros((dst, src), dtype=np.float64)
    scale = src / dst
    for d in range(dst):
        f = (d + 0.5) * scale - 0.5
        f = min(max(f, 0.0), src - 1.0)
        i0 = int(np.floor(f))
        i1 = min(i0 + 1, src - 1)
        a = f - i0
        m[d, i0] += 1.0 - a
        m[d, i1] += a
    return m


_UP = bilinear_matrix(8, DIGIT)


def random_colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (foreground, background) RGB pairs at least CONTRAST apart (rejection sampling)."""
    fg = np.empty((n, 3))
    bg = np.empty((n, 3))
    for i in range(n):
        while True:
            f = rng.integers(0, 256, 3).astype(np.float64)
            b = rng.integers(0, 256, 3).astype(np.float64)
            if np.linalg.norm(f - b) >= CONTRAST:
                break
        fg[i], bg[i] = f, b
    return fg, bg


def render(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 8, 8) float intensities in [0, 1] -> (n, 48, 48, 3) uint8 RGB images."""
    n = digits.shape[0]
    up = np.clip(_UP @ digits @ _UP.T, 0.0, 1.0)  # (n, 40, 40)
    alpha = np.zeros((n, SIZE, SIZE))
    base = (SIZE - DIGIT) // 2
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, (n, 2))
    for i in range(n):
        y0, x0 = base + shifts[i, 0], base + shifts[i, 1]
        alpha[i, y0 : y0 + DIGIT, x0 : x0 + DIGIT] = up[i]
    fg, bg = random_colours(n, rng)
    img = bg[:, None, None, :] + (fg - bg)[:, None, None, :] * alpha[..., None]
    img += rng.normal(0.0, NOISE_SIGMA, img.shape)
    return np.rint(img).clip(0, 255).astype(np.uint8)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (n, 48, 48, 3) RGB -> float32 (n, 3, 48, 48): ncnn's (x - 127.5) * 0.00784314."""
    x = (rgb.astype(np.float32) - MEAN) * NORM
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    assert arr.dtype == np.uint8 and arr.shape == (SIZE, SIZE, 3)
    im = Image.fromarray(np.ascontiguousarray(arr))
    assert im.mode == "RGB"
    im.save(path, format="PNG", optimize=True)


def write_labels(path: Path, names: list[str], labels: np.ndarray) -> None:
    rows = [f"{n},{int(y)}\n" for n, y in zip(names, labels, strict=True)]
    path.write_text("file,label\n" + "".join(rows))


# ----------------------------------------------------------------------------- model


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # BatchNorm is folded into the convolution by pnnx (eval mode)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class TintedDigitsNet(nn.Module):
    """3x48x48 RGB -> 10 logits.

    conv0  3x3 s1  3->16   +ReLU   48x48  (3x3 stride-1: ncnn2table's 6-bit weight rule)
    conv1  3x3 s2  16->32  +ReLU   24x24  (stride 2)
    dw     3x3 s1  depthwise 32 +ReLU 24x24
    pw     1x1     32->96  +ReLU   24x24
    pool   max 2x2 s2              12x12
    res_a  3x3 s1  96->96  +ReLU   \\
    res_b  3x3 s1  96->96          /  + skip (pool output), then ReLU
    head   1x1     96->192 +ReLU   12x12
    gap    global average pooling  192
    fc     192->10

    (channel widths from WIDTHS; every convolution has a BatchNorm that pnnx folds into it)
    """

    def __init__(self, widths: tuple[int, int, int, int] = WIDTHS) -> None:
        super().__init__()
        c0, c1, c2, c3 = widths
        self.conv0 = conv_bn(3, c0, 3)
        self.conv1 = conv_bn(c0, c1, 3, stride=2)
        self.dw = conv_bn(c1, c1, 3, groups=c1)
        self.pw = conv_bn(c1, c2, 1)
        self.pool = nn.MaxPool2d(2)
        self.res_a = conv_bn(c2, c2, 3)
        self.res_b = conv_bn(c2, c2, 3)
        self.head = conv_bn(c2, c3, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv0(x))
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.pw(x))
        x = self.pool(x)
        y = torch.relu(self.res_a(x))
        y = self.res_b(y)
        x = torch.relu(x + y)
        x = torch.relu(self.head(x))
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)


# ----------------------------------------------------------------------------- export


def pnnx_export(model: nn.Module, out: Path = OUT) -> str:
    """torch.jit.trace + the pnnx command line; keeps only model.param / model.bin."""
    scripts = Path(sysconfig.get_path("scripts"))
    exe = shutil.which("pnnx") or str(scripts / "pnnx")
    model.eval()
    with tempfile.TemporaryDirectory() as td:
        tdp = Path(td)
        traced = torch.jit.trace(model, (torch.rand(1, 3, SIZE, SIZE),))
        traced.save(str(tdp / "model.pt"))
        cmd = [exe, "model.pt", f"inputshape=[1,3,{SIZE},{SIZE}]", "fp16=1"]
        subprocess.run(
            cmd, cwd=tdp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        shutil.copyfile(tdp / "model.ncnn.param", out / "model.param")
        shutil.copyfile(tdp / "model.ncnn.bin", out / "model.bin")
    return " ".join(["pnnx", *cmd[1:]])


# ----------------------------------------------------------------------------- main


def main() -> None:
    torch.manual_seed(TORCH_SEED)
    torch.set_num_threads(2)
    t0 = time.time()

    split = digits_split()
    train_d, train_y = split["train"]
    calib_img = render(split["calib"][0], np.random.default_rng(CALIB_RENDER_SEED))
    test_img = render(split["test"][0], np.random.default_rng(TEST_RENDER_SEED))
    xte = to_tensor(test_img)
    yte = torch.from_numpy(split["test"][1].astype(np.int64))
    ytr = torch.from_numpy(train_y.astype(np.int64))

    model = TintedDigitsNet()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (len(ytr) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, epochs=EPOCHS, steps_per_epoch=steps_per_epoch, pct_start=0.2
    )
    lossf = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(TORCH_SEED)
    render_rng = np.random.default_rng(TRAIN_RENDER_SEED)

    for ep in range(EPOCHS):
        xtr = to_tensor(render(train_d, render_rng))  # fresh colours / shifts / noise
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        total = 0.0
        for b in range(0, len(perm), BATCH):
            idx = perm[b : b + BATCH]
            opt.zero_grad()
            loss = lossf(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(
            f"epoch {ep + 1:2d}  loss {total / len(ytr):.4f}  test top-1 {acc:.4f}  "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )

    model.eval()
    with torch.no_grad():
        torch_acc = (model(xte).argmax(1) == yte).float().mean().item()

    cmd = pnnx_export(model)

    for sub in ("calib", "test"):
        if (OUT / sub).exists():
            shutil.rmtree(OUT / sub)
        (OUT / sub).mkdir()
    calib_names = []
    for i, im in enumerate(calib_img):
        name = f"calib_{i:03d}.png"
        save_png(OUT / "calib" / name, im)
        calib_names.append(name)
    (OUT / "calib.txt").write_text("".join(f"calib/{n}\n" for n in calib_names))
    write_labels(OUT / "calib_labels.csv", calib_names, split["calib"][1])
    test_names = []
    for i, im in enumerate(test_img):
        name = f"test_{i:03d}.png"
        save_png(OUT / "test" / name, im)
        test_names.append(name)
    write_labels(OUT / "labels.csv", test_names, split["test"][1])

    print(f"torch {torch.__version__}  python {sys.version.split()[0]}")
    print(f"pnnx command: {cmd}")
    print(f"torch test top-1: {torch_acc:.4f} ({round(torch_acc * N_TEST)}/{N_TEST})")
    print(f"total time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
