"""A .param that ncnn loads but runs wrongly (a layer name or a produced blob given twice), or
refuses with an obscure message (a byte-order mark): refused, naming the file and lines."""

from __future__ import annotations

import pytest

from edgecal.errors import ModelFormatError
from edgecal.ncnnfmt.param import parse_param

HEAD = "7767517\n4 4\nInput in0 0 1 in0\n"


def test_a_layer_name_given_twice_is_refused_naming_both_lines() -> None:
    text = HEAD + "ReLU r0 1 1 in0 a\nReLU r1 1 1 a b\nReLU r0 1 1 b c\n"
    with pytest.raises(ModelFormatError) as info:
        parse_param(text, "dup.param")
    message = str(info.value)
    assert message.startswith("dup.param:6: layer name 'r0' is used twice, on line 4 and line 6")


def test_a_blob_produced_twice_is_refused_naming_both_layers() -> None:
    text = HEAD + "ReLU r0 1 1 in0 a\nReLU r1 1 1 a a\nReLU r2 1 1 a c\n"
    with pytest.raises(ModelFormatError) as info:
        parse_param(text, "dupblob.param")
    message = str(info.value)
    assert message.startswith(
        "dupblob.param:5: blob 'a' is produced twice, by layer 'r0' on line 4 and by layer "
        "'r1' on line 5"
    )


def test_a_byte_order_mark_is_named_as_such() -> None:
    text = HEAD + "ReLU r0 1 1 in0 a\nReLU r1 1 1 a b\nReLU r2 1 1 b c\n"
    parse_param(text, "ok.param")
    with pytest.raises(ModelFormatError, match=r"bom\.param:1: .*byte-order mark") as info:
        parse_param("\ufeff" + text, "bom.param")
    assert "without a byte-order mark" in str(info.value)
