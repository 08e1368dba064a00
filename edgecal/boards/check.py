"""``edgecal board check``: what a board offers, and each problem with its fix."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edgecal.boards.config import Board, Profile
from edgecal.boards.golden import GoldenResult, golden_check
from edgecal.device.adb.device import AdbDevice
from edgecal.device.probe import (
    AgentChoice,
    BoardFacts,
    Problem,
    native_problems,
    native_target,
    problems,
)
from edgecal.device.ssh.device import SshDevice
from edgecal.errors import BoardSetupError, ConfigError, DeviceError, EdgecalError

INTERESTING_FEATURES = ("asimd", "asimdhp", "asimddp", "i8mm", "sve", "avx2", "avx512f")


@dataclass
class CheckReport:
    board: str
    address: str = ""
    profile: Profile | None = None
    workdir: str = ""
    facts: BoardFacts | None = None
    agent: dict[str, Any] | None = None
    agent_choice: AgentChoice | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    golden: GoldenResult | None = None  # with --golden, when the agent ran
    started: float = 0.0  # wall clock (time.time()) of the check's start and end
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "address": self.address,
            "ok": self.ok,
            "profile": self.profile.name if self.profile else None,
            "workdir": self.workdir,
            "facts": self.facts.facts if self.facts else None,
            "python_error": self.facts.python_error if self.facts else None,
            "agent": self.agent,
            "agent_kind": self.agent_choice.kind if self.agent_choice else None,
            "agent_reason": self.agent_choice.reason if self.agent_choice else None,
            "problems": [{"what": p.what, "fix": p.fix} for p in self.problems],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "golden": self.golden.to_dict() if self.golden else None,
            "started": round(self.started, 3),
            "finished": round(self.finished, 3),
        }

    def lines(self) -> list[str]:
        prof = f", profile {self.profile.name}" if self.profile else ""
        out = [f"{self.board} ({self.address or '?'}{prof})"]
        f = self.facts
        if f is not None and f.facts:
            gib = 1 << 30
            feats = set(f.get("cpu_features") or [])
            shown = ", ".join(
                x if x in feats else f"no {x}"
                for x in INTERESTING_FEATURES
                if x in feats or x in ("asimdhp", "asimddp", "i8mm")
            )
            mem_t, mem_a = f.get("mem_total"), f.get("mem_available")
            free = f.get("disk_free")
            if f.python is not None:
                out += [
                    f"  python   {f.python} ({f.get('executable')})",
                    f"  numpy    {f.get('numpy') or 'MISSING'}",
                    f"  ncnn     {f.get('ncnn') or 'MISSING'}",
                ]
            out += [
                f"  cpu      {f.get('cpu_model') or '?'}, {f.get('machine')}, "
                f"{f.get('cores')} cores; {shown}",
                f"  memory   {mem_t / gib:.1f} GiB total, {mem_a / gib:.1f} GiB available"
                if mem_t and mem_a
                else "  memory   ?",
                f"  disk     {free / gib:.1f} GiB free in {self.workdir}"
                if free is not None
                else "  disk     ?",
            ]
            if f.python is not None:
                libc = " ".join(f.get("libc") or []) or "?"
                out.append(f"  libc     {libc}; pip {'yes' if f.get('pip') else 'no'}")
            if f.get("phone"):
                out += phone_lines(f)
        if self.agent_choice is not None:
            out.append(f"  agent    {self.agent_choice.kind} ({self.agent_choice.reason})")
        if self.agent is not None:
            kind = self.agent.get("agent_kind", "python")
            ncnn = self.agent.get("ncnn") if self.agent.get("ncnn_ok") else "MISSING"
            out.append(
                f"  agent    runs (edgecal-agent {self.agent.get('agent_version')} {kind}, "
                f"protocol {self.agent.get('protocol')}, ncnn {ncnn})"
            )
        elif f is not None:
            out.append("  agent    not started")
        if self.golden is not None:
            g = self.golden
            out.append(
                f"  golden   {'ok' if g.ok else 'WRONG'} ({g.summary()}, {g.runtime} runtime)"
            )
        out += [f"  note     {n}" for n in self.notes]
        out += [f"  PROBLEM  {p.what} (fix: {p.fix})" for p in self.problems]
        out.append(f"  {'OK' if self.ok else 'NOT READY'} ({self.seconds:.1f} s)")
        return out


def phone_lines(f: BoardFacts) -> list[str]:
    """The phone section of ``board check``: model, Android, ABI, clusters, screen."""
    clusters = f.get("clusters") or []
    shown = "; ".join(
        f"{c['kind']} {','.join(map(str, c['cpus']))} {c.get('part') or '?'}"
        + (f" {c['max_khz'] // 1000} MHz" if c.get("max_khz") else "")
        for c in clusters
    )
    return [
        f"  phone    {f.get('model') or '?'}, Android {f.get('android') or '?'}, "
        f"ABI {f.get('abi') or '?'}" + (f", SoC {f.get('soc')}" if f.get("soc") else ""),
        f"  cores    {shown or '?'}",
        f"  screen   {f.get('screen') or '?'}; thermal "
        + ("; ".join(f.get("throttled") or []) or "no throttling seen"),
    ]


def phone_notes(f: BoardFacts) -> list[str]:
    """Warnings about a phone's state that slow or skew its measurements."""
    out = []
    if f.get("screen") in ("off", "dozing"):
        out.append(
            f"the screen is {f.get('screen')}: Android may throttle or suspend the CPU; keep "
            "it on while calibrating (Developer options: stay awake)"
        )
    if f.get("throttled"):
        out.append(
            "the phone looks thermally throttled ("
            + "; ".join(f.get("throttled") or [])
            + "): let it cool before measuring speed"
        )
    return out


