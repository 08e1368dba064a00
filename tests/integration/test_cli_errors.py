"""Bad input through the CLI: one line naming the file/layer and the fix, exit != 0, no traceback,
and no half-written output file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecal.cli.main import main

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
OLD = "old content\n"
DIGITS_OPTS = ["--pixel", "GRAY", "--mean", "0", "--norm", "0.00392157", "--shape", "32,32"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for case in ("digits", "npy", "multi"):
        shutil.copytree(REFERENCE / case, tmp_path / case)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.table").write_text(OLD)
    return tmp_path


def run_fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    assert code != 0, err
    assert "Traceback" not in err
    assert "edgecal: error:" in err
    for needle in needles:
        assert needle in err, err
    return err


def assert_untouched(work: Path) -> None:
    assert (work / "out.table").read_text() == OLD
    leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def calibrate_digits(
    extra: list[str],
    param: str = "digits/model.param",
    binf: str = "digits/model.bin",
    images: str = "digits/images.txt",
) -> list[str]:
    return [
        "calibrate",
        param,
        binf,
        "--images",
        images,
        *DIGITS_OPTS,
        "--out",
        "out.table",
        *extra,
    ]


def test_missing_param_file(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_fails(calibrate_digits([], param="nope.param"), capsys, "nope.param", "does not exist")
    assert_untouched(work)


def test_bad_magic(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = work / "digits" / "model.param"
    p.write_text(p.read_text().replace("7767517", "7767516", 1))
    run_fails(calibrate_digits([]), capsys, "model.param")
    assert_untouched(work)


def test_truncated_layer_line(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = work / "digits" / "model.param"
    lines = p.read_text().splitlines()
    lines[3] = "Convolution              convrelu_0               1 1"
    p.write_text("\n".join(lines) + "\n")
    run_fails(calibrate_digits([]), capsys, "model.param")
    assert_untouched(work)


def test_unknown_layer_type_with_weights(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = work / "digits" / "model.param"
    p.write_text(
        p.read_text().replace(
            "Convolution              convrelu_1", "FancyConv                convrelu_1"
        )
    )
    run_fails(calibrate_digits([]), capsys, "FancyConv", "convrelu_1")
    assert_untouched(work)


@pytest.mark.parametrize("delta", [-4, 4])
def test_bin_size_mismatch(work: Path, capsys: pytest.CaptureFixture[str], delta: int) -> None:
    b = work / "digits" / "model.bin"
    data = b.read_bytes()
    b.write_bytes(data[:delta] if delta < 0 else data + b"\0" * delta)
    run_fails(calibrate_digits([]), capsys, "model.bin")
    assert_untouched(work)


def test_image_that_is_not_an_image(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "digits" / "images" / "calib_03.png").write_text("not a png")
    run_fails(calibrate_digits([]), capsys, "calib_03.png", "not a readable image")
    assert_untouched(work)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--mean", "0"], "--mean"),
        (["--norm", "1"], "--norm"),
        (["--shape", "32,32"], "--shape"),
        (["--pixel", "GRAY"], "--pixel"),
    ],
)
def test_option_counts_must_match_inputs(
    work: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    # two of them for a one-input model
    run_fails(calibrate_digits(extra), capsys, needle, "for 1 ")
    assert_untouched(work)


def test_pixel_type_unknown(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = calibrate_digits([])
    argv[argv.index("GRAY")] = "YUV"
    run_fails(argv, capsys, "YUV")


def test_multi_input_lists_of_different_length(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lb = work / "multi" / "list_b.txt"
    lb.write_text("\n".join(lb.read_text().splitlines()[:-3]) + "\n")
    run_fails(
        [
            "ncnn2table",
            "multi/model.param",
            "multi/model.bin",
            "multi/list_a.txt,multi/list_b.txt",
            "out.table",
            "mean=[0],[127.5,127.5,127.5]",
            "norm=[0.00392157],[0.00784314,0.00784314,0.00784314]",
            "shape=[32,32],[16,16]",
            "pixel=GRAY,RGB",
        ],
        capsys,
        "different lengths",
    )
    assert_untouched(work)


def test_ncnn2table_counts_checked_like_ncnn(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_fails(
        [
            "ncnn2table",
            "digits/model.param",
            "digits/model.bin",
            "digits/images.txt",
            "out.table",
            "norm=[0.00392157]",
            "shape=[32,32]",
            "pixel=GRAY",
        ],
        capsys,
        "expect 1 means, but got 0",
    )
    assert_untouched(work)


def test_npy_wrong_dtype_and_shape(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npy = work / "npy"
    np.save(npy / "samples" / "s03.npy", np.zeros((3, 6, 10), np.float64))
    run_fails(
        [
            "calibrate",
            "npy/model.param",
            "npy/model.bin",
            "--npy",
            "npy/samples.txt",
            "--shape",
            "10,6,3",
            "--out",
            "out.table",
        ],
        capsys,
        "s03.npy",
        "float32",
    )
    np.save(npy / "samples" / "s03.npy", np.zeros((10, 6, 3), np.float32))
    run_fails(
        [
            "calibrate",
            "npy/model.param",
            "npy/model.bin",
            "--npy",
            "npy/samples.txt",
            "--shape",
            "10,6,3",
            "--out",
            "out.table",
        ],
        capsys,
        "s03.npy",
        "(3, 6, 10)",
    )
    assert_untouched(work)


def test_table_naming_missing_layers(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = work / "digits" / "kl.table"
    t.write_text(t.read_text() + "ghost_layer 12.5 \n")
    (work / "o.param").write_text(OLD)
    run_fails(
        [
            "quantize",
            "digits/model.param",
            "digits/model.bin",
            "o.param",
            "o.bin",
            "--table",
            "digits/kl.table",
        ],
        capsys,
        "ghost_layer",
    )
    assert (work / "o.param").read_text() == OLD and not (work / "o.bin").exists()


def test_table_for_another_model(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_fails(
        [
            "ncnn2int8",
            "digits/model.param",
            "digits/model.bin",
            "o.param",
            "o.bin",
            "multi/kl.table",
        ],
        capsys,
    )
    assert not (work / "o.param").exists() and not (work / "o.bin").exists()


def test_blob_zero_on_every_image(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    black = work / "black"
    black.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(black / f"b{i}.png")
    run_fails(calibrate_digits([], images="black"), capsys, "convrelu_0", "--allow-zero-blobs")
    assert_untouched(work)
    assert main(["-q", *calibrate_digits(["--allow-zero-blobs"], images="black")]) == 0
    text = (work / "out.table").read_text()
    assert "inf" not in text and "nan" not in text
    assert "convrelu_0" in capsys.readouterr().err  # the warning names the layer


def test_unwritable_output(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_fails(
        [
            "quantize",
            "digits/model.param",
            "digits/model.bin",
            "nodir/o.param",
            "o.bin",
            "--table",
            "digits/kl.table",
        ],
        capsys,
        "nodir",
    )
