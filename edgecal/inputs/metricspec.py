"""The metric a command is told to use (``--metric NAME|module:function|file.py:function``,
``--charset FILE``, ``--iou-threshold``): a built-in of :mod:`edgecal.quality.taskmetrics`, or
the user's function imported from a module on ``sys.path`` or from a file."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecal.errors import UsageError
from edgecal.files.userfile import read_text
from edgecal.quality.taskmetrics import (
    BUILTIN,
    IOU_THRESHOLD,
    Metric,
    UserMetric,
    builtin_metric,
    raised,
)

#: What ``metric=`` of the API takes: a name, ``module:function``, a callable, or a metric.
MetricSpec = str | Callable[..., Any] | Metric

_HOW = (
    "give --metric NAME ({names}), module:function (the module importable from sys.path, "
    "e.g. with PYTHONPATH) or path/to/file.py:function"
)


def read_charset(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """A character list: one character per line (PaddleOCR's dict), line ``i`` is class
    ``i + 1`` (a line may hold a space; only the line end is stripped)."""
    text = read_text(Path(path), "character list (--charset)")
    chars = tuple(line.rstrip("\r\n") for line in text.splitlines())
    while chars and chars[-1] == "":
        chars = chars[:-1]
    if not chars:
        raise UsageError(
            f"--charset {os.fspath(path)}: no characters in it",
            hint="one character per line; line i is class i + 1 (class 0 is the CTC blank)",
        )
    return chars


def import_function(spec: str) -> Callable[..., Any]:
    """``module:function`` or ``path/to/file.py:function`` imported; an error names the module
    and the fix, never a traceback."""
    names = ", ".join(BUILTIN)
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise UsageError(f"--metric {spec!r}: not a metric", hint=_HOW.format(names=names))
    is_file = mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name
    try:
        if is_file:
            path = Path(mod_name)
            if not path.is_file():
                raise UsageError(
                    f"--metric {spec}: no file {mod_name}",
                    hint="give the path of a Python file holding the function",
                )
            unique = f"edgecal_user_metric_{abs(hash(str(path.resolve())))}"
            loader = importlib.util.spec_from_file_location(unique, path)
            if loader is None or loader.loader is None:
                raise UsageError(f"--metric {spec}: {mod_name} is not a Python file")
            module = importlib.util.module_from_spec(loader)
            sys.modules[unique] = module
            loader.loader.exec_module(module)
        else:
            module = _import_module(mod_name)
    except UsageError:
        raise
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"--metric {spec}: cannot import module {mod_name} ({exc})",
            hint="run from its folder or put that on PYTHONPATH, or give its file: "
            "path/to/file.py:" + fn_name,
        ) from None
    except (Exception, SystemExit) as exc:  # the user's module failed (or exited) importing
        raise UsageError(
            f"--metric {spec}: importing {mod_name} failed: {raised(exc)}",
            hint=f"fix {mod_name} (try `python {mod_name}`)"
            if is_file
            else f"fix {mod_name} (try `python -c 'import {mod_name}'`)",
        ) from None
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        raise UsageError(
            f"--metric {spec}: {mod_name} has no function {fn_name}",
            hint="name a function fn(fp32_outputs, int8_outputs, labels) of that module",
        )
    return fn


def metric_name(spec: MetricSpec) -> str:
    """The name the figures of ``spec``'s metric carry (``metric.name`` of the document)."""
    if isinstance(spec, str):
        return spec
    if hasattr(spec, "labels") and hasattr(spec, "name"):
        return str(spec.name)
    return str(getattr(spec, "__qualname__", None) or repr(spec))


def _import_module(name: str) -> Any:
    """``name`` imported from ``sys.path``, else from the current folder (the ``edgecal``
    command's ``sys.path`` lacks it, ``python -m`` has it)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name != name.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(cwd)


def resolve_metric(
    spec: MetricSpec | None,
    *,
    charset: str | os.PathLike[str] | None = None,
    iou_threshold: float | None = None,
) -> Metric | None:
    """The metric of ``spec`` (``None``: none asked, the commands' top-1 figures as always);
    ``charset``: ``ctc``'s character list file; ``iou_threshold``: ``iou``'s threshold."""
    name = spec if isinstance(spec, str) else None
    if charset is not None and name != "ctc":
        raise UsageError("--charset is for --metric ctc", hint="add --metric ctc")
    if iou_threshold is not None and name != "iou":
        raise UsageError("--iou-threshold is for --metric iou", hint="add --metric iou")
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec in BUILTIN:
            chars = read_charset(charset) if charset is not None else None
            th = IOU_THRESHOLD if iou_threshold is None else iou_threshold
            return builtin_metric(spec, charset=chars, iou_threshold=th)
        return UserMetric(import_function(spec), spec)
    if hasattr(spec, "labels") and hasattr(spec, "name"):
        return spec
    if callable(spec):
        return UserMetric(spec, metric_name(spec))
    raise UsageError(f"metric {spec!r}: not a metric name, module:function or callable")