def check_device(
    dev: SshDevice | AdbDevice, board: Board, report: CheckReport, *, golden: bool = False
) -> None:
    """Fill ``report`` from an open device: probe, problems, then the agent itself, then
    with ``golden`` the golden check (:mod:`edgecal.boards.golden`) when the agent has ncnn."""
    report.address = dev.link.address
    report.workdir = str(dev.workdir)
    try:
        report.agent_choice = dev.agent_choice
    except DeviceError as e:
        report.problems.append(_problem(e, f"check the board ({board.source})"))
        return
    native = report.agent_choice.kind == "native"
    facts = dev.probe()
    report.facts = facts
    if facts.get("phone"):
        report.notes += phone_notes(facts)
    expected = report.profile.cpu_features if report.profile else ()
    report.problems += (
        native_problems(facts, board=board.name, expected_features=expected)
        if native
        else problems(facts, board=board.name, python=board.python, expected_features=expected)
    )
    if report.profile is not None and facts.facts:
        have = set(facts.get("cpu_features") or [])
        extra = [x for x in report.profile.cpu_features_absent if x in have]
        if extra:
            report.notes.append(
                f"the board has {', '.join(extra)}, which profile "
                f"{report.profile.name} says it lacks"
            )
        machine = str(facts.get("machine") or "")
        if (
            machine
            and machine != report.profile.arch
            and (native_target(machine) != native_target(report.profile.arch))
        ):
            report.problems.append(
                Problem(
                    f"the board is {machine}, profile {report.profile.name} says "
                    f"{report.profile.arch}",
                    "fix `profile = ...` in the boards file",
                )
            )
    blocking = [
        p
        for p in report.problems
        if "provision" in p.fix
        or "Python" in p.fix
        or "work directory" in p.what
        or "no native agent" in p.what
        or "cannot be probed" in p.what
    ]
    if blocking:
        return
    if native and not _native_agent_ready(dev, report):
        return
    try:
        agent = report.agent = dev.hello()
    except DeviceError as e:
        fix = f"run `edgecal board check {board.name}`"
        report.problems.append(_problem(e, fix, f"the agent does not run: {e.message}"))
        return
    if golden and agent.get("ncnn_ok"):
        try:
            report.golden = golden_check(dev)
        except DeviceError as e:
            fix = f"reinstall ncnn (`edgecal board provision {board.name} --force`)"
            what = f"the golden model does not run: {_without_board(e, board)}"
            report.problems.append(_problem(e, fix, what))
            return
        if not report.golden.ok:
            report.problems.append(Problem(report.golden.what, report.golden.fix))


def _native_agent_ready(dev: SshDevice | AdbDevice, report: CheckReport) -> bool:
    """Whether the board's native agent is built on this machine; a check never builds it
    (minutes cold): it says how to."""
    from edgecal.native import find_agent

    try:
        target = dev.native_target()
    except EdgecalError as e:
        report.problems.append(_problem(e, "use the Python agent on this board"))
        return False
    try:
        if find_agent(target) is not None:
            return True
    except EdgecalError as e:
        report.problems.append(_problem(e, f"run `edgecal agent build --target {target}`"))
        return False
    report.problems.append(
        Problem(
            f"the native agent for {target} is not built on this machine yet",
            f"run `edgecal agent build --target {target}` (once: minutes cold, then cached) "
            f"or `edgecal board provision {report.board}` (builds and pushes it)",
        )
    )
    return False


def _problem(e: EdgecalError, fix: str, what: str | None = None) -> Problem:
    """``e`` as a problem: ``what`` (by default its message), its hint or else ``fix``."""
    return Problem(e.message if what is None else what, e.hint or fix)


def _without_board(e: EdgecalError, board: Board) -> str:
    """``e``'s message without the board's name in front."""
    return e.message.removeprefix(f"{board.name}: ")


def check_board(
    board: Board, *, accept_new_host_key: bool = False, golden: bool = False
) -> CheckReport:
    """Connect, probe and start the agent (and with ``golden`` run the golden check); never
    raises for a board problem (it is reported).  ``HostReferenceError`` when ``golden`` and
    this machine cannot compute the reference."""
    from edgecal.boards.open import open_board

    t0 = time.perf_counter()
    report = CheckReport(board=board.name, started=time.time())
    try:
        report.profile = board.load_profile()
    except ConfigError as e:
        report.problems.append(_problem(e, "fix the boards file"))
    try:
        with open_board(board, accept_new_host_key=accept_new_host_key) as dev:
            check_device(dev, board, report, golden=golden)
    except BoardSetupError as e:
        report.problems.append(_problem(e, "", _without_board(e, board)))
    except DeviceError as e:
        fix = f"check the board and the boards file ({board.source})"
        report.problems.append(_problem(e, fix, _without_board(e, board)))
    report.seconds = time.perf_counter() - t0
    report.finished = time.time()
    return report
