"""Preprocessing that does not fit the channels is refused before any work: ``--mean``/
``--norm`` with one value per channel of the pixel type (no more, no fewer, no empty item),
``--shape``'s C equal to the pixel type's channels and no negative size, and the channels the
model takes (its Input layer's ``c``, else the weights of the convolution reading the input)
equal to what the pixel type or the ``.npy`` samples feed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgecal.api.samples import open_samples
from edgecal.cli.main import main
from edgecal.cli.ncnnargs import bracket_groups
from edgecal.errors import EdgecalError, UsageError
from edgecal.inputs.model import load_model
from edgecal.inputs.spec import ImageInput, TensorInput, input_specs
from edgecal.ncnnfmt.param import parse_param

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
MODEL = [str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")]  # 3 channels, no c declared
RGB = ["--mean", "127.5,127.5,127.5", "--norm", "0.00784314,0.00784314,0.00784314"]


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model(Path(MODEL[0]), Path(MODEL[1]))


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    lines = (SAMPLE / "calib.txt").read_text().split()[:4]
    lst = tmp_path / "small.txt"
    lst.write_text("".join(f"{SAMPLE / x}\n" for x in lines))
    return lst


def _refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    code = main(["-q", "calibrate", *MODEL, *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (["--pixel", "RGB", "--mean", "1,2,3,4"], ["has 4 value(s)", "RGB has 3 channel(s)"]),
        (["--pixel", "GRAY", "--mean", "1,2,3"], ["has 3 value(s)", "GRAY has 1 channel(s)"]),
        (["--pixel", "RGB", "--mean", ",".join(["1"] * 20000)], ["has 20000 value(s)"]),
        (["--pixel", "RGB", "--norm", "1,1,1,1"], ["norm", "has 4 value(s)"]),
        (["--pixel", "RGB", "--mean", "1,,2,3"], ["empty item"]),
        (["--pixel", "RGB", "--mean", "1,2,3,"], ["empty item"]),
        (["--pixel", "RGB", "--shape", "48,48,4"], ["C=4", "RGB feeds 3 channel(s)"]),
        (["--pixel", "GRAY", "--shape", "48,48,3"], ["C=3", "GRAY feeds 1 channel(s)"]),
        (["--pixel", "RGB", "--shape=-48,48"], ["-48,48", "cannot be negative"]),
        (["--pixel", "RGB", "--shape=48,-1"], ["cannot be negative"]),
        (
            ["--pixel", "GRAY", "--mean", "0", "--norm", "1"],
            ["input in0", "GRAY feeds 1 channel(s)", "the model takes 3", "convrelu_0"],
        ),
        (["--pixel", "RGBA"], ["input in0", "RGBA feeds 4 channel(s)", "the model takes 3"]),
    ],
    ids=[
        "mean-4-for-rgb",
        "mean-3-for-gray",
        "mean-20000",
        "norm-4-for-rgb",
        "mean-empty-item",
        "mean-trailing-comma",
        "shape-c4-for-rgb",
        "shape-c3-for-gray",
        "shape-negative-w",
        "shape-negative-h",
        "gray-on-3-channel-model",
        "rgba-on-3-channel-model",
    ],
)
def test_preprocessing_that_does_not_fit_the_channels_is_refused(
    tmp_path: Path,
    images: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    needles: list[str],
) -> None:
    shape = [] if any(o.startswith("--shape") for o in options) else ["--shape", "48,48"]
    mean = [] if "--mean" in options or "--norm" in options else RGB
    if options[:2] == ["--pixel", "GRAY"] or options[:2] == ["--pixel", "RGBA"]:
        mean = []  # the defaults fit any pixel type: only the model's channels are wrong
    _refused(
        ["--images", str(images), *options, *mean, *shape], tmp_path / "t.table", capsys, *needles
    )


def test_zero_keeps_its_meaning_and_rgb_with_c_3_is_fine(model, images: Path) -> None:  # type: ignore[no-untyped-def]
    """0,0 is the image's own size and 0 one side kept in the aspect ratio (ncnn2table's
    rule); W,H,3 with RGB is what ncnn2table's shape=[w,h,c] says."""
    for shape in ((0, 0), (48, 0), (48, 48, 3)):
        (spec,) = open_samples(
            model, [ImageInput(images, "RGB", (1, 2, 3), (1, 1, 1), shape)]
        ).specs
        assert spec.shape == shape


