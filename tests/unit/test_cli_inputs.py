"""``edgecal.cli.inputs``: --images/--npy and their per-input options as typed inputs, with the
option counts checked -- after the model's own errors, as the commands always checked them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgecal.cli.inputs import inputs_from_args
from edgecal.errors import EdgecalError, UsageError
from edgecal.inputs.spec import ImageInput, TensorInput

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
MODEL = (str(SAMPLE / "model.param"), str(SAMPLE / "model.bin"))  # one input


def ns(
    *lists: tuple[str, str],
    mean: tuple[str, ...] = (),
    norm: tuple[str, ...] = (),
    shape: tuple[str, ...] = (),
    pixel: tuple[str, ...] = (),
) -> argparse.Namespace:
    return argparse.Namespace(
        lists=list(lists), mean=list(mean), norm=list(norm), shape=list(shape), pixel=list(pixel)
    )


def test_each_input_gets_its_share_of_the_options() -> None:
    args = ns(
        ("image", "a.txt"),
        ("npy", "b.txt"),
        ("image", "c.txt"),
        mean=("1,2,3", "4"),
        pixel=("RGB", "GRAY"),
        shape=("8,8", "2,3,4", "4,4"),
    )
    assert inputs_from_args(args) == [
        ImageInput("a.txt", pixel="RGB", mean=(1.0, 2.0, 3.0), shape=(8, 8)),
        TensorInput("b.txt", shape=(2, 3, 4)),
        ImageInput("c.txt", pixel="GRAY", mean=(4.0,), shape=(4, 4)),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ns(("image", "a"), ("image", "b"), norm=("1",)),
            "1 --norm value(s) given for 2 image input(s)",
        ),
        (
            ns(("image", "a"), ("npy", "b"), shape=("4,4",)),
            "1 --shape value(s) given for 2 input(s)",
        ),
        (ns(("image", "a"), pixel=("RGB", "BGR")), "2 --pixel value(s) given for 1 image input(s)"),
    ],
)
def test_option_counts(args: argparse.Namespace, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inputs_from_args(args)


def test_the_model_and_its_list_count_come_first() -> None:
    two = ns(("image", "a"), ("image", "b"), mean=("1",))
    with pytest.raises(UsageError, match="1 --mean value"):
        inputs_from_args(two)  # without the model: the option's own error
    with pytest.raises(UsageError, match=r"has 1 input\(s\) \(in0\) but 2 sample list\(s\)"):
        inputs_from_args(two, MODEL)
    bad = ns(("image", "a"), mean=("1,x",))
    with pytest.raises(EdgecalError, match="does not exist"):
        inputs_from_args(bad, (MODEL[0], str(SAMPLE / "missing.bin")))
    with pytest.raises(UsageError, match="'1,x'"):
        inputs_from_args(bad, MODEL)
