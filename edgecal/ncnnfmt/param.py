"""Parse and render ncnn ``.param`` text files.

``parse_param`` keeps enough of the original text that ``render_param(parse_param(t)) == t``
byte for byte for files written by pnnx or ncnn's tools: each layer remembers its original line,
and a layer is re-rendered (in ncnn ``ModelWriter`` column style) only if it was changed.

Param dict values follow ncnn's ``ParamDict::load_param`` rules:

* ``id=v``: float if the token contains ``.``, ``e`` or ``E``, else int;
* ``-233xx=n,v1,...,vn``: an array for param ``xx`` (old style, the count first);
* ``id=v1,v2,...``: an array (new style, a comma after the first value);
* a value whose first character is a letter or ``"`` is a string;
* id 30 holds output shape hints (``-23330=...``), id 31 the feature mask.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgecal.errors import ModelFormatError

MAGIC = 7767517
MAX_PARAM_ID = 31
ARRAY_KEY_BASE = 23300
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_FLOAT_CHARS = re.compile(r"[.eE]")


@dataclass(frozen=True)
class ParamValue:
    """One ``id=value`` entry; ``text`` is the value token exactly as written."""

    kind: str  # "int" | "float" | "int_array" | "float_array" | "string"
    value: int | float | tuple[int, ...] | tuple[float, ...] | str
    text: str

    @property
    def is_array(self) -> bool:
        return self.kind in ("int_array", "float_array")


def to_float32(value: float) -> float:
    """The Python float of the float32 nearest to ``value``."""
    return float(np.float32(value))


def format_e(value: float) -> str:
    """C's ``printf("%e", (double)v)`` for a float32 value."""
    v = float(value)
    if v != v:
        return "-nan" if np.signbit(v) else "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return f"{v:e}"


def int_value(v: int) -> ParamValue:
    return ParamValue("int", int(v), str(int(v)))


def float_value(v: float) -> ParamValue:
    f = to_float32(v)
    return ParamValue("float", f, format_e(f))


def int_array_value(values: tuple[int, ...] | list[int]) -> ParamValue:
    """An old-style (count first) int array, as ModelWriter writes it."""
    vals = tuple(int(v) for v in values)
    return ParamValue("int_array", vals, ",".join([str(len(vals))] + [str(v) for v in vals]))


def float_array_value(values: tuple[float, ...] | list[float]) -> ParamValue:
    """An old-style (count first) float array, values printed with ``%e``."""
    vals = tuple(to_float32(v) for v in values)
    return ParamValue("float_array", vals, ",".join([str(len(vals))] + [format_e(v) for v in vals]))


def string_value(s: str) -> ParamValue:
    return ParamValue("string", s, f'"{s}"')


def _looks_float(token: str) -> bool:
    return bool(_FLOAT_CHARS.search(token))


def _parse_int(token: str) -> int:
    """An int token as ncnn's ``%d`` reads it; ValueError outside the 32-bit range."""
    value = int(token)
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError(f"{token} is outside the 32-bit int range")
    return value


def _parse_scalar(token: str) -> int | float:
    if _looks_float(token):
        return to_float32(float(token))
    return _parse_int(token)


def parse_value(key: str, text: str) -> tuple[int, ParamValue]:
    """Parse one ``key=text`` entry into ``(param id, value)``; ValueError if malformed."""
    kid = int(key)
    if kid <= -ARRAY_KEY_BASE:
        pid = -kid - ARRAY_KEY_BASE
        parts = text.split(",")
        count = _parse_int(parts[0])
        items = parts[1:]
        if count != len(items):
            raise ValueError(f"array count {count} but {len(items)} values")
        return pid, _array(items, text)
    pid = kid
    if pid < 0:
        raise ValueError(f"param id {pid} out of range")
    if text and (text[0].isalpha() or text[0] == '"'):
        content = text[1:-1] if len(text) >= 2 and text[0] == '"' and text[-1] == '"' else text
        return pid, ParamValue("string", content, text)
    if "," in text:
        return pid, _array(text.split(","), text)
    scalar = _parse_scalar(text)
    kind = "float" if isinstance(scalar, float) else "int"
    return pid, ParamValue(kind, scalar, text)


def _array(items: list[str], text: str) -> ParamValue:
    if any(_looks_float(t) for t in items):
        return ParamValue("float_array", tuple(to_float32(float(t)) for t in items), text)
    return ParamValue("int_array", tuple(_parse_int(t) for t in items), text)


