"""Tables that used to pass but make useless int8 models: empty, a byte-order mark, absurd
scales, a missing input blob scale line."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from edgecal.api.quantize import quantize, read_table
from edgecal.calib.table import parse_float32, parse_table, refuse_unusable_scales
from edgecal.errors import TableError
from edgecal.inputs.model import load_model
from edgecal.int8.convert import quantize_model

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"


@pytest.mark.parametrize("text", ["", "\n\n", "# made by hand\n\n# nothing else\n", "\ufeff"])
def test_a_table_without_scale_lines_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.table"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TableError, match=r"empty\.table has no scale lines") as info:
        read_table(path)
    assert "calibrate" in str(info.value)


def test_quantize_refuses_an_empty_table_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty.table").write_text("# nothing\n")
    with pytest.raises(TableError, match="no scale lines"):
        quantize(
            (DIGITS / "model.param", DIGITS / "model.bin"),
            tmp_path / "m.param",
            tmp_path / "m.bin",
            table=tmp_path / "empty.table",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.table"]


def test_a_byte_order_mark_before_the_first_key_is_skipped() -> None:
    text = (DIGITS / "kl.table").read_text()
    assert parse_table("\ufeff" + text, "bom.table") == parse_table(text)


FLT_MAX = np.finfo(np.float32).max


@pytest.mark.parametrize(
    "token,want",
    [
        ("1e39", np.inf),
        ("-1e39", -np.inf),
        ("3.4028236e38", np.inf),  # above FLT_MAX + half an ulp: strtof gives inf
        ("3.4028235e38", FLT_MAX),  # FLT_MAX, whose upper neighbour is inf
        ("-3.4028235e38", -FLT_MAX),
    ],
)
def test_parsing_values_at_float32_limits_prints_no_numpy_warning(token: str, want: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_float32(token) == np.float32(want)


@pytest.mark.parametrize(
    "value,shown", [("1e-45", "1.40129846e-45"), ("1e-40", "9.9999461e-41"), ("1e39", "inf")]
)
def test_subnormal_and_overflowing_scales_are_refused_by_line(value: str, shown: str) -> None:
    table = parse_table(f"conv_param_0 2.0 \nconv {value} \n", source="t.table")
    with pytest.raises(TableError, match=f"line 2: conv has input blob scale {shown} ") as info:
        refuse_unusable_scales(table, ["conv_param_0", "conv"])
    assert "normal float32" in str(info.value)
    # the smallest normal float32 is fine
    refuse_unusable_scales(parse_table("conv 1.1754944e-38 \n"), ["conv"])


def test_a_missing_input_blob_scale_line_warns_naming_layer_and_table() -> None:
    model = load_model(DIGITS / "model.param", DIGITS / "model.bin")
    full = parse_table((DIGITS / "kl.table").read_text(), source="kl.table")
    layer = next(k for k in full if not k.endswith("_param_0"))
    lines = [ln for ln in (DIGITS / "kl.table").read_text().splitlines() if ln.split()[0] != layer]
    table = parse_table("\n".join(lines) + "\n", source="miss_act.table")
    _, _, report = quantize_model(model.param, model.weights, table)
    assert layer in report.kept_float
    [warning] = [w for w in report.warnings if layer in w]
    assert f"no {layer!r} line" in warning and "miss_act.table" in warning
    # both lines gone (a layer kept in float on purpose, as tune writes it): no warning
    _, _, report = quantize_model(model.param, model.weights, full.without([layer]))
    assert layer in report.kept_float and not report.warnings
