"""Typed reading of JSON documents: accessors that raise :class:`Malformed` naming the JSON path
of a missing key or a value of the wrong type (the records' ``from_dict`` use them)."""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, TypeVar, cast, get_type_hints


class Malformed(Exception):
    """A value of the wrong type or a missing key; the message names its JSON path.  ``hint``:
    how to fix it, when the document's reader has one."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def kind_of(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


def number(value: Any, where: str) -> float:
    """A JSON number, or one of rundir.json_safe's "inf"/"-inf"/"nan" strings."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    raise Malformed(f"{where} should be a number, got {kind_of(value)} ({value!r:.40})")


@dataclass(frozen=True)
class Range:
    """What a figure of a document may hold: a number (or one of rundir.json_safe's "inf",
    "-inf", "nan" strings) within ``lo``..``hi``; ±inf only when not ``finite``, NaN only when
    ``nan``, null only when ``null``.  ``what`` names it for the message ("a fraction in
    0..1")."""

    what: str
    lo: float = -math.inf
    hi: float = math.inf
    finite: bool = True
    nan: bool = False
    null: bool = False

    def check(self, value: Any, where: str) -> None:
        """:class:`Malformed` naming ``where`` (its JSON path) when ``value`` is not one."""
        if value is None and self.null:
            return
        try:
            x = number(value, where)
        except Malformed:
            x = None
        if x is None or not (
            (math.isnan(x) and self.nan)
            or (self.lo <= x <= self.hi and (math.isfinite(x) or not self.finite))
        ):
            got = f"{value!r:.40}" if x is not None else f"{kind_of(value)} ({value!r:.40})"
            raise Malformed(f"{where} should be {self.what}, got {got}")


@dataclass(frozen=True)
class Obj:
    """A JSON object with typed accessors that raise :class:`Malformed` naming the path."""

    d: dict[str, Any]
    where: str

    @classmethod
    def of(cls, value: Any, where: str) -> Obj:
        """``where``: the JSON path of ``value`` ("" for the whole document)."""
        if not isinstance(value, dict):
            raise Malformed(f"{where or 'the document'} should be an object, got {kind_of(value)}")
        return cls(value, where)

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str) -> Any:
        if key not in self.d:
            raise Malformed(f"{self.where or 'the document'} has no {key!r}")
        return self.d[key]

    def num(self, key: str) -> float:
        return number(self.raw(key), self.at(key))

    def opt_num(self, key: str) -> float | None:
        value = self.d.get(key)
        return None if value is None else number(value, self.at(key))

    def integer(self, key: str) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Malformed(f"{self.at(key)} should be a whole number, got {kind_of(value)}")
        return value

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise Malformed(f"{self.at(key)} should be a string, got {kind_of(value)}")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.d.get(key) is None else self.text(key)

    def scalar(self, key: str) -> str:
        """A string or number, shown as text (e.g. a version)."""
        value = self.raw(key)
        if isinstance(value, (dict, list)):
            raise Malformed(f"{self.at(key)} should be a string or number, got {kind_of(value)}")
        return str(value)

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise Malformed(f"{self.at(key)} should be true or false, got {kind_of(value)}")
        return value

    def obj(self, key: str) -> Obj:
        return Obj.of(self.raw(key), self.at(key))

    def opt_obj(self, key: str) -> Obj | None:
        return None if self.d.get(key) is None else self.obj(key)

    def items(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise Malformed(f"{self.at(key)} should be a list, got {kind_of(value)}")
        return value

    def objs(self, key: str) -> list[Obj]:
        return [Obj.of(v, f"{self.at(key)}[{i}]") for i, v in enumerate(self.items(key))]

    def texts(self, key: str) -> tuple[str, ...]:
        out = []
        for i, v in enumerate(self.items(key)):
            if not isinstance(v, str):
                raise Malformed(f"{self.at(key)}[{i}] should be a string, got {kind_of(v)}")
            out.append(v)
        return tuple(out)


def _opt(read: Callable[[Obj, str], Any]) -> Callable[[Obj, str], Any]:
    return lambda o, key: None if o.d.get(key) is None else read(o, key)


def _record(kind: Any) -> Callable[[Obj, str], Any] | None:
    """How to read a record with a ``from_dict``, or a list or tuple of them."""
    if hasattr(kind, "from_dict"):
        return lambda o, key: kind.from_dict(o.raw(key), o.at(key))
    item: Any = getattr(kind, "__args__", (None,))[0]
    if getattr(kind, "__origin__", None) in (list, tuple) and hasattr(item, "from_dict"):
        seq = kind.__origin__
        return lambda o, key: seq(item.from_dict(x.d, x.where) for x in o.objs(key))
    return None


_READERS: dict[Any, Callable[[Obj, str], Any]] = {
    float: Obj.num,
    int: Obj.integer,
    str: Obj.text,
    bool: Obj.flag,
}


@functools.cache
def _field_readers(cls: type) -> dict[str, tuple[Callable[[Obj, str], Any], bool]]:
    """``cls``'s fields -> how each is read and whether it has a default."""
    hints = get_type_hints(cls)
    out: dict[str, tuple[Callable[[Obj, str], Any], bool]] = {}
    for f in fields(cls):
        hint = hints[f.name]
        args = hint.__args__ if isinstance(hint, types.UnionType) else ()
        kind = next((a for a in args if a is not type(None)), hint)
        read = _READERS.get(kind) or _record(kind)
        if read is not None and type(None) in args:
            read = _opt(read)
        if read is not None:
            out[f.name] = (read, f.default is not MISSING or f.default_factory is not MISSING)
    return out


R = TypeVar("R")


def read_fields(cls: type[R], o: Obj, **given: Any) -> R:
    """The record ``cls`` (a dataclass whose JSON form is its fields) read from ``o``, field by
    field in their order: a number, whole number, string, flag, record with a ``from_dict`` or
    list or tuple of records (each or null where the field's type says ``| None``) by its type;
    the fields ``given`` as they are.  A field with a default that the document lacks keeps its
    default."""
    values = dict(given)
    for name, (read, has_default) in _field_readers(cast(type, cls)).items():
        if name not in given and not (has_default and name not in o.d):
            values[name] = read(o, name)
    return cls(**values)


_Rec = TypeVar("_Rec", bound="Record")


@dataclass(frozen=True)
class Record:
    """A base of the records whose JSON form is their fields, as they are: :meth:`to_dict` and
    :meth:`from_dict` (by :func:`read_fields`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_Rec], doc: Any, where: str = "") -> _Rec:
        """What :meth:`to_dict` wrote; :class:`Malformed` names the JSON path of a bad value."""
        return read_fields(cls, Obj.of(doc, where))
