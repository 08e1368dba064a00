"""Work spread over a fleet of devices that survives lost links and lost boards.

Units of work (one shard of one pass) wait in one queue; each device has a worker thread that
takes the next unit, runs it as one agent job and hands the answer to ``done`` (which records
it in the run directory).  A failure of the board or its link (``DeviceError``: a cut link, a
killed agent, a full disk) is retried on the same board after a back-off: the device reconnects,
the answer of the interrupted job is collected if the agent wrote it (the board-side response
is the proof), else the unit runs again under a new job id.  After ``RetryPolicy.attempts``
failures the board is given up and its unit goes back to the queue for the other boards.  A
failure of the job itself (the model, the request: the same on every board) stops the run.

With no board left the run stops with :class:`FleetExhausted`; what is done stays done.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from edgecal.device.base import Device
from edgecal.errors import AgentCrash, AgentError, CalibrationError, DeviceError, HostKeyError

U = TypeVar("U")
_fleets = itertools.count(1)

#: Agent error kinds that mean the job itself is wrong (every board would fail it the same).
JOB_ERRORS = frozenset(
    {
        "BadRequest",
        "ModelLoadError",
        "BlobNotFound",
        "InputError",
        "ProtocolMismatch",
        "ExtractError",
        "NonFiniteActivation",
        "OutOfMemory",
        # Python errors of the job's own code or data: the same on every try
        # (an OSError -- a full disk, a vanished file -- stays a board fault)
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
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries per unit on one board before the board is given up
    backoff_s: tuple[float, ...] = (1.0, 2.0, 4.0)  # waits before the 2nd, 3rd, ... try

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` >= 1)."""
        if not self.backoff_s:
            return 0.0
        return self.backoff_s[min(attempt, len(self.backoff_s)) - 1]


@dataclass
class BoardAccount:
    """What one board did in a run."""

    board: str
    shards: int = 0  # units answered
    samples: int = 0
    retried: int = 0  # tries that failed and were tried again (here or elsewhere)
    reassigned: int = 0  # units this board took over from a lost board
    collected: int = 0  # answers of interrupted jobs collected after a reconnect
    seconds: float = 0.0  # busy time
    lost: str | None = None  # why the board was given up

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


class FleetExhausted(CalibrationError):
    """Every board was lost before the work was done."""


@dataclass
class Job(Generic[U]):
    """How to run a unit: ``start(device, unit, job_id, progress)`` runs its agent job and
    returns the parsed answer; ``collect(device, job_id, unit)`` parses the answer of an
    interrupted job if it is on the board (``None`` when not); ``size(unit)``: its samples."""

    start: Callable[[Device, U, str, Callable[[int, int], None]], Any]
    collect: Callable[[Device, U, str], Any]
    size: Callable[[U], int]
    name: Callable[[U], str]
    #: the agent op of a unit, the last part of its job ids (``...-absmax``)
    op: Callable[[U], str] | None = None
    #: what a unit needs on the board (its shard): a unit goes to the board that answered one
    #: of the same key before, whose copy is there, unless another board would sit idle
    home: Callable[[U], Any] | None = None


@dataclass
class _Queue(Generic[U]):
    pending: collections.deque[tuple[U, bool]] = field(default_factory=collections.deque)
    producing: bool = True
    outstanding: int = 0  # taken, not yet answered
    fatal: BaseException | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)

    def fail(self, e: BaseException) -> None:
        """Stop the run with ``e`` (the first failure wins) and wake every waiter."""
        with self.cond:
            self.fatal = self.fatal or e
            self.cond.notify_all()


def _board_fault(e: DeviceError) -> bool:
    """A fault of the board or its link (retry, then give the board up), not of the job."""
    if isinstance(e, AgentError):
        return e.kind not in JOB_ERRORS
    return not isinstance(e, (HostKeyError, AgentCrash))


