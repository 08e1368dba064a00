"""The ncnn calibration table: render byte-compatible with ncnn2table, parse like ncnn2int8.

A table is an ordered list of records ``key v1 v2 ... vn``.  Keys containing ``_param_`` hold
weight scales (``<layer>_param_<i>``); every other key is a layer name with the scale of that
layer's input blob.  ncnn2table prints each value with ``"%f "`` and ends the line with
``"\\n"``; ncnn2int8 reads values back with ``sscanf("%f")`` into a float32.  Both halves are
reproduced here exactly; the reader is more forgiving than ncnn2int8 (``#`` comments and blank
lines are allowed, where ncnn2int8 would silently stop at the first blank line; a UTF-8
byte-order mark at the start is skipped, where ncnn2int8 would read it into the first key).

A usable scale is a normal float32 number > 0 (:data:`SMALLEST_SCALE` to float32's largest):
zero, negative, NaN, inf (also a written value beyond float32's range) and subnormal scales make
garbage int8 weights or inputs (:func:`refuse_unusable_scales`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from edgecal.errors import TableError

WEIGHT_KEY_MARK = "_param_"
# A decimal exponent beyond this puts any number Fraction accepts (at most 2 x 4300 digits)
# far outside float32's range.
_HUGE_EXPONENT = 20000
_EXPONENT = re.compile(r"[eE]([-+]?\d+(?:_\d+)*)\Z")
#: The smallest usable scale: float32's smallest normal number (1.17549435e-38).
SMALLEST_SCALE = np.finfo(np.float32).tiny


def weight_key(layer: str, index: int = 0) -> str:
    return f"{layer}{WEIGHT_KEY_MARK}{index}"


def is_weight_key(key: str) -> bool:
    return WEIGHT_KEY_MARK in key


def format_value(value: float | np.float32) -> str:
    """C's ``printf("%f", (double)value)`` for a float32 value."""
    v = float(value)
    if math.isnan(v):
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:f}"


def _to_float32(value: float) -> np.float32:
    """``value`` rounded to float32, ``±inf`` beyond its range (as ``strtof``), silently."""
    with np.errstate(over="ignore"):
        return np.float32(value)


def parse_float32(token: str) -> np.float32:
    """``strtof`` semantics: the float32 nearest to the decimal ``token`` (ties to even).

    Going through a Python float first could round twice; this picks among the float32
    neighbours the one nearest to the exact decimal value.
    """
    text = token.strip()
    low = text.lower().lstrip("+-")
    if low in ("inf", "infinity", "nan"):
        return np.float32(float(text))
    huge = _EXPONENT.search(text)
    if huge and abs(int(huge.group(1))) > _HUGE_EXPONENT:
        # Far beyond float32 either way (±inf or ±0): the exact Fraction would need a
        # 10**exponent integer, i.e. hang.  Fraction still checks the mantissa's syntax.
        Fraction(text[: huge.start()])
        return _to_float32(float(text))
    exact = Fraction(text)
    guess = _to_float32(float(text))
    if not np.isfinite(guess):
        return guess
    with np.errstate(over="ignore"):  # FLT_MAX's upper neighbour is inf: not a candidate
        neighbours = [
            np.nextafter(guess, np.float32(-np.inf)),
            guess,
            np.nextafter(guess, np.float32(np.inf)),
        ]
    best = min(
        [c for c in neighbours if np.isfinite(c)],
        key=lambda c: (abs(Fraction(float(c)) - exact), int(c.view(np.uint32)) & 1),
    )
    return np.float32(best)


