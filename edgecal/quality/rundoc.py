"""The run documents' common format: the result schema, inf/nan as strings, the JSON bytes (pure).

Every JSON result file of a run directory (``edgecal.runs.rundir``) and every ``--json``
document is ``{"schema": RESULT_SCHEMA, ...}`` with inf/nan written as the strings "inf", "-inf"
and "nan" (strict JSON has no such numbers).
"""

from __future__ import annotations

import json
import math
from typing import Any

from edgecal.quality.jsondoc import Malformed, Obj

#: Schema of every JSON result file in a run directory (``{"schema": N, ...}``).
RESULT_SCHEMA = 1


def json_safe(obj: Any) -> Any:
    """inf/nan as strings ("inf", "-inf", "nan"): strict JSON has no such numbers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _plain(obj: Any) -> Any:
    """What :func:`json_text` writes for a value JSON has no form of: a numpy scalar or array
    as its number(s) (inf/nan as strings), anything else (a path) as its text."""
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return json_safe(tolist())
    return str(obj)


def json_text(obj: Any) -> str:
    """``obj`` as strict JSON text (every ``--json`` output, every JSON file of a run): indented,
    keys sorted, a newline at the end; inf/nan as strings (:func:`json_safe`), numpy values as
    numbers, paths as text."""
    return (
        json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False, default=_plain) + "\n"
    )


def dumps(obj: Any) -> bytes:
    """:func:`json_text` as UTF-8 bytes (a file's contents)."""
    return json_text(obj).encode()


def result_doc(doc: Any) -> Obj:
    """``doc`` (a run directory's JSON result file) as an :class:`Obj` once its schema is
    :data:`RESULT_SCHEMA`; else :class:`Malformed`."""
    top = Obj.of(doc, "")
    schema = top.d.get("schema")
    if schema != RESULT_SCHEMA:
        raise Malformed(f"schema {schema!r}, this edgecal reads schema {RESULT_SCHEMA}")
    return top
