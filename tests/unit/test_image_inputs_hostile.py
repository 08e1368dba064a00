"""Hostile or huge images (issue 10, part 5): decompression bombs, Pillow's warnings, and images
far larger than the input resized on the host with ncnn's own resize."""

from __future__ import annotations

import warnings
from pathlib import Path

import ncnn
import numpy as np
import pytest
from PIL import Image

from edgecal.errors import ImageError
from edgecal.inputs import imagefit
from edgecal.inputs.samples import decode_image_bgr, make_sample_source
from edgecal.inputs.spec import InputSpec
from edgecal_agent.backend import to_mat

GRAY32 = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))


def _png(path: Path, rows: int, cols: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)).save(path)
    return path


def test_a_decompression_bomb_is_an_image_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow errors above twice this
    path = _png(tmp_path / "bomb.png", 50, 50)
    with pytest.raises(ImageError) as info:
        decode_image_bgr(path)
    assert str(path) in str(info.value) and "decompression bomb" in str(info.value)


def test_pillows_warnings_do_not_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: a warning, no error
    path = _png(tmp_path / "big.png", 40, 40)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        arr = decode_image_bgr(path)
    assert arr.shape == (40, 40, 3)
    assert [str(w.message) for w in seen] == []


def test_a_huge_image_is_resized_on_the_host_to_the_same_input_mat(tmp_path: Path) -> None:
    rows, cols = 2000, 2100  # 4.2 MP > HOST_RESIZE_PIXELS
    assert rows * cols > imagefit.HOST_RESIZE_PIXELS
    path = _png(tmp_path / "huge.png", rows, cols, seed=3)
    source = make_sample_source([GRAY32], [[path]])
    (shipped,) = source.load(0)
    assert shipped.shape == (32, 32, 3) and shipped.dtype == np.uint8
    full = decode_image_bgr(path)
    # what the agent computes from the shipped array == what it computed from the full image
    want = np.array(to_mat(ncnn, full, GRAY32, "full"))
    got = np.array(to_mat(ncnn, shipped, GRAY32, "shipped"))
    assert np.array_equal(got, want)
    assert len(source.notes.lines()) == 1 and "2100x2000 to 32x32" in source.notes.lines()[0]


def test_normal_images_are_shipped_as_decoded_and_the_resize_said_once(tmp_path: Path) -> None:
    paths = [_png(tmp_path / f"n{i}.png", 48, 64, seed=i) for i in range(3)]
    source = make_sample_source([GRAY32], [paths])
    for i, p in enumerate(paths):
        assert np.array_equal(source.load(i)[0], decode_image_bgr(p))
    lines = source.notes.lines()
    assert lines == ["input in0: 3 image(s) resized from 64x48 to 32x32 as --shape asks"]
    same = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (64, 48))
    quiet = make_sample_source([same], [paths])
    quiet.load(0)
    assert quiet.notes.lines() == []
