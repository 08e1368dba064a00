from __future__ import annotations

import pytest

from edgecal.cli.ncnnargs import bracket_groups, parse_ncnn2table
from edgecal.errors import UsageError


def test_bracket_groups_split_like_strtok() -> None:
    assert bracket_groups("[0],[127.5,127.5,127.5]", "mean=") == [[0.0], [127.5, 127.5, 127.5]]
    assert bracket_groups("104,117,123", "--mean") == [[104.0, 117.0, 123.0]]
    assert bracket_groups("[1,2][3]", "mean=") == [[1.0, 2.0], [3.0]]


def test_a_value_that_is_not_numbers_names_its_key() -> None:
    with pytest.raises(UsageError, match=r"^norm= '1,x' is not a list of numbers"):
        parse_ncnn2table(["m.param", "m.bin", "l.txt", "t.table", "norm=1,x"])
    with pytest.raises(UsageError, match=r"^mean= '1,,2': an empty item"):
        parse_ncnn2table(["m.param", "m.bin", "l.txt", "t.table", "mean=1,,2"])


def test_dataset_form_with_multi_input_reference_command() -> None:
    argv = (
        "model.param model.bin list_a.txt,list_b.txt kl.table mean=[0],[127.5,127.5,127.5] "
        "norm=[0.00392157],[0.00784314,0.00784314,0.00784314] shape=[32,32],[16,16] "
        "pixel=GRAY,RGB thread=1 method=kl"
    ).split()
    a = parse_ncnn2table(argv)
    assert a.lists == ["list_a.txt", "list_b.txt"] and a.table == "kl.table"
    assert a.mean == [[0.0], [127.5] * 3] and a.shape == [[32, 32], [16, 16]]
    assert a.pixel == ["GRAY", "RGB"] and a.thread == 1 and a.method == "kl" and a.type == 0


def test_keys_match_by_prefix_and_unknown_keys_warn() -> None:
    a = parse_ncnn2table("m.param m.bin l.txt t.table threads=4 inputname=in0".split())
    assert a.thread == 4
    assert len(a.warnings) == 1 and "inputname" in a.warnings[0]


def test_weight_only_form_when_fourth_arg_has_equals() -> None:
    a = parse_ncnn2table("m.param m.bin t.table method=aciq".split())
    assert a.lists is None and a.table == "t.table" and a.method == "aciq"
    assert parse_ncnn2table("m.param m.bin t.table".split()).lists is None


@pytest.mark.parametrize(
    "argv",
    [
        "m.param m.bin",
        "m.param m.bin l.txt t.table --param=x",
        "m.param m.bin l.txt t.table method=minmax",
        "m.param m.bin l.txt t.table thread=-1",
        "m.param m.bin l.txt t.table type=2",
        "m.param m.bin l.txt t.table shape=[3.5,2]",
        "m.param m.bin l.txt t.table stray",
    ],
)
def test_bad_arguments_are_usage_errors(argv: str) -> None:
    with pytest.raises(UsageError):
        parse_ncnn2table(argv.split())