class Fleet:
    """Run units over ``devices`` (see the module doc).  ``say`` gets one line per event
    (retry, reconnect, lost board); ``sleep`` waits out a back-off (tests record it)."""

    def __init__(
        self,
        devices: Sequence[Device],
        *,
        retry: RetryPolicy | None = None,
        say: Callable[[str], None] | None = None,
        tag: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not devices:
            raise CalibrationError("no device to run on")
        self.devices = list(devices)
        self.retry = retry or RetryPolicy()
        self.say = say or (lambda text: None)
        self.sleep = sleep
        #: job ids are ``<tag>-<board>-<serial>-<try>``: unique on a board across runs
        self.tag = tag or f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(_fleets)}"
        names = [d.name for d in self.devices]
        #: one label per device: its name, numbered when several share one (local workers)
        self.labels = [
            n if names.count(n) == 1 else f"{n}#{names[:i].count(n) + 1}"
            for i, n in enumerate(names)
        ]
        self.accounts = {label: BoardAccount(label) for label in self.labels}
        self.lost: set[str] = set()
        self._hints: dict[str, str | None] = {}  # lost board -> the fix of its last error
        self._homes: dict[Any, str] = {}  # Job.home key -> the board that answered it
        #: units each worker took, over every run: job ids stay unique when a fleet runs the
        #: same op again (a scorer's variants), so an old answer is never collected as new
        self._serials = [0] * len(self.devices)
        #: set when run()'s caller is interrupted (SIGINT/SIGTERM): no retries, no messages
        self._stopped = threading.Event()

    def remember_home(self, key: Any, label: str) -> None:
        """Units of this :attr:`Job.home` key have their files on board ``label`` (e.g. the
        shards a resumed run pushed before it was interrupted)."""
        if label in self.labels:
            self._homes[key] = label

    @property
    def alive(self) -> list[Device]:
        return [
            d for d, label in zip(self.devices, self.labels, strict=True) if label not in self.lost
        ]

    def run(
        self,
        units: Iterable[U],
        job: Job[U],
        done: Callable[[U, Any, str, str], None],
        total: int,
        progress: Callable[[int, int], None],
    ) -> None:
        """Run every unit of ``units`` (consumed as produced: a generator may still be
        decoding) and call ``done(unit, answer, board, job_id)`` (serialised) for each."""
        q: _Queue[U] = _Queue()
        lock = threading.Lock()
        finished = [0]
        partial: dict[int, int] = {}

        def tick(key: int) -> Callable[[int, int], None]:
            def update(n: int, _total: int) -> None:
                with lock:
                    partial[key] = n
                    progress(finished[0] + sum(partial.values()), total)

            return update

        def produce() -> None:
            try:
                for unit in units:
                    with q.cond:
                        q.pending.append((unit, False))
                        q.cond.notify_all()
            except BaseException as e:  # handed to run()'s caller
                q.fail(e)
            finally:
                with q.cond:
                    q.producing = False
                    q.cond.notify_all()

        def pick(label: str) -> int | None:
            """The next unit for ``label``: its own (key answered there) or nobody's first;
            another board's (the last: the smallest) only once every unit is queued."""
            if job.home is None:
                return 0 if q.pending else None
            for i, (unit, _) in enumerate(q.pending):
                owner = self._homes.get(job.home(unit))
                if owner is None or owner == label or owner in self.lost:
                    return i
            return len(q.pending) - 1 if q.pending and not q.producing else None

        def take(label: str) -> tuple[U, bool] | None:
            with q.cond:
                while True:
                    if q.fatal is not None:
                        return None
                    i = pick(label)
                    if i is not None:
                        q.outstanding += 1
                        item = q.pending[i]
                        del q.pending[i]
                        return item
                    if not q.pending and not q.producing and q.outstanding == 0:
                        return None
                    q.cond.wait()

        def give_back(unit: U) -> None:
            with q.cond:
                q.outstanding -= 1
                q.pending.appendleft((unit, True))
                q.cond.notify_all()

        def answered() -> None:
            with q.cond:
                q.outstanding -= 1
                q.cond.notify_all()

        def worker(index: int, device: Device) -> None:
            label = self.labels[index]
            acct = self.accounts[label]
            while True:
                item = take(label)
                if item is None:
                    return
                unit, moved = item
                self._serials[index] += 1
                serial = self._serials[index]
                key = index * 1_000_000 + serial
                t0 = time.perf_counter()
                try:
                    answer, job_id = self._attempts(
                        device, unit, job, acct, tick(key), f"{self.tag}-{index}-{serial}"
                    )
                except _BoardLost as e:
                    acct.seconds += time.perf_counter() - t0
                    acct.lost = e.why
                    self._hints[label] = e.hint
                    with q.cond:
                        self.lost.add(label)
                        left = len(self.alive)
                    self.say(
                        f"{label}: given up ({e.why}); "
                        + (
                            f"its shard goes to the other {left} board(s)"
                            if left
                            else "no board left"
                        )
                    )
                    with lock:
                        partial.pop(key, None)
                    give_back(unit)
                    if not left:
                        q.fail(_NoBoardLeft())
                    return
                except BaseException as e:
                    q.fail(e)
                    answered()
                    return
                acct.seconds += time.perf_counter() - t0
                try:
                    with lock:
                        done(unit, answer, label, job_id)
                        partial.pop(key, None)
                        finished[0] += job.size(unit)
                        progress(finished[0] + sum(partial.values()), total)
                except BaseException as e:
                    q.fail(e)
                    answered()
                    return
                acct.shards += 1
                acct.samples += job.size(unit)
                if moved:
                    acct.reassigned += 1
                if job.home is not None:
                    with q.cond:
                        self._homes[job.home(unit)] = label
                answered()

        producer = threading.Thread(target=produce, name="edgecal-fleet-producer", daemon=True)
        producer.start()
        threads = [
            threading.Thread(target=worker, args=(i, d), daemon=True, name=f"edgecal-fleet-{label}")
            for i, (d, label) in enumerate(zip(self.devices, self.labels, strict=True))
            if label not in self.lost
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException as e:  # interrupted: the workers stop at their next step
            self._stopped.set()
            q.fail(e)
            raise
        with q.cond:
            q.fatal = q.fatal or (None if not q.pending and not q.producing else _NoBoardLeft())
            q.cond.notify_all()
        producer.join()
        if isinstance(q.fatal, _NoBoardLeft):
            raise FleetExhausted(
                f"every board was lost before the work was done ({self._why_lost()})",
                hint=self._lost_hint(),
            )
        if q.fatal is not None:
            raise q.fatal

    def call(self, what: str, fn: Callable[[Device], Any]) -> Any:
        """``fn`` on every board at once (with the retry policy), e.g. ``hello``: every agent
        starts now, not at its board's first shard.  A board that does not answer is given
        up; the answer of the first board (in order) that did is returned."""
        job: Job[None] = Job(
            start=lambda d, u, j, p: fn(d),
            collect=lambda d, u, j: None,
            size=lambda u: 0,
            name=lambda u: what,
        )
        answers: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        lock = threading.Lock()

        def one(device: Device, label: str) -> None:
            try:
                answers[label] = self._attempts(
                    device, None, job, self.accounts[label], lambda a, b: None, f"{self.tag}-call"
                )[0]
            except _BoardLost as e:
                with lock:
                    self.accounts[label].lost = e.why
                    self._hints[label] = e.hint
                    self.lost.add(label)
                self.say(f"{label}: given up ({e.why})")
            except BaseException as e:  # not the board's fault: raised below
                errors[label] = e

        threads = [
            threading.Thread(
                target=one, args=(d, label), daemon=True, name=f"edgecal-fleet-{what}-{label}"
            )
            for d, label in zip(self.devices, self.labels, strict=True)
            if label not in self.lost
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for label in self.labels:
            if label in errors:
                raise errors[label]
        for label in self.labels:
            if label in answers:
                return answers[label]
        raise FleetExhausted(
            f"no board answered {what} ({self._why_lost()})", hint=self._lost_hint()
        )

    def _why_lost(self) -> str:
        """Each lost board and why (the reason names the board once)."""
        return "; ".join(
            a.lost if a.lost.startswith(f"{a.board}: ") else f"{a.board}: {a.lost}"
            for a in self.accounts.values()
            if a.lost
        )

    def _lost_hint(self) -> str | None:
        """The fixes of the lost boards' last errors, each once."""
        hints = [h for h in dict.fromkeys(self._hints.values()) if h]
        return "; ".join(hints) or None

    def _attempts(
        self,
        device: Device,
        unit: U,
        job: Job[U],
        acct: BoardAccount,
        progress: Callable[[int, int], None],
        base: str,
    ) -> tuple[Any, str]:
        last: DeviceError | None = None
        previous: str | None = None
        for attempt in range(self.retry.attempts):
            job_id = f"{base}-{attempt}" + (f"-{job.op(unit)}" if job.op is not None else "")
            try:
                if attempt:
                    self.sleep(self.retry.delay(attempt))
                    device.recover()
                    if previous is not None:
                        got = job.collect(device, unit, previous)
                        if got is not None:
                            acct.collected += 1
                            self.say(
                                f"{device.name}: collected the answer of {job.name(unit)} "
                                "written before the interruption"
                            )
                            return got, previous
                previous = job_id
                return job.start(device, unit, job_id, progress), job_id
            except DeviceError as e:
                if not _board_fault(e) or self._stopped.is_set():
                    raise
                last = e
                acct.retried += 1
                if attempt + 1 < self.retry.attempts:
                    self.say(
                        f"{device.name}: {job.name(unit)}: {e.headline}; retrying in "
                        f"{self.retry.delay(attempt + 1):g} s "
                        f"({attempt + 2}/{self.retry.attempts})"
                    )
        assert last is not None
        raise _BoardLost(last.headline, last.hint)


class _BoardLost(Exception):
    def __init__(self, why: str, hint: str | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.hint = hint


class _NoBoardLeft(Exception):
    pass
