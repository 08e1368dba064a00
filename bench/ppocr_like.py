"""A PP-OCR-direction-classifier-like benchmark model and images, made on demand into a cache.

The net is written directly as ncnn ``.param``/``.bin`` with numpy (no torch or pnnx needed):
a MobileNetV3-small-like stack on a 3x48x192 input -- a stride-2 stem, 17 inverted residual
blocks (1x1 expand + ReLU/HardSwish, depthwise 3x3 or 5x5, 1x1 project, residual add where the
shape allows), a 1x1 head, global pooling and a 2-way InnerProduct: 54 calibrated layers, as
the issue's ``ch_ppocr_mobile_v2.0_cls``.  Weights are seeded He-normal with small biases
(random, but activations stay in a normal range).  Images are seeded synthetic "text line"
JPEGs of varied sizes (160..320 x 32..64), resized to 192x48 by the calibration.

Nothing here is committed but this script: ``ensure(cache, n)`` writes into ``cache`` once.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

IN_W, IN_H = 192, 48
#: (expand channels, out channels, kernel, stride, activation: 1 ReLU, 6 HardSwish)
BLOCKS = [
    (16, 16, 3, 2, 1),
    (48, 24, 3, 2, 1),
    (64, 24, 3, 1, 1),
    (72, 24, 3, 1, 1),
    (96, 40, 5, 2, 6),
    (160, 40, 5, 1, 6),
    (160, 40, 5, 1, 6),
    (120, 48, 5, 1, 6),
    (144, 48, 5, 1, 6),
    (144, 48, 3, 1, 6),
    (192, 64, 5, 2, 6),
    (256, 64, 5, 1, 6),
    (256, 64, 5, 1, 6),
    (256, 64, 3, 1, 6),
    (256, 96, 3, 1, 6),
    (288, 96, 3, 1, 6),
    (288, 96, 3, 1, 6),
]
STEM = 16
HEAD = 288
CLASSES = 2
VERSION = "1"


class _Writer:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.layers: list[str] = []
        self.blobs = 0
        self.bin = bytearray()
        self.n = 0

    def blob(self) -> str:
        self.blobs += 1
        return f"b{self.blobs}"

    def add(self, kind: str, name: str, bottoms: list[str], tops: list[str], params: str) -> None:
        self.layers.append(
            f"{kind:<20} {name:<14} {len(bottoms)} {len(tops)} {' '.join(bottoms + tops)} {params}"
        )

    def weights(self, shape: tuple[int, ...], fan_in: int, gain: float, n_bias: int) -> None:
        w = self.rng.normal(0.0, gain / np.sqrt(fan_in), size=shape).astype("<f4")
        b = self.rng.normal(0.0, 0.05, size=n_bias).astype("<f4")
        self.bin += struct.pack("<I", 0) + w.tobytes() + b.tobytes()

    def conv(self, x: str, cin: int, cout: int, k: int, s: int, act: int, dw: bool = False) -> str:
        self.n += 1
        y = self.blob()
        group = cin if dw else 1
        n_w = cout * (cin // group) * k * k
        act_p = " 9=1" if act == 1 else " 9=6 -23310=2,1.666667e-01,5.000000e-01" if act else ""
        kind = "ConvolutionDepthWise" if dw else "Convolution"
        extra = f" 7={group}" if dw else ""
        self.add(
            kind,
            f"conv{self.n}",
            [x],
            [y],
            f"0={cout} 1={k} 3={s} 4={k // 2} 5=1 6={n_w}{extra}{act_p}",
        )
        self.weights((n_w,), (cin // group) * k * k, 1.6 if act else 1.0, cout)
        return y


def write_model(param: Path, bin_: Path, seed: int = 12) -> int:
    """The net into ``param``/``bin_``; returns the number of calibrated layers."""
    w = _Writer(np.random.default_rng(seed))
    w.add("Input", "in0", [], ["in0"], f"0={IN_W} 1={IN_H} 2=3")
    x = w.conv("in0", 3, STEM, 3, 2, 6)
    c = STEM
    for i, (exp, out, k, s, act) in enumerate(BLOCKS):
        residual = s == 1 and c == out
        if residual:
            a, skip = w.blob(), w.blob()
            w.add("Split", f"split{i}", [x], [a, skip], "")
            x = a
        y = w.conv(x, c, exp, 1, 1, act)
        y = w.conv(y, exp, exp, k, s, act, dw=True)
        y = w.conv(y, exp, out, 1, 1, 0)
        if residual:
            z = w.blob()
            w.add("BinaryOp", f"add{i}", [y, skip], [z], "0=0")
            y = z
        x, c = y, out
    x = w.conv(x, c, HEAD, 1, 1, 6)
    p = w.blob()
    w.add("Pooling", "gap", [x], [p], "0=1 4=1")
    w.n += 1
    f = w.blob()
    w.add("InnerProduct", "fc", [p], [f], f"0={CLASSES} 1=1 2={CLASSES * HEAD}")
    w.weights((CLASSES * HEAD,), HEAD, 1.0, CLASSES)
    w.add("Softmax", "softmax", [f], ["out0"], "0=0")
    blob_count = 1 + w.blobs + 1  # in0, b1..bN, out0
    param.write_text(f"7767517\n{len(w.layers)} {blob_count}\n" + "\n".join(w.layers) + "\n")
    bin_.write_bytes(bytes(w.bin))
    return w.n


def write_images(folder: Path, n: int, seed: int = 7) -> list[Path]:
    """``n`` synthetic text-line-like JPEGs (dark strokes on a light, tinted background)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h = int(rng.integers(32, 65))
        wdt = int(rng.integers(160, 321))
        bg = rng.integers(150, 256, size=3)
        img = np.empty((h, wdt, 3), dtype=np.float32)
        img[:] = bg
        img += rng.normal(0, 8, size=img.shape)
        x = int(rng.integers(2, 12))
        while x < wdt - 8:  # "glyphs": random dark rectangles and bars
            gw, gh = int(rng.integers(3, 12)), int(rng.integers(h // 3, h - 4))
            y0 = int(rng.integers(1, h - gh))
            img[y0 : y0 + gh, x : x + max(1, gw // 3)] *= rng.uniform(0.1, 0.5)
            img[y0 : y0 + 3, x : x + gw] *= rng.uniform(0.1, 0.6)
            x += gw + int(rng.integers(2, 8))
        if rng.random() < 0.5:  # half of them upside down, as the classifier's data
            img = img[::-1, ::-1]
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def ensure(cache: Path, n_images: int) -> tuple[Path, Path, Path]:
    """``(param, bin, list file of n_images images)`` in ``cache``, made the first time."""
    cache.mkdir(parents=True, exist_ok=True)
    param, bin_ = cache / "model.param", cache / "model.bin"
    stamp = cache / f"model.v{VERSION}"
    if not stamp.exists():
        write_model(param, bin_)
        stamp.write_text("ok\n")
    images = cache / "images"
    have = sorted(images.glob("img_*.jpg")) if images.is_dir() else []
    if len(have) < n_images or not (cache / f"images.v{VERSION}").exists():
        have = write_images(images, max(n_images, len(have)))
        (cache / f"images.v{VERSION}").write_text("ok\n")
    lst = cache / f"list_{n_images}.txt"
    lst.write_text("".join(f"{p}\n" for p in have[:n_images]))
    return param, bin_, lst
