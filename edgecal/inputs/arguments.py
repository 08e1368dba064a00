"""The checks of the public API's arguments: each takes what a caller passed and the
parameter's name (as the API spells it), and gives the value in the form the code below it
uses, or raises a :class:`~edgecal.errors.UsageError` naming the parameter and what it takes --
never a bare ``TypeError`` from deep inside.  The API's functions call them first thing.

Paths are ``str``, ``os.PathLike`` or ``bytes`` (decoded as the file system does), never with a
NUL byte; numbers are ``int``/``float`` (never ``bool``, never text); callbacks are callables.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import reprlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from edgecal.errors import UsageError
from edgecal.files.userfile import path_text
from edgecal.inputs.model import Model
from edgecal.inputs.spec import ImageInput, TensorInput

#: The most threads (or agent workers) a run takes: far above any board's cores, far below
#: what ncnn's ``int`` option holds.
MAX_THREADS = 1024

#: ``progress``: ``(description, total) -> (done, total) -> None``.
Tick = Callable[[int, int], None]
Progress = Callable[[str, int], Tick]

T = TypeVar("T")

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


def shown(value: object) -> str:
    """``value`` for a message: its type and a short repr."""
    return f"{type(value).__name__} {_short.repr(value)}"


def path_arg(value: object, name: str) -> str:
    """A file or folder path: ``str``, ``os.PathLike`` or ``bytes``
    (:func:`edgecal.files.userfile.path_text`)."""
    return path_text(value, name)


def optional_path_arg(value: object, name: str) -> str | None:
    """A path, or None."""
    return None if value is None else path_arg(value, name)


def _is_path(value: object) -> bool:
    return isinstance(value, (str, bytes, os.PathLike))


def paths_arg(value: object, name: str) -> list[str]:
    """One path (a one-item list) or an iterable of them."""
    if _is_path(value):
        return [path_arg(value, name)]
    if not isinstance(value, Iterable):
        raise UsageError(
            f"{name} takes a path or a list of paths, not {shown(value)}",
            hint=f"e.g. {name}=['a.json', 'b.json']",
        )
    return [path_arg(v, f"{name}[{i}]") for i, v in enumerate(value)]


def model_arg(value: object, name: str = "model") -> Model | tuple[str, str]:
    """A model: loaded (``edgecal.load_model``), or its ``(param, bin)`` paths."""
    if isinstance(value, Model):
        return value
    if _is_path(value) or not isinstance(value, Sequence) or len(value) != 2:
        raise UsageError(
            f"{name} takes the model's (param, bin) paths or edgecal.load_model(param, bin), "
            f"not {shown(value)}",
            hint=f"e.g. {name}=('model.param', 'model.bin')",
        )
    return path_arg(value[0], f"{name}'s .param"), path_arg(value[1], f"{name}'s .bin")


def optional_model_arg(value: object, name: str) -> Model | tuple[str, str] | None:
    return None if value is None else model_arg(value, name)


def inputs_arg(value: object, name: str = "inputs") -> list[ImageInput | TensorInput]:
    """One :class:`ImageInput`/:class:`TensorInput`, or an iterable of them (one per model
    input, read once), each with its samples' path as text."""
    kinds = (ImageInput, TensorInput)
    what = f"{name} takes ImageInput/TensorInput (or a sequence of them, one per model input)"
    hint = f"e.g. {name}=edgecal.ImageInput('calib.txt', pixel='RGB', mean=(127.5,) * 3)"
    if isinstance(value, kinds):
        items: list[object] = [value]
    elif _is_path(value) or not isinstance(value, Iterable):
        raise UsageError(f"{what}, not {shown(value)}", hint=hint)
    else:
        items = list(value)
    out: list[ImageInput | TensorInput] = []
    for i, item in enumerate(items):
        where = name if isinstance(value, kinds) else f"{name}[{i}]"
        if isinstance(item, ImageInput):
            out.append(dataclasses.replace(item, images=path_arg(item.images, f"{where}.images")))
        elif isinstance(item, TensorInput):
            out.append(dataclasses.replace(item, npy=path_arg(item.npy, f"{where}.npy")))
        else:
            raise UsageError(f"{what}: {where} is {shown(item)}", hint=hint)
    return out


