from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.errors import ModelFormatError
from edgecal.ncnnfmt.param import int_value, parse_param, parse_value, render_param

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
CASES = ["digits", "npy", "multi"]
FILES = ["model.param", "int8_kl.param", "int8_aciq.param"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fname", FILES)
def test_reference_round_trip(case: str, fname: str) -> None:
    text = (REF / case / fname).read_text()
    assert render_param(parse_param(text, fname)) == text


def test_structure_digits() -> None:
    pf = parse_param((REF / "digits" / "model.param").read_text())
    conv = pf.layer("convrelu_0")
    assert conv.type == "Convolution"
    assert conv.param_int(0, 0) == 16 and conv.param_int(6, 0) == 144
    assert pf.input_blobs() == ["in0"]
    assert pf.blob_names()[:3] == ["in0", "1", "2"]
    assert pf.producer("1") is conv
    assert [c.name for c in pf.consumers("1")] == ["convdwrelu_0"]
    with pytest.raises(ModelFormatError):
        pf.layer("nope")


def test_modified_layer_renders_modelwriter_style() -> None:
    text = "7767517\n2 2\nInput in0 0 1 in0 0=4\nReLU r 1 1 in0 out\n"
    pf = parse_param(text)
    pf.layers[1].set_param(0, int_value(3))
    out = render_param(pf)
    assert out.splitlines()[2] == "Input in0 0 1 in0 0=4"
    assert out.splitlines()[3] == f"{'ReLU':<24} {'r':<24} 1 1 in0 out 0=3"


@pytest.mark.parametrize(
    ("key", "text", "pid", "kind", "value"),
    [
        ("0", "16", 0, "int", 16),
        ("1", "1.5", 1, "float", 1.5),
        ("2", "1e-3", 2, "float", float.fromhex("0x1.0624dep-10")),
        ("-23310", "2,1.0,2.0", 10, "float_array", (1.0, 2.0)),
        ("-23309", "3,1,2,3", 9, "int_array", (1, 2, 3)),
        ("9", "1,2,3", 9, "int_array", (1, 2, 3)),
        ("6", '"a,b"', 6, "string", "a,b"),
        ("-23330", "4,3,10,6,3", 30, "int_array", (3, 10, 6, 3)),
    ],
)
def test_param_value_forms(key: str, text: str, pid: int, kind: str, value: object) -> None:
    got_pid, pv = parse_value(key, text)
    assert (got_pid, pv.kind, pv.value, pv.text) == (pid, kind, value, text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("7767518\n1 1\nInput in0 0 1 in0\n", "bad magic"),
        ("7767517\n2 2\nInput in0 0 1 in0\n", "truncated"),
        ("7767517\n1 2\nReLU r 1 1 a\n", "truncated line"),
        ("7767517\n1 1\nInput in0 0 1 in0 32=1\n", "out of range"),
        ("7767517\n1 1\nInput in0 0 1 in0 0=1.2.3\n", "<t>:3"),
        ("7767517\nx 1\n", "bad counts"),
        ("7767517\n1 1\nInput in0 0 1 in0 0=1,\n", "bad param"),
        ("7767517\n1 1\nInput in0 0 1 in0\nReLU r 1 1 in0 o\n", "more layer lines"),
    ],
)
def test_errors(text: str, needle: str) -> None:
    with pytest.raises(ModelFormatError) as exc:
        parse_param(text, "<t>")
    assert "<t>" in str(exc.value)
    assert needle in str(exc.value)


def test_topology_reference_models() -> None:
    ncnn = pytest.importorskip("ncnn")
    from edgecal.ncnnfmt.topology import check_topology

    for case in CASES:
        path = REF / case / "model.param"
        net = ncnn.Net()
        net.load_param(str(path))
        check_topology(parse_param(path.read_text()), net)


def test_topology_mismatch() -> None:
    ncnn = pytest.importorskip("ncnn")
    from edgecal.ncnnfmt.topology import check_topology

    path = REF / "digits" / "model.param"
    net = ncnn.Net()
    net.load_param(str(path))
    pf = parse_param(path.read_text())
    pf.layers[2].name = "renamed"
    with pytest.raises(ModelFormatError):
        check_topology(pf, net)