@dataclass
class CalibrationTable(Mapping[str, np.ndarray]):
    """Ordered ``key -> float32 values`` (a read-only mapping over :attr:`records`).  Order is
    the file order and is kept on render."""

    records: dict[str, np.ndarray] = field(default_factory=dict)
    #: Where the records were read from (:func:`parse_table`): the file, and per key its line.
    source: str = ""
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, key: str) -> str:
        """``"line N: "`` for a key read by :func:`parse_table` (callers name the file), else
        ``""``."""
        line = self.lines.get(key)
        return f"line {line}: " if line is not None else ""

    def set(self, key: str, values: Iterable[float | np.float32] | np.ndarray | float) -> None:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float32)).copy()
        if not key or any(ch.isspace() for ch in key):
            raise TableError(f"table key {key!r} is empty or contains white space")
        self.records[key] = arr

    def __getitem__(self, key: str) -> np.ndarray:
        return self.records[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def weight_scales(self, layer: str, index: int = 0) -> np.ndarray | None:
        return self.records.get(weight_key(layer, index))

    def blob_scale(self, layer: str) -> np.float32 | None:
        values = self.records.get(layer)
        return None if values is None else np.float32(values[0])

    @property
    def weight_keys(self) -> list[str]:
        return [k for k in self.records if is_weight_key(k)]

    def without(self, layers: Iterable[str]) -> CalibrationTable:
        """A copy with every record of the named layers (blob and weight keys) removed."""
        drop = set(layers)
        out = CalibrationTable(source=self.source, lines=dict(self.lines))
        for key, values in self.records.items():
            owner = key.split(WEIGHT_KEY_MARK, 1)[0] if is_weight_key(key) else key
            if owner not in drop:
                out.records[key] = values.copy()
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibrationTable):
            return NotImplemented
        return list(self.records) == list(other.records) and all(
            np.array_equal(a, other.records[k], equal_nan=True) for k, a in self.records.items()
        )


def render_table(table: CalibrationTable) -> str:
    """Text identical to ncnn2table's: ``key`` then ``" %f"``-style values, ``" \\n"`` ends."""
    lines = []
    for key, values in table.records.items():
        lines.append(key + " " + "".join(format_value(v) + " " for v in values) + "\n")
    return "".join(lines)


def parse_table(text: str, source: str = "<table>") -> CalibrationTable:
    """Parse an ncnn calibration table (plus ``#`` comment lines and blank lines).

    Raises :class:`TableError` naming ``source`` and the line for anything ncnn2int8 would
    misread silently: a key without values, a value that is not a number, a repeated key.
    """
    table = CalibrationTable(source=source)
    for lineno, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        key, values = tokens[0], tokens[1:]
        where = f"{source}:{lineno}"
        if not values:
            raise TableError(
                f"{where}: key {key!r} has no values",
                hint="each line is '<key> <scale> [<scale> ...]'",
            )
        if key in table.records:
            raise TableError(f"{where}: key {key!r} appears twice")
        try:
            parsed = [parse_float32(v) for v in values]
        except (ValueError, ZeroDivisionError):
            raise TableError(
                f"{where}: {key!r} has a value that is not a number: {' '.join(values)!r}"
            ) from None
        table.records[key] = np.array(parsed, dtype=np.float32)
        table.lines[key] = lineno
    return table


def bad_scales(values: np.ndarray) -> list[tuple[int, float]]:
    """``(index, value)`` of every scale that is not a normal finite float32 > 0 (``nan``
    and subnormals fail too)."""
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    good = np.isfinite(arr) & (arr >= SMALLEST_SCALE)
    return [(int(i), float(arr[i])) for i in np.flatnonzero(~good)]


def _shown(value: float) -> str:
    """A scale as messages show it: ``%f`` (as the table writes it), but a nonzero value that
    ``%f`` prints as 0 in full."""
    text = format_value(value)
    return f"{value:.9g}" if value != 0 and float(text) == 0 else text


def refuse_unusable_scales(table: CalibrationTable, keys: Iterable[str]) -> None:
    """Raise :class:`TableError` at the first of ``keys`` (the records a conversion uses)
    holding a scale that is zero, negative, NaN, inf or subnormal (not a normal float32),
    naming the table file and line.

    Such a scale turns the layer's int8 weights or inputs into garbage (``w * inf`` is NaN for
    a zero weight, ncnn2int8 then writes -127; a zero scale makes every code 0) without any
    error at run time.  ``quantize --ncnn-compat`` style callers skip this check on purpose.
    """
    for key in keys:
        values = table.records.get(key)
        if values is None:
            continue
        bad = bad_scales(values)
        if not bad:
            continue
        index, value = bad[0]
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        what = "weight scale" if is_weight_key(key) else "input blob scale"
        raise TableError(
            f"{table.where(key)}{key} has {what} {_shown(value)} (value {index + 1} of "
            f"{values.size}{more}); a scale must be a normal float32 number > 0 (from "
            f"{SMALLEST_SCALE:.9g} to {np.finfo(np.float32).max:.9g}; inf also stands for a "
            "value written beyond that), the int8 model would compute garbage there",
            hint="re-calibrate with edgecal calibrate (it names the cause and writes a usable "
            "scale for an all-zero weight channel, where ncnn2table writes inf), or keep the "
            f"layer in float (--keep-fp32 {key.split(WEIGHT_KEY_MARK, 1)[0]})",
        )