def int_arg(value: object, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """A whole number (not a bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} takes a whole number, not {shown(value)}")
    n = int(value)
    if lo is not None and n < lo:
        raise UsageError(f"{name} {n}: must be at least {lo}")
    if hi is not None and n > hi:
        raise UsageError(f"{name} {n}: must be at most {hi}")
    return n


def optional_int_arg(
    value: object, name: str, lo: int | None = None, hi: int | None = None
) -> int | None:
    return None if value is None else int_arg(value, name, lo, hi)


def threads_arg(value: object, name: str = "threads") -> int | None:
    """A thread (or worker) count, 1..:data:`MAX_THREADS`, or None (the default)."""
    return optional_int_arg(value, name, 1, MAX_THREADS)


def number_arg(value: object, name: str, lo: float | None = None) -> float:
    """A finite number (``int`` or ``float``, not a bool or text) of at least ``lo``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} takes a number, not {shown(value)}")
    f = float(value)
    if not math.isfinite(f):
        raise UsageError(f"{name} {f}: must be a finite number")
    if lo is not None and f < lo:
        raise UsageError(f"{name} {value}: must be {lo:g} or more")
    return f


def optional_number_arg(value: object, name: str, lo: float | None = None) -> float | None:
    return None if value is None else number_arg(value, name, lo)


def callable_arg(value: T | None, name: str) -> T | None:
    """A callback, or None."""
    if value is not None and not callable(value):
        raise UsageError(f"{name} takes a function (or None), not {shown(value)}")
    return value


def progress_arg(value: object, name: str = "progress") -> Progress | None:
    """A progress factory ``(description, total) -> (done, total) -> None``, or None; a
    factory that gives None for a task shows no progress for it."""
    if value is None:
        return None
    factory = callable_arg(value, name)
    assert callable(factory)

    def checked(description: str, total: int) -> Tick:
        tick = factory(description, total)
        if tick is None:
            return _no_tick
        if not callable(tick):
            raise UsageError(
                f"{name} returned {shown(tick)}: it must return a function "
                "(done, total) -> None, or None",
                hint=f"{name} is a factory: (description, total) -> (done, total) -> None",
            )
        return tick

    return checked


def _no_tick(done: int, total: int) -> None:
    return None


def names_arg(value: object, name: str, what: str = "layer names") -> tuple[str, ...]:
    """A list of names (a single ``str`` is refused: it would be taken letter by letter)."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise UsageError(
            f"{name} takes a list of {what}, not {shown(value)}",
            hint=f"give a list of {what}, e.g. {name}=[{_short.repr(value)}]"
            if isinstance(value, str)
            else f"give a list of {what}",
        )
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise UsageError(f"{name}[{i}] is {shown(item)}: {name} takes a list of {what}")
    return tuple(items)


def instance_arg(value: object, name: str, cls: type[T], example: str) -> T | None:
    """An instance of ``cls``, or None."""
    if value is not None and not isinstance(value, cls):
        raise UsageError(
            f"{name} takes {cls.__name__} (or None), not {shown(value)}",
            hint=f"e.g. {name}={example}",
        )
    return value


def device_arg(value: object, name: str = "name") -> str | None:
    """A device name (``local``, a board of the boards file, ``user@host[:port]``,
    ``labgrid:PLACE``), or None (this machine)."""
    if value is not None and not isinstance(value, str):
        raise UsageError(
            f"{name} takes a device name (a str: local, a board of the boards file, "
            f"user@host[:port], labgrid:PLACE) or None, not {shown(value)}"
        )
    return value


def devices_arg(value: object, name: str = "devices") -> tuple[str | None, ...]:
    """One device name, or an iterable of them (None: this machine)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable) or isinstance(value, (bytes, os.PathLike)):
        raise UsageError(
            f"{name} takes a device name, a list of them or edgecal.Devices, not {shown(value)}",
            hint=f"e.g. {name}='pi4' or {name}=['pi4a', 'pi4b']",
        )
    return tuple(device_arg(v, f"{name}[{i}]") for i, v in enumerate(value))
