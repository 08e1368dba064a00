"""Check the tinted_digits ncnn model with the pip `ncnn` package: fp32 top-1 on the 300 test
PNGs and forward time per image (1 thread).  Needs only ncnn, numpy and Pillow.

    python samples/tinted_digits/eval_ncnn.py [model.param model.bin]

Preprocessing is ncnn2table's for pixel=RGB, mean=[127.5,127.5,127.5],
norm=[0.00784314,0.00784314,0.00784314], shape=[48,48]: the PNG is decoded to RGB, reversed to
BGR (what cv::imread gives), then Mat.from_pixels_resize(bgr, PIXEL_BGR2RGB, 48, 48, 48, 48) and
substract_mean_normalize.  Options: ncnn defaults with num_threads=1 ("default"), and the
options ncnn2table calibrates with ("calib": lightmode off, no fp16 storage/packed/arithmetic).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import ncnn
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
MEAN = [127.5, 127.5, 127.5]
NORM = [0.00784314, 0.00784314, 0.00784314]


def load_net(param: Path, model: Path, calib_opts: bool) -> ncnn.Net:
    net = ncnn.Net()
    net.opt.num_threads = 1
    if calib_opts:
        net.opt.lightmode = False
        net.opt.use_fp16_packed = False
        net.opt.use_fp16_storage = False
        net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(param)) == 0, "load_param failed"
    assert net.load_model(str(model)) == 0, "load_model failed"
    return net


def to_mat(png: Path) -> ncnn.Mat:
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.uint8)
    h, w = rgb.shape[:2]
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    m = ncnn.Mat.from_pixels_resize(bgr, ncnn.Mat.PixelType.PIXEL_BGR2RGB, w, h, 48, 48)
    m.substract_mean_normalize(MEAN, NORM)
    return m


def main() -> None:
    param = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "model.param"
    model = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "model.bin"
    with open(HERE / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    mats = [to_mat(HERE / "test" / r["file"]) for r in rows]
    labels = np.array([int(r["label"]) for r in rows])
    print(f"ncnn {ncnn.__version__}, {len(rows)} test images")
    for calib_opts in (False, True):
        run(param, model, calib_opts, mats, labels)


def forward(net: ncnn.Net, m: ncnn.Mat) -> np.ndarray:
    inp, out = net.input_names()[0], net.output_names()[0]
    ex = net.create_extractor()
    ex.input(inp, m)
    ret, o = ex.extract(out)
    assert ret == 0
    return np.array(o, dtype=np.float32).ravel().copy()


def run(param: Path, model: Path, calib_opts: bool, mats: list, labels: np.ndarray) -> None:
    net = load_net(param, model, calib_opts)
    logits = np.stack([forward(net, m) for m in mats])
    top1 = float((logits.argmax(1) == labels).mean())
    best = float("inf")  # best of 5 timed passes over the test set (after the pass above)
    for _ in range(5):
        t0 = time.perf_counter()
        for m in mats:
            forward(net, m)
        best = min(best, (time.perf_counter() - t0) / len(mats))
    name = "calib options (fp16 off)" if calib_opts else "default options"
    print(
        f"{name}: inputs {net.input_names()} outputs {net.output_names()}  "
        f"fp32 top-1 {top1:.4f} ({round(top1 * len(mats))}/{len(mats)})  "
        f"forward {best * 1e3:.3f} ms/image"
    )
    net.clear()


if __name__ == "__main__":
    main()
