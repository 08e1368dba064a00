"""Non-finite numbers in inputs, activations and scales get a clear answer (issue 10, part 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecal.calib import table as tables
from edgecal.calib.build import build_table
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.table import CalibrationTable, parse_table
from edgecal.errors import ImageError, TableError
from edgecal.inputs.samples import load_npy
from edgecal.inputs.spec import InputSpec
from edgecal.ncnnfmt.modelbin import WeightRecord
from edgecal.ncnnfmt.param import Layer, int_value
from edgecal_agent import stats

NPY = InputSpec("in0", "npy", shape=(4, 3, 2))


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_a_nonfinite_npy_sample_is_an_error_naming_it(
    tmp_path: Path, value: float, word: str
) -> None:
    arr = np.ones((2, 3, 4), np.float32)
    arr[1, 2, 3] = value
    path = tmp_path / "bad sample.npy"
    np.save(path, arr)
    with pytest.raises(ImageError) as info:
        load_npy(path, NPY)
    msg = str(info.value)
    assert str(path) in msg and f"1 {word}" in msg and "(1, 2, 3)" in msg
    assert "remove it from the list" in msg


def test_a_finite_npy_sample_loads_unchanged(tmp_path: Path) -> None:
    arr = np.linspace(-3e38, 3e38, 24, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "ok.npy", arr)
    assert np.array_equal(load_npy(tmp_path / "ok.npy", NPY), arr)


@pytest.mark.parametrize("stage", [4, 1 << 16])
def test_absmax_accumulator_flags_nonfinite_values(stage: int) -> None:
    for bad in (np.nan, np.inf, -np.inf):
        acc = stats.AbsMaxAccumulator(stats._Scratch(), stage=stage)
        acc.add(np.array([1.0, -2.0], np.float32))
        acc.add(np.array([0.5, bad, 3.0], np.float32))
        acc.value  # noqa: B018 - drains the stage
        assert acc.nonfinite
    acc = stats.AbsMaxAccumulator(stats._Scratch(), stage=stage)
    acc.add(np.array([3e38, -3.4028235e38], np.float32))
    assert acc.value == np.float32(3.4028235e38) and not acc.nonfinite
    assert stats.count_nonfinite(np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)) == (1, 2)


def test_build_table_warns_for_every_unusable_scale() -> None:
    """ACIQ with one weight per group gives scale 0 (as ncnn2table): the table build says that
    `quantize` refuses the line (today: only the ACIQ note, nothing about the zero scale)."""
    dw = Layer(
        "ConvolutionDepthWise",
        "d",
        ["in"],
        ["out"],
        {k: int_value(v) for k, v in {0: 4, 1: 1, 6: 4, 7: 4}.items()},
    )
    counts = np.zeros(2048, np.uint64)
    counts[:100] = 1
    build = build_table(
        [(dw, {"weight": WeightRecord("weight", "f32", np.arange(1, 5, dtype=np.float32))})],
        {"d": BlobHistogram(counts, np.float32(2.0), 16)},
        "aciq",
    )
    assert any("d_param_0" in w and "refuses" in w for w in build.warnings), build.warnings


def test_table_lines_are_kept_and_unusable_scales_refused_by_line() -> None:
    table = parse_table(
        "# comment\n\nconv_param_0 1.5 0.000000 \nconv 2.0 \nfc nan \n", source="t.table"
    )
    assert table.lines == {"conv_param_0": 3, "conv": 4, "fc": 5}
    tables.refuse_unusable_scales(table, ["conv"])  # fine
    with pytest.raises(
        TableError,
        match=r"line 3: conv_param_0 has weight scale 0\.000000 "
        r"\(value 2 of 2\)",
    ):
        tables.refuse_unusable_scales(table, ["conv", "conv_param_0"])
    with pytest.raises(TableError, match="line 5: fc has input blob scale nan"):
        tables.refuse_unusable_scales(table, ["fc"])
    mem = CalibrationTable()
    mem.set("x", [-1.0])
    with pytest.raises(TableError, match=r"^x has input blob scale -1\.000000"):
        tables.refuse_unusable_scales(mem, ["x"])
    assert [
        i for i, _ in tables.bad_scales(np.array([1, 0, -1, np.inf, np.nan, 1e-45], np.float32))
    ] == [1, 2, 3, 4, 5]  # a subnormal scale (1e-45) is unusable too


def test_fatal_signal_tells_a_crash_from_a_kill() -> None:
    from edgecal.device.session import fatal_signal

    assert fatal_signal(-11, False, []) == "SIGSEGV"
    assert fatal_signal(134, True, []) == "SIGABRT"  # 128 + 6 from an SSH shell
    assert fatal_signal(-9, False, []) == "" and fatal_signal(137, True, []) == ""
    assert fatal_signal(-1, True, ["x", "Fatal Python error: Bus error"]) == "Bus error"
    assert fatal_signal(1, False, ["Traceback ..."]) == ""


def test_deterministic_agent_failures_are_job_errors() -> None:
    from edgecal.errors import AgentCrash, AgentError
    from edgecal.fleet.scheduler import _board_fault

    for kind in (
        "OutOfMemory",
        "NonFiniteActivation",
        "ExtractError",
        "TypeError",
        "UnicodeEncodeError",
    ):
        assert not _board_fault(AgentError("x", kind=kind))
    assert not _board_fault(AgentCrash("x"))
    assert _board_fault(AgentError("x", kind="OSError"))  # e.g. a full disk: retried


def test_non_utf8_names_print_as_bytes_and_push_under_a_utf8_name() -> None:
    import os

    from edgecal.files.fsnames import device_file_name, printable

    name = os.fsdecode(b"caf\xe9 \xff.png")  # latin-1 bytes: not UTF-8
    assert printable(f"sample {name} does not exist") == "sample caf\\xe9 \\xff.png does not exist"
    assert printable("plain é") == "plain é"
    assert device_file_name(name) == "caf_ _.png"
    assert device_file_name("ok é.param") == "ok é.param"
    assert device_file_name("a\nb;$(id)") == "a\nb;$(id)"  # names are data


def test_crash_layer_finds_the_layer_that_crashes_ncnn(tmp_path: Path) -> None:
    """A Crop reading far outside its input segfaults ncnn; the probe names it, and names
    nothing for a model that does not crash."""
    from edgecal.device.capture import write_shards
    from edgecal.ncnnfmt.param import parse_param
    from edgecal.workflows.crashsite import crash_layer

    ref = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"
    lines = (ref / "model.param").read_text().splitlines()
    n_layers, n_blobs = map(int, lines[1].split())
    out = [lines[0], f"{n_layers + 1} {n_blobs + 1}"]
    for text in lines[2:]:
        if text.split()[1] == "convdwrelu_0":
            out.append("Crop crop_x 1 1 1 1i 0=-100000000 1=-100000000 2=0 3=10 4=10 5=16")
            text = text.replace(" 1 1 1 2 ", " 1 1 1i 2 ", 1)
        out.append(text)
    param = tmp_path / "crash.param"
    param.write_text("\n".join(out) + "\n")
    spec = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))
    (shard,) = write_shards([(np.zeros((32, 32, 3), np.uint8),)], [spec], tmp_path)
    layer = crash_layer(parse_param(param.read_text(), str(param)), param, ref / "model.bin", shard)
    assert layer is not None and layer.name == "crop_x"
    fine = ref / "model.param"
    assert (
        crash_layer(parse_param(fine.read_text(), str(fine)), fine, ref / "model.bin", shard)
        is None
    )
