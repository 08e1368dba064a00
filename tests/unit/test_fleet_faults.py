"""Fleet's fault tolerance, deterministic: a scripted fake device, no boards, no subprocesses,
no sleeps (the back-off goes to a recorder).

The fake device keeps the board side of the job protocol: a job's response is written on the
board when the job ends and removed once the host has read it, so an answer the host never got
(the link cut after the job ended) waits there for ``collect_job``.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgecal.cli.interrupt import Terminated, sigterm_raises
from edgecal.device.base import DEFAULT_JOB_TIMEOUT_S, Device, JobResult, Progress, Submission
from edgecal.device.jobs import raise_for_error
from edgecal.errors import (
    AgentCrash,
    AgentError,
    CalibrationError,
    DeviceError,
    HostKeyError,
    ProtocolError,
    TransportError,
)
from edgecal.fleet.scheduler import JOB_ERRORS, Fleet, FleetExhausted, Job, RetryPolicy
from edgecal_agent.messages import ErrorInfo, Response


@dataclass(frozen=True)
class Cut:
    """The link drops before the job ends: no response on the board."""


@dataclass(frozen=True)
class Lost:
    """The job ends and its response is written on the board, then the link drops."""


@dataclass(frozen=True)
class Fails:
    """The agent answers with an error of ``kind``."""

    kind: str


Fault = Cut | Lost | Fails | DeviceError


def answer_of(unit: int) -> float:
    """What the agent computes for a unit (the same on every board)."""
    return unit * 1.5 + 0.25


@dataclass(eq=False)
class FakeBoard(Device):
    """A device whose ``run_job`` call ``k`` (1-based, over its life) does ``faults[k]``;
    from call ``dead_from`` on, every ``run_job`` and ``recover`` fails (the board is gone).
    ``log`` records every call in order."""

    name: str
    faults: Mapping[int, Fault] = field(default_factory=dict)
    dead_from: int | None = None
    log: list[tuple[str, str]] = field(default_factory=list)
    on_run: Callable[[int], None] | None = None  # called with the call number, first thing
    _board: dict[str, JobResult] = field(default_factory=dict)  # responses left on the board
    _runs: int = 0

    def _dead(self) -> bool:
        return self.dead_from is not None and self._runs >= self.dead_from

    def hello(self) -> dict[str, Any]:
        return {"agent": "fake"}

    def push(self, local: Path) -> str:
        raise AssertionError("not used by Fleet")

    def discard(self, locals_: Sequence[Path]) -> None:
        raise AssertionError("not used by Fleet")

    def run_job(
        self,
        op: str,
        params: Mapping[str, Any],
        *,
        timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
        progress: Progress | None = None,
        files: Mapping[str, bytes] | None = None,
        job_id: str | None = None,
    ) -> JobResult:
        assert job_id is not None
        self._runs += 1
        self.log.append(("run", job_id))
        if self.on_run is not None:
            self.on_run(self._runs)
        if self._dead():
            raise TransportError(
                f"{self.name}: ssh: connection refused",
                hint=f"run `edgecal board check {self.name}`",
            )
        fault = self.faults.get(self._runs)
        if isinstance(fault, DeviceError):
            raise fault
        if isinstance(fault, Cut):
            raise TransportError(f"{self.name}: connection reset by peer during job {job_id}")
        if isinstance(fault, Fails):
            try:
                raise_for_error(
                    Response(
                        op=op, job_id=job_id, ok=False, error=ErrorInfo(fault.kind, "scripted")
                    ),
                    self.name,
                )
            except AgentError as e:
                raise e from None
        if progress is not None:
            progress(int(params["count"]), int(params["count"]))
        result = JobResult(
            {
                "op": op,
                "job_id": job_id,
                "ok": True,
                "result": {"absmax": answer_of(int(params["unit"]))},
            }
        )
        if isinstance(fault, Lost):
            self._board[job_id] = result
            raise TransportError(
                f"{self.name}: connection reset by peer reading the answer of job {job_id}"
            )
        return result

    def _submit(self, job: Submission) -> None:
        raise AssertionError("not used: run_job above is the fake")

    def collect_job(self, job_id: str) -> JobResult | None:
        self.log.append(("collect", job_id))
        return self._board.pop(job_id, None)

    def recover(self) -> None:
        self.log.append(("recover", ""))
        if self._dead():
            raise TransportError(
                f"{self.name}: ssh: no route to host", hint=f"run `edgecal board check {self.name}`"
            )

    @property
    def bytes_pushed(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def calls(self, what: str) -> list[str]:
        return [j for kind, j in self.log if kind == what]


def _start(dev: Device, unit: int, job_id: str, tick: Progress) -> float:
    got = dev.run_job("absmax", {"unit": unit, "count": unit + 1}, job_id=job_id, progress=tick)
    return float(got.result["absmax"])


def _collect(dev: Device, unit: int, job_id: str) -> float | None:
    got = dev.collect_job(job_id)
    return None if got is None else float(got.result["absmax"])


JOB: Job[int] = Job(
    start=_start,
    collect=_collect,
    size=lambda u: u + 1,
    name=lambda u: f"shard {u}",
    op=lambda u: "absmax",
)


@dataclass
class Outcome:
    answers: dict[int, float] = field(default_factory=dict)
    boards: dict[int, str] = field(default_factory=dict)
    job_ids: dict[int, str] = field(default_factory=dict)
    sleeps: list[float] = field(default_factory=list)
    said: list[str] = field(default_factory=list)


def make_fleet(
    boards: Sequence[FakeBoard],
    out: Outcome,
    *,
    attempts: int = 4,
    backoff: tuple[float, ...] = (0.5, 1.5),
    heard: Callable[[str], None] | None = None,
) -> Fleet:
    def say(text: str) -> None:
        out.said.append(text)
        if heard is not None:
            heard(text)

    return Fleet(
        boards,
        retry=RetryPolicy(attempts=attempts, backoff_s=backoff),
        say=say,
        tag="t",
        sleep=out.sleeps.append,
    )


def run(fleet: Fleet, units: Sequence[int], out: Outcome) -> Outcome:
    def done(unit: int, answer: Any, board: str, job_id: str) -> None:
        assert unit not in out.answers, f"unit {unit} answered twice"
        out.answers[unit] = answer
        out.boards[unit] = board
        out.job_ids[unit] = job_id

    fleet.run(iter(units), JOB, done, sum(u + 1 for u in units), lambda k, n: None)
    return out


def account(fleet: Fleet, label: str) -> dict[str, Any]:
    d = fleet.accounts[label].to_dict()
    del d["seconds"]  # wall time
    return d


def acct(
    board: str,
    *,
    shards: int = 0,
    samples: int = 0,
    retried: int = 0,
    reassigned: int = 0,
    collected: int = 0,
    lost: str | None = None,
) -> dict[str, Any]:
    return {
        "board": board,
        "shards": shards,
        "samples": samples,
        "retried": retried,
        "reassigned": reassigned,
        "collected": collected,
        "lost": lost,
    }


UNITS = [0, 1, 2]
FAULT_FREE = {u: answer_of(u) for u in UNITS}


def test_the_job_kinds_are_the_fleets() -> None:
    assert set(JOB_KINDS) == JOB_ERRORS  # a new kind gets a test case here


def test_fault_free_run() -> None:
    board = FakeBoard("pi")
    out = Outcome()
    fleet = make_fleet([board], out)
    run(fleet, UNITS, out)
    assert out.answers == FAULT_FREE and out.sleeps == [] and out.said == []
    assert board.log == [("run", f"t-0-{u + 1}-0-absmax") for u in UNITS]
    assert account(fleet, "pi") == acct("pi", shards=3, samples=6)


def test_a_cut_link_is_retried_after_the_backoff_and_a_reconnect() -> None:
    board = FakeBoard("pi", faults={2: Cut(), 3: Cut(), 4: Cut()})
    out = Outcome()
    fleet = make_fleet([board], out, attempts=4, backoff=(0.5, 1.5))
    run(fleet, UNITS, out)
    assert out.sleeps == [0.5, 1.5, 1.5]  # the policy's waits, the last one repeated
    j = [f"t-0-2-{a}-absmax" for a in range(4)]
    assert board.log == [
        ("run", "t-0-1-0-absmax"),
        ("run", j[0]),
        ("recover", ""),
        ("collect", j[0]),
        ("run", j[1]),
        ("recover", ""),
        ("collect", j[1]),
        ("run", j[2]),
        ("recover", ""),
        ("collect", j[2]),
        ("run", j[3]),
        ("run", "t-0-3-0-absmax"),
    ]
    assert out.answers == FAULT_FREE and out.job_ids[1] == j[3]
    assert account(fleet, "pi") == acct("pi", shards=3, samples=6, retried=3)
    assert out.said[0] == (
        f"pi: shard 1: pi: connection reset by peer during job {j[0]}; retrying in 0.5 s (2/4)"
    )
    assert [s.rsplit(" ", 3)[1:] for s in out.said] == [
        ["0.5", "s", "(2/4)"],
        ["1.5", "s", "(3/4)"],
        ["1.5", "s", "(4/4)"],
    ]


def test_an_answer_written_before_the_cut_is_collected_not_run_again() -> None:
    board = FakeBoard("pi", faults={2: Lost()})
    out = Outcome()
    fleet = make_fleet([board], out)
    run(fleet, UNITS, out)
    first = "t-0-2-0-absmax"
    assert board.calls("run") == ["t-0-1-0-absmax", first, "t-0-3-0-absmax"]
    assert board.calls("collect") == [first] and board.calls("recover") == [""]
    assert out.answers == FAULT_FREE and out.job_ids[1] == first  # the interrupted job's id
    assert out.sleeps == [0.5]
    assert account(fleet, "pi") == acct("pi", shards=3, samples=6, retried=1, collected=1)
    assert "pi: collected the answer of shard 1 written before the interruption" in out.said


def test_without_an_answer_on_the_board_the_unit_runs_again_under_a_new_id() -> None:
    board = FakeBoard("pi", faults={1: Cut(), 2: Lost(), 3: Cut()})
    out = Outcome()
    fleet = make_fleet([board], out, attempts=5, backoff=(1.0, 2.0, 4.0))
    run(fleet, [0], out)
    # try 0 is cut (nothing to collect), try 1 is lost after it answered: try 2 collects it
    assert board.log == [
        ("run", "t-0-1-0-absmax"),
        ("recover", ""),
        ("collect", "t-0-1-0-absmax"),
        ("run", "t-0-1-1-absmax"),
        ("recover", ""),
        ("collect", "t-0-1-1-absmax"),
    ]
    assert out.job_ids[0] == "t-0-1-1-absmax" and out.answers == {0: answer_of(0)}
    assert out.sleeps == [1.0, 2.0]
    assert account(fleet, "pi") == acct("pi", shards=1, samples=1, retried=2, collected=1)


#: What every board would fail the same way (the agent's kinds named here, not read from fleet)
JOB_KINDS = [
    "BadRequest",
    "ModelLoadError",
    "BlobNotFound",
    "InputError",
    "ProtocolMismatch",
    "ExtractError",
    "NonFiniteActivation",
    "OutOfMemory",
    "TypeError",
    "ValueError",
    "KeyError",
    "IndexError",
    "AttributeError",
    "UnicodeError",
    "UnicodeEncodeError",
    "UnicodeDecodeError",
    "ZeroDivisionError",
    "OverflowError",
    "RecursionError",
    "NotImplementedError",
    "AssertionError",
]
JOB_FAULTS: list[Any] = [Fails(k) for k in JOB_KINDS] + [
    AgentCrash("pi: the agent died of SIGSEGV running job x"),
    HostKeyError("pi: the host key of 10.0.0.7 has changed"),
]


@pytest.mark.parametrize("fault", JOB_FAULTS, ids=lambda f: getattr(f, "kind", type(f).__name__))
def test_a_job_error_is_not_retried_and_names_the_board(fault: Any) -> None:
    board = FakeBoard("pi", faults={2: fault})
    out = Outcome()
    fleet = make_fleet([board], out)
    with pytest.raises(DeviceError) as e:
        run(fleet, UNITS, out)
    if isinstance(fault, Fails):
        assert isinstance(e.value, AgentError) and e.value.kind == fault.kind
    else:
        assert e.value is fault
    assert e.value.message.startswith("pi: ")
    assert board.calls("run") == ["t-0-1-0-absmax", "t-0-2-0-absmax"]  # unit 2 not started
    assert board.calls("recover") == [] and out.sleeps == [] and fleet.lost == set()
    assert out.answers == {0: answer_of(0)}
    assert account(fleet, "pi") == acct("pi", shards=1, samples=1)


BOARD_FAULTS: list[Any] = [
    Cut(),
    Lost(),
    Fails("InputCorrupt"),
    Fails("ArtifactMissing"),
    Fails("OSError"),
    Fails("NcnnUnavailable"),
    DeviceError("pi: job x did not answer within 3600 s"),
    ProtocolError("pi: malformed response to job x"),
    TransportError("pi: ssh: connection refused"),
]


@pytest.mark.parametrize("fault", BOARD_FAULTS, ids=lambda f: getattr(f, "kind", type(f).__name__))
def test_a_board_fault_is_retried_on_the_same_board(fault: Any) -> None:
    board = FakeBoard("pi", faults={1: fault})
    out = Outcome()
    fleet = make_fleet([board], out)
    run(fleet, [0], out)
    assert out.answers == {0: answer_of(0)} and out.sleeps == [0.5]
    assert board.calls("recover") == [""] and fleet.lost == set()
    got = 1 if isinstance(fault, Lost) else 0
    assert board.calls("run") == ["t-0-1-0-absmax"] + ["t-0-1-1-absmax"] * (1 - got)
    assert account(fleet, "pi") == acct("pi", shards=1, samples=1, retried=1, collected=got)


def test_a_board_is_given_up_after_its_attempts_and_another_does_its_units() -> None:
    a_gone = threading.Event()

    def b_waits(k: int) -> None:
        if k == 1:  # b holds one unit until a has taken another and been given up
            assert a_gone.wait(30)

    a = FakeBoard("a", dead_from=1)
    b = FakeBoard("b", on_run=b_waits)
    out = Outcome()
    fleet = make_fleet(
        [a, b],
        out,
        attempts=3,
        backoff=(0.5, 1.5),
        heard=lambda text: a_gone.set() if "given up" in text else None,
    )
    run(fleet, UNITS, out)
    assert out.answers == FAULT_FREE and set(out.boards.values()) == {"b"}
    assert fleet.lost == {"a"} and [d.name for d in fleet.alive] == ["b"]
    assert len(a.calls("run")) == 1 and len(a.calls("recover")) == 2  # the reconnects fail
    assert a.calls("collect") == [] and sorted(out.sleeps) == [0.5, 1.5]
    lost = "a: ssh: no route to host"
    assert account(fleet, "a") == acct("a", retried=3, lost=lost)
    assert account(fleet, "b") == acct("b", shards=3, samples=6, reassigned=1)
    assert f"a: given up ({lost}); its shard goes to the other 1 board(s)" in out.said
    assert len(b.calls("run")) == 3


def test_every_board_lost_stops_with_fleet_exhausted_keeping_what_is_done() -> None:
    a = FakeBoard("a", dead_from=3)  # answers two units, then is gone
    out = Outcome()
    fleet = make_fleet([a], out, attempts=2, backoff=(0.5,))
    with pytest.raises(FleetExhausted) as e:
        run(fleet, [0, 1, 2, 3], out)
    assert isinstance(e.value, CalibrationError)
    assert e.value.message == (
        "every board was lost before the work was done (a: ssh: no route to host)"
    )
    assert e.value.hint == "run `edgecal board check a`"
    assert out.answers == {0: answer_of(0), 1: answer_of(1)}  # what a resumed run keeps
    assert out.sleeps == [0.5] and fleet.alive == []
    assert account(fleet, "a") == acct(
        "a", shards=2, samples=3, retried=2, lost="a: ssh: no route to host"
    )
    assert out.said == [
        "a: shard 2: a: ssh: connection refused; retrying in 0.5 s (2/2)",
        "a: given up (a: ssh: no route to host); no board left",
    ]


def test_two_boards_lost_name_both() -> None:
    a = FakeBoard("a", dead_from=1)
    b = FakeBoard("b", dead_from=1)
    out = Outcome()
    fleet = make_fleet([a, b], out, attempts=1)
    with pytest.raises(FleetExhausted) as e:
        run(fleet, UNITS, out)
    assert "(a: ssh: connection refused; b: ssh: connection refused)" in e.value.message
    assert sorted((e.value.hint or "").split("; ")) == [
        "run `edgecal board check a`",
        "run `edgecal board check b`",
    ]
    assert out.answers == {} and out.sleeps == [] and fleet.lost == {"a", "b"}
    assert a.calls("recover") == b.calls("recover") == []  # one try: no reconnect


def _in_join(ident: int) -> bool:
    """Whether thread ``ident`` waits in ``Thread.join``."""
    frame = sys._current_frames().get(ident)
    while frame is not None:
        if frame.f_code.co_name == "join" and frame.f_code.co_filename == threading.__file__:
            return True
        frame = frame.f_back
    return False


def test_an_interrupted_run_retries_nothing() -> None:
    """SIGTERM (edgecal.cli.interrupt) while a job runs: the run raises Terminated, and the job's
    failure that follows (its agent stopped) is neither retried nor waited for."""
    stopped = threading.Event()
    out = Outcome()

    def interrupt(k: int) -> None:
        main = threading.main_thread().ident or 0
        while not _in_join(main):  # the signal must reach run() where it waits for the workers
            threading.Event().wait(0.001)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        assert fleet._stopped.wait(30)  # the main thread saw it and stopped the fleet
        stopped.set()

    board = FakeBoard("pi", on_run=interrupt, faults={1: Cut()})
    fleet = make_fleet([board], out)
    with pytest.raises(Terminated), sigterm_raises():
        run(fleet, UNITS, out)
    assert stopped.wait(30)
    for t in threading.enumerate():
        if t.name == "edgecal-fleet-pi":
            t.join(30)
    assert board.calls("run") == ["t-0-1-0-absmax"] and board.calls("recover") == []
    assert out.sleeps == [] and out.said == [] and out.answers == {}
    assert account(fleet, "pi") == acct("pi")


def test_call_gives_up_a_board_that_does_not_answer() -> None:
    a = FakeBoard("a", dead_from=1)
    b = FakeBoard("b")
    out = Outcome()
    fleet = make_fleet([a, b], out, attempts=2)

    def hello(d: Device) -> Any:
        d.run_job("absmax", {"unit": 0, "count": 1}, job_id="hello")
        return d.name

    assert fleet.call("hello", hello) == "b"
    assert fleet.lost == {"a"} and out.sleeps == [0.5]
    assert account(fleet, "a")["lost"] == "a: ssh: no route to host"
