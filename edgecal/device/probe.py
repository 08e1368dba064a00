"""What a board offers the agent: one Python program run there (``board_snippets/probe.py``),
and what its answer means.

The snippet is plain enough for any Python (it must *report* an old one, not fail on it) and
prints one JSON object.  :func:`problems` turns the facts into problems, each with its fix.
"""

from __future__ import annotations

import contextlib
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
    out.extend(_common_problems(facts, expected_features))
    return out


def _common_problems(facts: BoardFacts, expected_features: Sequence[str]) -> list[Problem]:
    """The work directory, the free space and the CPU features the profile expects."""
    out: list[Problem] = []
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


# -- boards without Python: the shell probe and the native agent ----------------------------------
SHELL_PROBE_MAGIC = "EDGECAL-SHPROBE 1"

#: ``uname -m`` -> the native agent's target.  ``armv8l``: a 64-bit CPU running a 32-bit
#: userland (Raspberry Pi OS 32-bit on a Pi 3/4): it runs armv7 binaries.
MACHINE_TARGETS = {
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "armv7",
    "armv7": "armv7",
    "armv8l": "armv7",
    "armhf": "armv7",
    "x86_64": "x86_64",
    "amd64": "x86_64",
}

AGENT_SETTINGS = ("python", "native", "auto")


def shell_probe_argv(workdir: str) -> list[str]:
    """The remote argv of ``board_snippets/probe.sh`` (POSIX sh; no Python needed)."""
    return ["sh", "-c", board_snippet("probe.sh"), "edgecal-probe", workdir]


def _sections(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return out


def parse_shell_probe(exit_code: int, stdout: str, stderr: str) -> BoardFacts:
    """The shell probe's answer as :class:`BoardFacts` (``python`` None; the same fact names as
    the Python probe where the shell can tell them), or why there is none."""
    if SHELL_PROBE_MAGIC not in stdout.splitlines():
        err = (stderr.strip().splitlines() or [f"exit status {exit_code}"])[-1]
        return BoardFacts(python_error=f"the shell probe did not run ({err})")
    s = _sections(stdout)
    first = {k: (v[0].strip() if v else "") for k, v in s.items()}
    facts: dict[str, Any] = {"machine": first.get("machine", ""), "shell_probe": True}
    try:
        facts["cores"] = int(first.get("cores", ""))
    except ValueError:
        facts["cores"] = None
    feats: set[str] = set()
    names: dict[str, str] = {}
    for line in s.get("cpuinfo", []):
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k in ("features", "flags"):
            feats.update(v.split())
        elif k in ("model", "model name", "hardware", "cpu part") and k not in names:
            names[k] = v.strip()
    model = names.get("model") or names.get("model name") or names.get("hardware")
    if names.get("cpu part"):
        model = (model + ", " if model else "") + "ARM part " + names["cpu part"]
    facts["cpu_features"], facts["cpu_model"] = sorted(feats), model
    mem: dict[str, int] = {}
    for line in s.get("meminfo", []):
        k, _, v = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            mem[k.strip()] = int(v.split()[0]) * 1024
    facts["mem_total"], facts["mem_available"] = mem.get("MemTotal"), mem.get("MemAvailable")
    df = first.get("df", "").split()
    facts["disk_free"] = int(df[3]) * 1024 if len(df) >= 4 and df[3].isdigit() else None
    state = first.get("workdir", "")
    facts["workdir_exists"] = state in ("writable", "not writable")
    facts["workdir_writable"] = state == "writable"
    facts["workdir_error"] = None if state == "writable" else (state or "unknown")
    facts["python_path"] = first.get("python") or None
    return BoardFacts(facts=facts)


def native_target(machine: str) -> str | None:
    """The native agent's target for a ``uname -m`` (None: no native agent for it)."""
    return MACHINE_TARGETS.get(machine.strip().lower())


@dataclass(frozen=True)
class AgentChoice:
    """Which agent a board gets (``python`` or ``native``) and why, in words."""

    kind: str
    reason: str


def choose_agent(setting: str, python_facts: BoardFacts | None) -> AgentChoice:
    """``setting`` (boards file / profile: auto, python, native) and what the Python probe
    found (None: not asked) -> the agent.  ``auto`` takes the Python agent when the board has
    Python >= 3.9 with numpy and ncnn, the native agent otherwise."""
    if setting == "python":
        return AgentChoice("python", 'agent = "python" in the boards file or profile')
    if setting == "native":
        return AgentChoice("native", 'agent = "native" in the boards file or profile')
    f = python_facts
    if f is None or f.python is None:
        why = f.python_error if f is not None and f.python_error else "no Python"
        return AgentChoice("native", f"auto: the board has no usable Python ({why})")
    if f.python_version < MIN_PYTHON:
        return AgentChoice("native", f"auto: the board's Python {f.python} is older than 3.9")
    missing = [m for m in ("numpy", "ncnn") if not f.get(m)]
    if missing:
        return AgentChoice("native", f"auto: the board's Python lacks {' and '.join(missing)}")
    return AgentChoice(
        "python",
        f"auto: the board has Python {f.python} with numpy {f.get('numpy')} and ncnn "
        f"{f.get('ncnn')}",
    )


def native_problems(
    facts: BoardFacts, *, board: str, expected_features: Sequence[str] = ()
) -> list[Problem]:
    """Everything that keeps the native agent from running well on the board, with fixes."""
    if not facts.facts:
        return [
            Problem(
                f"the board cannot be probed: {facts.python_error}",
                "the native agent needs a POSIX shell (sh) on the board",
            )
        ]
    out: list[Problem] = []
    machine = str(facts.get("machine") or "")
    if native_target(machine) is None:
        out.append(
            Problem(
                f"no native agent for machine {machine or '?'} (uname -m)",
                f"native agents exist for {', '.join(sorted(set(MACHINE_TARGETS.values())))}",
            )
        )
    out.extend(_common_problems(facts, expected_features))
    return out
