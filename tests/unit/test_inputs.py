from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edgecal.errors import ImageError, InputFileError, UsageError
from edgecal.inputs.samples import decode_image_bgr, load_npy, make_sample_source, read_list
from edgecal.inputs.spec import InputSpec


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_list_relative_to_list_file_and_spaces_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    a = touch(tmp_path / "lists" / "sub dir" / "a b.png")
    x = touch(tmp_path / "abs" / "x.png")
    lst = tmp_path / "lists" / "list.txt"
    lst.write_text(f"# comment\nsub dir/a b.png\n\n  {x}  \n")
    assert read_list(lst) == [a, x]


def test_ncnn_compat_list_takes_first_token_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "images" / "a.png")
    touch(tmp_path / "images" / "b.png")
    lst = tmp_path / "lists" / "list.txt"
    lst.parent.mkdir()
    lst.write_text("images/a.png 3\n\nimages/b.png\n")
    assert read_list(lst, ncnn_compat=True) == [Path("images/a.png"), Path("images/b.png")]


def test_own_list_lines_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list written for ncnn2table (lines relative to where it is run) works with
    calibrate/validate/tune's reading too."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "data" / "calib" / "0000_0.png")
    lst = tmp_path / "data" / "lists" / "calib.txt"
    lst.parent.mkdir()
    lst.write_text("data/calib/0000_0.png\n")
    assert read_list(lst) == [Path("data/calib/0000_0.png")]


def test_line_naming_two_different_files_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "img" / "a.png", b"cwd")
    touch(tmp_path / "lists" / "img" / "a.png", b"list folder")
    lst = tmp_path / "lists" / "list.txt"
    lst.write_text("img/a.png\n")
    with pytest.raises(InputFileError) as info:
        read_list(lst)
    msg = info.value.message
    assert "line 1 of list file" in msg and str(lst) in msg
    assert str(tmp_path / "lists" / "img" / "a.png") in msg and " img/a.png " in msg
    assert "relative to the list file's folder and relative to the current directory" in msg
    # ncnn2table's drop-in keeps ncnn's rule: the current directory wins
    assert read_list(lst, ncnn_compat=True) == [Path("img/a.png")]


def test_line_naming_one_file_two_ways_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "img" / "a.png")
    lst = tmp_path / "list.txt"
    lst.write_text("img/a.png\n")
    (tmp_path / "link").symlink_to(tmp_path)
    # the list's folder spelled another way than the current directory: the same file
    for spelled in (lst, tmp_path / "link" / "list.txt", Path("list.txt")):
        [got] = read_list(spelled)
        assert got.resolve() == (tmp_path / "img" / "a.png").resolve()


def test_line_naming_no_file_says_line_rule_and_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "lists" / "a.png")
    lst = tmp_path / "lists" / "list.txt"
    lst.write_text("a.png\n\nimg/nope.png\n")
    for compat in (False, True):
        with pytest.raises(InputFileError) as info:
            read_list(lst, ncnn_compat=compat)
        msg = info.value.message
        assert f"line 3 of list file {lst} names no file" in msg
        tried = msg.split("tried ")[1].split("; ")[0].split(", ")
        assert sorted(tried) == sorted(
            [str(tmp_path / "lists" / "img" / "nope.png"), "img/nope.png"]
        )
        assert "relative to the current directory" in msg and "list file's folder" in msg
    touch(tmp_path / "lists" / "img" / "nope.png")
    # the drop-in falls back to the list's folder when the current directory has no such file
    assert read_list(lst, ncnn_compat=True)[1] == tmp_path / "lists" / "img" / "nope.png"


def test_missing_absolute_path_named(tmp_path: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text(f"{tmp_path / 'gone.png'}\n")
    with pytest.raises(
        InputFileError,
        match=r"line 1 of list file .* names no file: tried " + str(tmp_path / "gone.png"),
    ):
        read_list(lst)


# the ways a list written for ncnn2table (or on Windows) looks: line ends, white space around
# and after the path (ncnn2table reads only the first word), blank lines, a byte-order mark
line_end = st.sampled_from(["\n", "\r\n", "\r"])
padding = st.sampled_from(["", " ", "  ", "\t"])
after = st.sampled_from(["", " 3", "\t7", " label x"])


@settings(max_examples=40)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["abs", "cwd", "list"]),
            st.integers(0, 3),
            padding,
            padding,
            after,
            line_end,
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_ncnn2table_lists_read_by_every_command(
    lines: list[tuple[str, int, str, str, str, str, int]], bom: bool
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d).resolve()
        with contextlib.chdir(root):
            lst = root / "lists" / "calib.txt"
            files = {
                "abs": root / "elsewhere",
                "cwd": root / "cwd_imgs",
                "list": root / "lists" / "imgs",
            }
            for folder in files.values():
                for i in range(4):
                    touch(folder / f"{i}.png")
            text, wanted = "\ufeff" if bom else "", []
            for where, i, lead, trail, extra, end, blanks in lines:
                name = {
                    "abs": str(files["abs"] / f"{i}.png"),
                    "cwd": f"cwd_imgs/{i}.png",
                    "list": f"imgs/{i}.png",
                }[where]
                text += end * blanks + lead + name + extra + trail + end
                wanted.append(
                    {"abs": files["abs"], "cwd": Path("cwd_imgs"), "list": lst.parent / "imgs"}[
                        where
                    ]
                    / f"{i}.png"
                )
            lst.write_bytes(text.encode())
            assert read_list(lst) == wanted
            assert read_list(lst, ncnn_compat=True) == wanted


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
