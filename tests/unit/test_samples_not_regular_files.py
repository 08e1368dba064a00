"""Sample lists and the files they name: a folder, a FIFO (or any file that is not a regular
file) and an image given as the list are refused with an error naming them -- never opened (a
FIFO blocks the opening forever), never a bare Python error."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgecal.errors import CalibrationError, EdgecalError, ImageError, InputFileError
from edgecal.files.userfile import not_a_file, read_bytes, read_text
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list, sample_magic
from edgecal.inputs.spec import InputSpec
from edgecal.runs.calibrun import build_manifest, check_unchanged

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
SPEC = InputSpec(blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,))


def _images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(sorted((DIGITS / "images").iterdir())[:n]):
        out.append(folder / f"img_{i}.png")
        shutil.copyfile(p, out[-1])
    return out


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def raised(fn: Callable[[], object], fifo: Path | None = None) -> BaseException:
    """What ``fn`` raises, within 20 s: a call stuck opening ``fifo`` is released (the FIFO
    opened for writing and closed) and fails the test."""
    box: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the test
            box[0] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():
        if fifo is not None:  # release the reader
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        t.join(5)
        pytest.fail(f"{fn} blocked (opening a FIFO?)")
    assert box[0] is not None, "no error"
    return box[0]


def test_a_list_line_naming_a_folder_is_refused_with_its_line(tmp_path: Path) -> None:
    _images(tmp_path / "calib")
    lst = tmp_path / "withdir.txt"
    lst.write_text("calib/img_0.png\ncalib\n")
    with pytest.raises(InputFileError) as err:
        read_list(lst)
    assert "line 2 of list file" in err.value.message and str(lst) in err.value.message
    assert "names a folder" in err.value.message


def test_a_fifo_as_the_list_file_is_refused_unopened(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "fifo.txt")
    err = raised(lambda: read_list(fifo), fifo)
    assert isinstance(err, InputFileError)
    assert f"list file {fifo} is a FIFO" in err.message


def test_a_list_line_naming_a_fifo_is_refused(tmp_path: Path) -> None:
    _images(tmp_path)
    fifo = _fifo(tmp_path / "pipe.png")
    lst = tmp_path / "list.txt"
    lst.write_text("img_0.png\npipe.png\n")
    err = raised(lambda: read_list(lst), fifo)
    assert isinstance(err, InputFileError)
    assert "line 2 of list file" in err.message and "a FIFO" in err.message


def test_a_fifo_in_an_images_folder_is_refused(tmp_path: Path) -> None:
    _images(tmp_path)
    fifo = _fifo(tmp_path / "x.png")
    err = raised(lambda: read_list(tmp_path), fifo)
    assert isinstance(err, InputFileError)
    assert f"{fifo} in the images folder" in err.message and "a FIFO" in err.message


def test_a_folder_named_like_an_image_in_an_images_folder_is_refused(tmp_path: Path) -> None:
    _images(tmp_path)
    (tmp_path / "more.png").mkdir()
    with pytest.raises(ImageError, match=r"more\.png in the images folder .* is a folder"):
        read_list(tmp_path)


def test_a_fifo_sample_given_directly_is_refused(tmp_path: Path) -> None:
    imgs = _images(tmp_path)
    fifo = _fifo(tmp_path / "pipe.npy")
    spec = InputSpec(blob="in0", kind="npy")
    err = raised(lambda: make_sample_source([SPEC, spec], [imgs[:1], [fifo]]), fifo)
    assert isinstance(err, ImageError)
    assert f"sample {fifo} is a FIFO" in err.message


def test_read_bytes_refuses_a_fifo_unopened(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "model.param")
    assert not_a_file(fifo) == "a FIFO (named pipe)"
    err = raised(lambda: read_bytes(fifo, "param file"), fifo)
    assert isinstance(err, InputFileError) and "param file" in err.message
    err = raised(lambda: load_model(fifo, DIGITS / "model.bin"), fifo)
    assert isinstance(err, InputFileError) and "a FIFO" in err.message


def test_read_text_refuses_a_device() -> None:
    with pytest.raises(InputFileError, match="/dev/null is a device, not a regular file"):
        read_text(Path("/dev/null"), "labels file")


def test_resume_refuses_a_sample_that_became_a_fifo(tmp_path: Path) -> None:
    imgs = _images(tmp_path)
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    source = make_sample_source([SPEC], [imgs])
    manifest = build_manifest(
        model, source, method="kl", runtime="calibration", threads=1, histograms=True, options={}
    )
    imgs[1].unlink()
    fifo = _fifo(imgs[1])
    err = raised(lambda: check_unchanged(manifest, model, "run"), fifo)
    assert isinstance(err, CalibrationError) and "a FIFO" in err.message


def test_an_image_given_as_the_list_is_named_so(tmp_path: Path) -> None:
    imgs = _images(tmp_path)
    with pytest.raises(InputFileError) as err:
        read_list(imgs[0])
    assert err.value.message == (
        f"{imgs[0]} is an image, not a list file: give a list file (one path per line) or a "
        "folder of images"
    )
    lst = tmp_path / "list.png"  # a text list named like an image is still a list
    lst.write_text("".join(f"{p.name}\n" for p in imgs))
    assert read_list(lst) == imgs


def test_an_npy_given_as_the_list_is_named_so(tmp_path: Path) -> None:
    npy = tmp_path / "sample.npy"
    np.save(npy, np.zeros((1, 4, 4), np.float32))
    with pytest.raises(InputFileError, match=r"sample\.npy is an \.npy array, not a list file"):
        read_list(npy)


def test_a_damaged_image_with_an_image_suffix_is_named_an_image(tmp_path: Path) -> None:
    pgm = tmp_path / "x.pgm"
    pgm.write_bytes(b"P5\n2 2\n255\n\x00\x01\x02\xff")
    with pytest.raises(EdgecalError, match=r"x\.pgm is an image, not a list file"):
        read_list(pgm)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "an image"),
        (b"\xff\xd8\xff\xe0\0\x10JFIF", "an image"),
        (b"BM6\x0c\0\0\0\0\0\x006\0\0\0", "an image"),
        (b"RIFF\x10\0\0\0WEBPVP8 ", "an image"),
        (b"II*\0\x08\0\0\0", "an image"),
        (b"\x93NUMPY\x01\0v\0", "an .npy array"),
        (b"BMW/img_0.png\n", None),
        (b"calib/calib_000.png\n", None),
        (b"", None),
    ],
)
def test_sample_magic(head: bytes, kind: str | None) -> None:
    assert sample_magic(head) == kind