def _signature(layer: Layer) -> tuple[object, ...]:
    return (
        layer.type,
        layer.name,
        tuple(layer.bottoms),
        tuple(layer.tops),
        tuple((k, v.kind, v.text, layer.param_keys.get(k)) for k, v in layer.params.items()),
    )


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, ParamValue] = field(default_factory=dict)
    # Original key token per param id ("4", "-23310", ...); missing ids render in ModelWriter form.
    param_keys: dict[int, str] = field(default_factory=dict, repr=False)
    source_line: str | None = field(default=None, compare=False, repr=False)
    origin: tuple[object, ...] | None = field(default=None, compare=False, repr=False)

    def param_int(self, pid: int, default: int) -> int:
        pv = self.params.get(pid)
        if pv is None:
            return default
        if pv.kind == "int":
            return int(pv.value)  # type: ignore[arg-type]
        if pv.kind == "float":
            if not math.isfinite(pv.value):  # type: ignore[arg-type]
                raise ModelFormatError(
                    f"layer {self.name!r}: param {pid} is {pv.text}, expected a whole number"
                )
            return int(pv.value)  # type: ignore[arg-type]
        raise ModelFormatError(f"layer {self.name!r}: param {pid} is {pv.kind}, expected int")

    def copy(self) -> Layer:
        """A copy to change: its own lists and dicts (param values are immutable, shared)."""
        return dataclasses.replace(
            self,
            bottoms=list(self.bottoms),
            tops=list(self.tops),
            params=dict(self.params),
            param_keys=dict(self.param_keys),
        )

    def set_param(self, pid: int, value: ParamValue) -> None:
        """Set a param; a new or re-typed key renders in ModelWriter form."""
        old = self.params.get(pid)
        if old is None or old.is_array != value.is_array:
            self.param_keys.pop(pid, None)
        self.params[pid] = value

    def key_text(self, pid: int) -> str:
        key = self.param_keys.get(pid)
        if key is not None:
            return key
        pv = self.params[pid]
        return str(-(ARRAY_KEY_BASE + pid)) if pv.is_array else str(pid)

    def is_modified(self) -> bool:
        return self.source_line is None or self.origin != _signature(self)


@dataclass
class ParamFile:
    layers: list[Layer]
    declared_blob_count: int
    header_text: str | None = field(default=None, compare=False, repr=False)
    trailer: str = field(default="", compare=False, repr=False)
    origin_counts: tuple[int, int] | None = field(default=None, compare=False, repr=False)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ModelFormatError(f"the model has no layer named {name!r}")

    def blob_names(self) -> list[str]:
        """Blob names in ncnn's blob index order (a new bottom or any top adds a blob)."""
        names: list[str] = []
        known: set[str] = set()
        for layer in self.layers:
            for b in layer.bottoms:
                if b not in known:
                    names.append(b)
                    known.add(b)
            for t in layer.tops:
                names.append(t)
                known.add(t)
        return names

    def producer(self, blob: str) -> Layer | None:
        found = None
        for layer in self.layers:
            if blob in layer.tops:
                found = layer
        return found

    def consumers(self, blob: str) -> list[Layer]:
        return [layer for layer in self.layers if blob in layer.bottoms]

    def input_blobs(self) -> list[str]:
        return [t for layer in self.layers if layer.type == "Input" for t in layer.tops]


def _fail(source: str, lineno: int, msg: str) -> ModelFormatError:
    return ModelFormatError(f"{source}:{lineno}: {msg}")


def _two_counts(
    texts: Sequence[str], source: str, lineno: int, bad: str, negative: str
) -> tuple[int, int]:
    """Two non-negative integers (a layer's bottom/top counts, the file's layer/blob counts);
    ``bad`` and ``negative`` are the errors' messages."""
    try:
        first, second = (int(t) for t in texts)
    except ValueError:
        raise _fail(source, lineno, bad) from None
    if first < 0 or second < 0:
        raise _fail(source, lineno, negative)
    return first, second


def _parse_layer(line: str, source: str, lineno: int) -> Layer:
    tokens = line.split()
    if len(tokens) < 4:
        raise _fail(source, lineno, f"truncated layer line (need type, name and counts): {line!r}")
    ltype, name = tokens[0], tokens[1]
    nb, nt = _two_counts(
        tokens[2:4],
        source,
        lineno,
        f"layer {name!r}: bad bottom/top counts {tokens[2:4]}",
        f"layer {name!r}: negative bottom/top count",
    )
    rest = tokens[4:]
    if len(rest) < nb + nt:
        raise _fail(
            source,
            lineno,
            f"truncated line: layer {name!r} declares {nb} bottoms and {nt} tops "
            f"but has only {len(rest)} names",
        )
    bottoms, tops = rest[:nb], rest[nb : nb + nt]
    for blob in bottoms + tops:
        if "=" in blob:
            raise _fail(source, lineno, f"truncated line: layer {name!r} blob name {blob!r}")
    layer = Layer(ltype, name, list(bottoms), list(tops))
    for tok in rest[nb + nt :]:
        key, sep, text = tok.partition("=")
        if not sep or not text:
            raise _fail(
                source, lineno, f"layer {name!r}: bad param token {tok!r} (expected id=value)"
            )
        try:
            pid, pv = parse_value(key, text)
        except ValueError as exc:
            raise _fail(source, lineno, f"layer {name!r}: bad param token {tok!r}: {exc}") from None
        if not 0 <= pid <= MAX_PARAM_ID:
            raise _fail(
                source, lineno, f"layer {name!r}: param id {pid} out of range 0..31 ({tok!r})"
            )
        if pid in layer.params:
            raise _fail(source, lineno, f"layer {name!r}: param id {pid} given twice")
        layer.params[pid] = pv
        layer.param_keys[pid] = key
    return layer


