from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecal.errors import ImageError, InputFileError, UsageError
from edgecal.inputs import decode_image_bgr, load_npy, make_sample_source, read_list
from edgecal.inputspec import InputSpec


def test_list_relative_to_list_file_and_spaces_kept(tmp_path: Path) -> None:
    (tmp_path / "sub dir").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nsub dir/a b.png\n\n  /abs/x.png  \n")
    assert read_list(lst) == [tmp_path / "sub dir" / "a b.png", Path("/abs/x.png")]


def test_ncnn_compat_list_takes_first_token_relative_to_cwd(tmp_path: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("images/a.png 3\n\nimages/b.png\n")
    assert read_list(lst, ncnn_compat=True) == [Path("images/a.png"), Path("images/b.png")]


def test_folder_lists_images_sorted(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in read_list(tmp_path)] == ["a.png", "b.png"]


def test_missing_list_and_empty_list(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        read_list(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(InputFileError, match="names no samples"):
        read_list(tmp_path / "empty.txt")


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "I;16"])
def test_decode_matches_imread_colour_rules(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / f"x_{mode.replace(';', '')}.png"
    if mode == "RGB":
        Image.fromarray(rgb, "RGB").save(path)
        expect = rgb[:, :, ::-1]
    elif mode == "RGBA":
        rgba = np.dstack([rgb, rng.integers(0, 256, (5, 7), dtype=np.uint8)])
        Image.fromarray(rgba, "RGBA").save(path)
        expect = rgb[:, :, ::-1]  # imread drops alpha, no compositing
    elif mode in ("L", "LA"):
        grey = rgb[:, :, 0]
        Image.fromarray(grey, "L").convert(mode).save(path)
        expect = np.repeat(grey[:, :, None], 3, axis=2)
    elif mode == "P":
        img = Image.fromarray(rgb, "RGB").quantize(16)
        img.save(path)
        expect = np.asarray(img.convert("RGB"))[:, :, ::-1]
    else:
        v16 = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
        Image.fromarray(v16).save(path)
        expect = np.repeat((v16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    got = decode_image_bgr(path)
    assert got.dtype == np.uint8 and got.shape == (5, 7, 3)
    np.testing.assert_array_equal(got, expect)


def test_not_an_image_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("this is text")
    with pytest.raises(ImageError, match=r"bad\.png is not a readable image"):
        decode_image_bgr(bad)


def test_npy_checks_dtype_and_reversed_shape(tmp_path: Path) -> None:
    spec = InputSpec(blob="in0", kind="npy", shape=(10, 6, 3))
    ok = tmp_path / "ok.npy"
    np.save(ok, np.zeros((3, 6, 10), np.float32))
    assert load_npy(ok, spec).shape == (3, 6, 10)
    np.save(tmp_path / "f64.npy", np.zeros((3, 6, 10), np.float64))
    with pytest.raises(ImageError, match="float32"):
        load_npy(tmp_path / "f64.npy", spec)
    np.save(tmp_path / "shape.npy", np.zeros((10, 6, 3), np.float32))
    with pytest.raises(ImageError, match=r"expected \(3, 6, 10\)"):
        load_npy(tmp_path / "shape.npy", spec)


def test_sample_lists_must_pair(tmp_path: Path) -> None:
    a = [tmp_path / "a0.png", tmp_path / "a1.png"]
    for p in a:
        p.write_bytes(b"")
    specs = [InputSpec("in0"), InputSpec("in1")]
    with pytest.raises(UsageError, match="different lengths"):
        make_sample_source(specs, [a, a[:1]])
    with pytest.raises(UsageError, match="2 input"):
        make_sample_source(specs, [a])
    with pytest.raises(ImageError, match="does not exist"):
        make_sample_source(specs[:1], [[tmp_path / "missing.png"]])


def test_target_size_rules() -> None:
    assert InputSpec("x", shape=(32, 32)).target_size(24, 24) == (32, 32)
    assert InputSpec("x", shape=(0, 0)).target_size(24, 20) == (24, 20)
    assert InputSpec("x", shape=(12, 0)).target_size(24, 20) == (12, 10)
    assert InputSpec("x", shape=(0, 10)).target_size(24, 20) == (12, 10)
