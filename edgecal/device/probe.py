"""What a board offers the agent: one Python program run there (``board_snippets/probe.py``),
and what its answer means.

The snippet is plain enough for any Python (it must *report* an old one, not fail on it) and
prints one JSON object.  :func:`problems` turns the facts into problems, each with its fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgecal.device.snippets import board_snippet

#: The oldest Python the agent runs on.
MIN_PYTHON = (3, 9)


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} (fix: {self.fix})"


@dataclass(frozen=True)
class BoardFacts:
    """The probe's answer, or why there is none (``python_error``)."""

    python: str | None = None
    python_error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def python_version(self) -> tuple[int, ...]:
        return tuple(int(x) for x in (self.python or "0").split("."))

    def get(self, key: str, default: Any = None) -> Any:
        return self.facts.get(key, default)


def probe_code() -> str:
    """The probe (``board_snippets/probe.py``; Python 2.7/3.x on purpose).  argv: WORKDIR;
    prints one line ``EDGECAL-PROBE {json}``."""
    return board_snippet("probe.py")


def probe_argv(python: str, workdir: str, site: str) -> list[str]:
    """The remote argv: the probe under ``python`` with ``site`` on its path."""
    return ["env", f"PYTHONPATH={site}", python, "-c", probe_code(), workdir]


def parse_probe(python: str, exit_code: int, stdout: str, stderr: str) -> BoardFacts:
    for line in stdout.splitlines():
        if line.startswith("EDGECAL-PROBE "):
            facts = json.loads(line[len("EDGECAL-PROBE ") :])
            return BoardFacts(python=str(facts.get("python")), facts=facts)
    err = (stderr.strip().splitlines() or [f"exit status {exit_code}"])[-1]
    if exit_code == 127 or "not found" in err or "No such file" in err:
        return BoardFacts(python_error=f"`{python}` not found ({err})")
    # a Python too old to even run the probe: ask it for its version the simplest way
    return BoardFacts(python_error=f"`{python}` cannot run the probe ({err})")


def problems(
    facts: BoardFacts, *, board: str, python: str, expected_features: Sequence[str] = ()
) -> list[Problem]:
    """Everything that keeps the agent from running well on the board, with fixes."""
    pyfix = (
        f"install Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} on the board "
        f"(`sudo apt install python3`) or point `python = ...` in the boards file at one"
    )
    if facts.python is None:
        return [Problem(f"no usable Python: {facts.python_error}", pyfix)]
    out: list[Problem] = []
    if facts.python_version < MIN_PYTHON:
        out.append(
            Problem(
                f"`{python}` is Python {facts.python}, too old: the agent needs >= "
                f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}",
                pyfix,
            )
        )
        return out
    if not facts.facts:
        return [
            Problem(
                f"`{python}` (Python {facts.python}) cannot run the probe: {facts.python_error}",
                pyfix,
            )
        ]
    provision = f"run `edgecal board provision {board}`"
    for mod in ("numpy", "ncnn"):
        if not facts.get(mod):
            out.append(Problem(f"{mod} is missing ({facts.get(mod + '_error')})", provision))
    if not facts.get("workdir_writable"):
        out.append(
            Problem(
                f"the work directory is not writable ({facts.get('workdir_error')})",
                "fix its owner/permissions (`chown -R USER DIR`) or set `workdir = ...` in the "
                "boards file to a writable directory",
            )
        )
    free = facts.get("disk_free")
    if isinstance(free, int) and free < 64 << 20:
        out.append(
            Problem(
                f"only {free >> 20} MiB free in the work directory's file system",
                "free disk space on the board or move the work directory",
            )
        )
    have = set(facts.get("cpu_features") or [])
    missing = [f for f in expected_features if f not in have]
    if missing and have:
        out.append(
            Problem(
                f"CPU features the profile expects are missing: {', '.join(missing)}",
                "check the board's `profile = ...` in the boards file",
            )
        )
    return out