def _check_unique(
    layer: Layer,
    lineno: int,
    named: dict[str, int],
    produced: dict[str, tuple[int, str]],
    source: str,
) -> None:
    """Refuse a layer name given twice, or a blob produced twice (recording ``layer``'s).

    ncnn loads both without a word: it finds a layer by its first name (the table keys of the
    two layers collide, so their scales would mix), and every consumer of a blob produced twice
    is bound to the first producer's output (the second's is silently dropped).
    """
    first = named.setdefault(layer.name, lineno)
    if first != lineno:
        raise ModelFormatError(
            f"{source}:{lineno}: layer name {layer.name!r} is used twice, on line {first} and "
            f"line {lineno}",
            hint="give every layer its own name (ncnn and the calibration table find layers "
            "by name)",
        )
    for top in layer.tops:
        if top in produced:
            line, by = produced[top]
            raise ModelFormatError(
                f"{source}:{lineno}: blob {top!r} is produced twice, by layer {by!r} on line "
                f"{line} and by layer {layer.name!r} on line {lineno}",
                hint="every blob is the output of one layer (ncnn binds its consumers to the "
                "first one): rename one of them and its consumers",
            )
        produced[top] = (lineno, layer.name)


def parse_param(text: str, source: str = "<param>") -> ParamFile:
    """Parse ``.param`` text; ModelFormatError names ``source`` and the line for any defect."""
    lines = text.splitlines(keepends=True)
    idx = 0

    def next_content() -> tuple[int, str]:
        nonlocal idx
        while idx < len(lines) and not lines[idx].strip():
            idx += 1
        if idx >= len(lines):
            return -1, ""
        idx += 1
        return idx, lines[idx - 1]

    if text.startswith("\ufeff"):
        raise ModelFormatError(
            f"{source}:1: the file starts with a UTF-8 byte-order mark, which ncnn's "
            "loader refuses ('parse magic failed')",
            hint="save the .param as UTF-8 without a byte-order mark (BOM)",
        )
    lineno, magic = next_content()
    if lineno < 0:
        raise ModelFormatError(f"{source}: empty .param file")
    if magic.strip() != str(MAGIC):
        raise _fail(
            source,
            lineno,
            f"bad magic {magic.strip()!r}, expected {MAGIC} (param is too old or not a .param)",
        )
    lineno, counts = next_content()
    if lineno < 0:
        raise _fail(source, 1, "truncated: no layer/blob count line")
    layer_count, blob_count = _two_counts(
        counts.split(),
        source,
        lineno,
        f"bad counts line {counts.strip()!r}, expected '<layers> <blobs>'",
        f"negative counts {counts.strip()!r}",
    )
    header_text = "".join(lines[:idx])

    layers: list[Layer] = []
    named: dict[str, int] = {}  # layer name -> its line
    produced: dict[str, tuple[int, str]] = {}  # blob -> (line, layer) of its producer
    for _ in range(layer_count):
        start = idx
        lineno, line = next_content()
        if lineno < 0:
            raise _fail(
                source,
                len(lines),
                f"truncated: {layer_count} layers declared, only {len(layers)} found",
            )
        layer = _parse_layer(line, source, lineno)
        _check_unique(layer, lineno, named, produced, source)
        leading = "".join(lines[start : lineno - 1])
        layer.source_line = leading + line
        layer.origin = _signature(layer)
        layers.append(layer)
    trailer = "".join(lines[idx:])
    if trailer.strip():
        extra = next(i for i in range(idx, len(lines)) if lines[i].strip()) + 1
        raise _fail(source, extra, f"more layer lines than the {layer_count} declared")
    pf = ParamFile(layers, blob_count, header_text, trailer, (layer_count, blob_count))
    actual = len(pf.blob_names())
    if actual > blob_count:
        raise _fail(
            source, 2, f"the layers use {actual} blobs but the header declares {blob_count}"
        )
    return pf


def render_layer(layer: Layer) -> str:
    """One layer line in ModelWriter style (``%-24s %-24s %d %d`` then names and params)."""
    out = [f"{layer.type:<24} {layer.name:<24} {len(layer.bottoms)} {len(layer.tops)}"]
    out.extend(" " + b for b in layer.bottoms)
    out.extend(" " + t for t in layer.tops)
    for pid, pv in layer.params.items():
        out.append(f" {layer.key_text(pid)}={pv.text}")
    return "".join(out) + "\n"


def render_param(pf: ParamFile) -> str:
    counts = (len(pf.layers), pf.declared_blob_count)
    if pf.header_text is not None and pf.origin_counts == counts:
        head = pf.header_text
    else:
        head = f"{MAGIC}\n{counts[0]} {counts[1]}\n"
    body = []
    for layer in pf.layers:
        if layer.source_line is not None and not layer.is_modified():
            body.append(layer.source_line)
        else:
            body.append(render_layer(layer))
    return head + "".join(body) + pf.trailer
