from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgecal.ncnnfmt.param import format_e, parse_param, parse_value, render_param, to_float32

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=12).filter(
    lambda s: "=" not in s
)
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False, width=32)


def _float_text(v: float) -> str:
    return format_e(v)


values = st.one_of(
    ints.map(str),
    floats.map(_float_text),
    st.lists(ints, min_size=1, max_size=5).map(lambda xs: ",".join(map(str, xs))),
    st.lists(floats, min_size=1, max_size=5).map(lambda xs: ",".join(map(_float_text, xs))),
    names.filter(lambda s: s[0].isalpha()),
)


@st.composite
def param_texts(draw: st.DrawFn) -> str:
    n = draw(st.integers(min_value=1, max_value=6))
    lines = ["7767517"]
    blobs = ["in0"]
    body = [f"{'Input':<24} {'in0':<24} 0 1 in0"]
    for i in range(1, n):
        bottom = draw(st.sampled_from(blobs))
        top = f"b{i}"
        blobs.append(top)
        ids = draw(st.lists(st.integers(min_value=0, max_value=29), unique=True, max_size=5))
        params = " ".join(f"{pid}={draw(values)}" for pid in ids)
        sep = draw(st.sampled_from([" ", "  ", " " * 9]))
        body.append(f"{'ReLU':<24}{sep}l{i} 1 1 {bottom} {top} {params}".rstrip())
    lines.append(f"{n} {len(blobs)}")
    end = draw(st.sampled_from(["\n", ""]))
    return "\n".join(lines + body) + end


@given(param_texts())
def test_round_trip(text: str) -> None:
    assert render_param(parse_param(text)) == text


@given(ints)
def test_int_values(v: int) -> None:
    pid, pv = parse_value("3", str(v))
    assert (pid, pv.kind, pv.value) == (3, "int", v)


@given(floats)
def test_float_values(v: float) -> None:
    _, pv = parse_value("1", format_e(v))
    assert pv.kind == "float" and pv.value == to_float32(float(format_e(v)))


@given(st.integers(min_value=0, max_value=31), st.lists(ints, min_size=1, max_size=6))
def test_old_style_int_arrays(pid: int, xs: list[int]) -> None:
    got, pv = parse_value(str(-23300 - pid), ",".join(map(str, [len(xs), *xs])))
    assert got == pid and pv.kind == "int_array" and pv.value == tuple(xs)


@given(st.lists(floats, min_size=2, max_size=6))
def test_new_style_float_arrays(xs: list[float]) -> None:
    _, pv = parse_value("4", ",".join(map(format_e, xs)))
    assert pv.kind == "float_array"
    assert pv.value == tuple(to_float32(float(format_e(x))) for x in xs)
