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


def dumps(obj: Any) -> bytes:
    return (json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n").encode()


def result_doc(doc: Any) -> Obj:
    """``doc`` (a run directory's JSON result file) as an :class:`Obj` once its schema is
    :data:`RESULT_SCHEMA`; else :class:`Malformed`."""
    top = Obj.of(doc, "")
    schema = top.d.get("schema")
    if schema != RESULT_SCHEMA:
        raise Malformed(f"schema {schema!r}, this edgecal reads schema {RESULT_SCHEMA}")
    return top
