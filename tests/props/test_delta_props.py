"""``edgecal.int8.delta``: a variant fed the base's ``feed`` blobs and computing only its
``recomputed`` layers gives the outputs of its whole forward, on any network shape (branches,
joins, several tops, outputs in the middle).  The "network" is simulated: a blob's value is a
function of its layer's line, bytes and inputs, as ncnn's is."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal.int8.convert import ConversionReport, QuantizedModel
from edgecal.int8.delta import FROM_BASE, bin_patch, delta
from edgecal.ncnnfmt.param import Layer, ParamFile, int_value, render_param


@st.composite
def networks(draw: st.DrawFn) -> tuple[QuantizedModel, QuantizedModel, list[str]]:
    """A base model, a variant of it (some layers with other bytes or another parameter) and
    the blobs asked for."""
    n = draw(st.integers(min_value=1, max_value=10))
    blobs = ["in0"]
    layers = [Layer("Input", "input", [], ["in0"])]
    for i in range(n):
        bottoms = draw(st.lists(st.sampled_from(blobs), min_size=1, max_size=3, unique=True))
        tops = [f"b{i}_{t}" for t in range(draw(st.integers(min_value=1, max_value=2)))]
        layers.append(Layer("Op", f"l{i}", bottoms, tops, {0: int_value(1)}))
        blobs.extend(tops)
    base_chunks = [layer.name.encode() for layer in layers]
    changed = draw(st.sets(st.sampled_from([x.name for x in layers[1:]])))
    var_layers, var_chunks = [], []
    for layer, chunk in zip(layers, base_chunks, strict=True):
        copy = layer.copy()
        if layer.name in changed:
            if draw(st.booleans()):
                chunk += b"'"  # other weights (another scale)
            else:
                copy.set_param(0, int_value(2))  # another line (a requantize scale fused)
        var_layers.append(copy)
        var_chunks.append(chunk)
    outputs = draw(st.lists(st.sampled_from(blobs[1:]), min_size=1, max_size=3, unique=True))

    def model(ls: list[Layer], chunks: list[bytes]) -> QuantizedModel:
        pf = ParamFile(ls, len(blobs))
        return QuantizedModel(pf, render_param(pf), chunks, ConversionReport())

    return model(layers, base_chunks), model(var_layers, var_chunks), outputs


def evaluate(
    m: QuantizedModel, want: list[str], given_: Mapping[str, object], ran: list[str]
) -> dict[str, object]:
    """ncnn's extract: each wanted blob from the given ones, running a producer only when a blob
    is not given; the input blob only when given."""
    values = dict(given_)
    producer = {t: (i, x) for i, x in enumerate(m.param.layers) for t in x.tops}

    def blob(name: str) -> object:
        if name not in values:
            i, layer = producer[name]
            assert layer.type != "Input", f"input {name} needed but not fed"
            inputs = tuple(blob(b) for b in layer.bottoms)
            ran.append(layer.name)
            for k, t in enumerate(layer.tops):
                values[t] = (layer.params[0].text, m.chunks[i], inputs, k)
        return values[name]

    return {b: blob(b) for b in want}


@settings(max_examples=300, deadline=None)
@given(networks())
def test_a_variant_fed_from_the_base_computes_its_whole_forward(
    case: tuple[QuantizedModel, QuantizedModel, list[str]],
) -> None:
    base, variant, outputs = case
    d = delta(base, variant, outputs)
    assert d is not None
    whole = evaluate(variant, outputs, {"in0": "x"}, [])
    kept = evaluate(base, list(d.feed), {"in0": "x"}, [])
    ran: list[str] = []
    assert evaluate(variant, outputs, kept, ran) == whole
    assert set(ran) <= set(d.recomputed)  # nothing before the change runs again
    assert set(d.changed) <= set(d.recomputed) and not set(d.feed) & {
        t for x in variant.param.layers if x.name in d.recomputed for t in x.tops
    }
    if not d.changed:  # the same model: every output comes from the base
        assert d.recomputed == () and set(d.feed) == set(outputs)


def test_other_layers_cannot_be_fed() -> None:
    """Another structure (a layer more, renamed or rewired): nothing of the base is reused."""
    a = [Layer("Input", "input", [], ["in0"]), Layer("Op", "l0", ["in0"], ["b0"])]
    b = [Layer("Input", "input", [], ["in0"]), Layer("Op", "l0", ["in0"], ["b1"])]

    def model(ls: list[Layer]) -> QuantizedModel:
        pf = ParamFile(ls, 2)
        return QuantizedModel(pf, render_param(pf), [b""] * len(ls), ConversionReport())

    assert delta(model(a), model(b), ["b0"]) is None
    assert delta(model(a), model(a[:1]), ["in0"]) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=6), st.one_of(st.none(), st.binary(max_size=6))),
        max_size=12,
    )
)
def test_a_patched_bin_is_the_variant_s_bin(layers: list[tuple[bytes, bytes | None]]) -> None:
    """The pieces of the base's ``.bin`` and of the data put back together are the variant's
    ``.bin``; the data holds only the changed layers' bytes; no two pieces of one source
    follow each other contiguously (merged)."""
    base_chunks = [a for a, _ in layers]
    var_chunks = [a if b is None else b for a, b in layers]

    def model(chunks: list[bytes]) -> QuantizedModel:
        pf = ParamFile([], 0)
        return QuantizedModel(pf, "", chunks, ConversionReport())

    data, pieces = bin_patch(model(base_chunks), model(var_chunks))
    whole, base_bin = b"", b"".join(base_chunks)
    for source, offset, length in pieces:
        src = base_bin if source == FROM_BASE else data
        assert length > 0 and offset + length <= len(src)
        whole += src[offset : offset + length]
    assert whole == b"".join(var_chunks)
    assert len(data) == sum(len(b) for a, b in layers if b is not None and b != a)
    for (s1, o1, n1), (s2, o2, _) in itertools.pairwise(pieces):
        assert not (s1 == s2 and o1 + n1 == o2)