def test_the_ncnn2table_dropin_checks_the_same(
    tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.table"
    base = [*MODEL, str(images), str(out), "norm=[1,1,1]", "thread=1"]
    for args, needle in (
        (["mean=[1,2,3,4]", "shape=[48,48]", "pixel=RGB"], "has 4 value(s)"),
        (["mean=[1,,2,3]", "shape=[48,48]", "pixel=RGB"], "empty item"),
        (["mean=[1,2,3]", "shape=[48,48,1]", "pixel=RGB"], "C=1"),
        (["mean=[0]", "norm=[1]", "shape=[48,48]", "pixel=GRAY"], "the model takes 3"),
    ):
        argv = [a for a in base if not (a.startswith("norm=") and any("norm=" in x for x in args))]
        assert main(["ncnn2table", *argv, *args]) in (1, 2)
        err = capsys.readouterr().err
        assert needle in err, err
        assert not out.exists()


def test_bracket_groups_refuse_an_empty_item() -> None:
    assert bracket_groups("[1,2],[3]", "mean=") == [[1.0, 2.0], [3.0]]
    for text in ("1,,2,3", "1,2,", ",1", "[1,,2]"):
        with pytest.raises(UsageError, match=r"^--mean .*empty item"):
            bracket_groups(text, "--mean")


def test_an_api_value_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(UsageError, match="item 2 is None"):
        input_specs("m.param", ["in0"], [ImageInput("x", "RGB", (1, None, 3))])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not a whole number"):
        input_specs("m.param", ["in0"], [ImageInput("x", "RGB", shape=(4.5, 4))])  # type: ignore[arg-type]


PARAM = """7767517
3 4
Input            in0   0 1 in0 {input}
Split            sp    1 2 in0 a b
Convolution      conv  1 1 a c 0=8 1=3 11=3 6={wsize}
"""


@pytest.mark.parametrize(
    ("input_params", "wsize", "want"),
    [
        ("0=32 1=32 2=4", 216, 4),  # declared: the Input layer's c wins
        ("", 216, 3),  # 216 = 8 outputs x 3 channels x 3x3: through the Split
        ("", 72, 1),
        ("", 100, None),  # not a whole number of channels: unknown
        ("0=32 1=32", 0, None),
    ],
)
def test_model_channels(input_params: str, wsize: int, want: int | None) -> None:
    from edgecal.inputs.spec import model_channels

    param = parse_param(PARAM.format(input=input_params, wsize=wsize))
    got = model_channels(param).get("in0")
    assert (got.count if got else None) == want


def test_declared_channels_name_the_input_layer() -> None:
    from edgecal.inputs.spec import model_channels

    param = parse_param(PARAM.format(input="0=8 1=8 2=1", wsize=216))
    with pytest.raises(UsageError, match=r"input in0 of m.param: pixel BGR feeds 3 .* takes 1"):
        input_specs("m.param", ["in0"], [ImageInput("x")], channels=model_channels(param))
    with pytest.raises(UsageError, match=r"--shape 8,8,3 gives 3 channel\(s\)"):
        input_specs(
            "m.param", ["in0"], [TensorInput("x", (8, 8, 3))], channels=model_channels(param)
        )
    (spec,) = input_specs(
        "m.param", ["in0"], [ImageInput("x", "GRAY")], channels=model_channels(param)
    )
    assert spec.pixel == "GRAY" and spec.mean == (0.0,)


def _npy_list(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    lst = tmp_path / "npy.txt"
    for name, arr in arrays.items():
        np.save(tmp_path / name, arr)
    lst.write_text("".join(f"{tmp_path / n}\n" for n in arrays))
    return lst


@pytest.mark.parametrize(
    ("bad", "needles"),
    [
        (np.zeros((48, 48, 3), np.float32), ["48 channel(s)", "(48, 48, 3)", "transpose(2, 0, 1)"]),
        (np.zeros((5, 10, 10), np.float32), ["5 channel(s)", "takes 3"]),
        (np.float32(1.0), ["is a scalar"]),
        (np.zeros((3, 0, 48), np.float32), ["is empty", "(3, 0, 48)"]),
    ],
    ids=["hwc", "five-channels", "scalar", "empty"],
)
def test_npy_samples_that_ncnn_cannot_feed_are_named(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bad: np.ndarray,
    needles: list[str],
) -> None:
    good = np.zeros((3, 48, 48), np.float32) + 0.5
    lst = _npy_list(tmp_path, {"good.npy": good, "bad.npy": np.asarray(bad)})
    _refused(["--npy", str(lst)], tmp_path / "t.table", capsys, str(tmp_path / "bad.npy"), *needles)


def test_a_broken_symlink_in_an_images_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    first = (SAMPLE / "calib.txt").read_text().split()[0]
    os.symlink(SAMPLE / first, folder / "a.png")
    os.symlink(tmp_path / "gone.png", folder / "b.png")
    err = _refused(["--images", str(folder), "--pixel", "RGB", *RGB], tmp_path / "t.table", capsys)
    assert "broken symlink" in err and str(folder / "b.png") in err and "fix the list" not in err


def test_model_channels_of_the_sample_model(model) -> None:  # type: ignore[no-untyped-def]
    from edgecal.inputs.spec import model_channels

    assert model_channels(model.param)["in0"].count == 3
    with pytest.raises(EdgecalError, match="the model takes 3"):
        open_samples(model, [ImageInput(SAMPLE / "calib.txt", pixel="GRAY")])
