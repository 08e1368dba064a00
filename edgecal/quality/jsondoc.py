"""Typed reading of JSON documents: accessors that raise :class:`Malformed` naming the JSON path
of a missing key or a value of the wrong type (the records' ``from_dict`` use them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
