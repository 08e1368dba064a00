"""A second process that reduces (abs-max, histogram) while the agent runs the next forward.

pyncnn holds the GIL for a whole ``extract``, so a thread cannot overlap the statistics with
ncnn; a process can.  The agent forks one worker per job (only where ``fork`` exists and the
agent has a second core); both share an anonymous ``mmap`` of ``SLOTS`` slots, each big enough
for one sample's visited blob elements.  Per sample the agent takes a free slot, copies each
blob's values into it as ncnn hands them out, and sends the slot's layout down a pipe; the
worker reduces the slot into its own accumulators and gives the slot back.  When no slot is
free (the worker is behind) the agent reduces that sample itself, so it never waits and the
work is shared between the two cores.  At the end the worker sends its accumulators' state and
the agent merges it: abs-max by ``max``, histograms by summing counts, so the result is exactly
the single-process one whatever sample went where.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from edgecal_agent.errors import JobError

#: Slots shared with the worker: one being filled while the worker reduces the others (a
#: queue of several evens out the samples' different costs on each side: 2 slots leave the
#: worker idle a third of the time, 4 give a quarter less wall time on the PP-OCR-like bench).
SLOTS = 4
#: A slot holds this many times the first sample's visited elements (later samples may be a
#: little larger; a blob that does not fit is reduced by the agent itself).
SLOT_MARGIN = 1.25
#: A slot holds at most this many floats (2 MiB): the agent's memory stays bounded by one
#: sample's activations plus ``SLOTS`` times this; larger blobs are reduced by the agent.
SLOT_MAX_FLOATS = 1 << 19
#: Fewer samples than this are not worth a process.
MIN_SAMPLES = 32
#: The agent reduces this many samples alone first (their size sizes the slots) ...
WARMUP_SAMPLES = 4
#: ... and checks every this many samples that it still has a core to itself.
CHECK_SAMPLES = 16
#: The agent "has a core to itself" while it gets at least this share of the wall time as
#: CPU time: on a busy device (other agents, other programs) the worker would only take
#: turns with it on the same cores and add the copies.
ALONE_SHARE = 0.8
#: Once the agent found it has no core to itself, no worker for this long (the other agents of
#: a multi-agent calibration, a busy board: each job would fork, compete, then stop).
BUSY_HOLD_S = 60.0
_busy_until = [0.0]


def note_busy() -> None:
    """The agent does not have a core to itself: no worker for :data:`BUSY_HOLD_S`."""
    _busy_until[0] = time.monotonic() + BUSY_HOLD_S


class Reducer(Protocol):
    """What both processes run: ``add`` a blob's values, ``state`` to send, ``merge`` it."""

    def add(self, b: int, values: np.ndarray) -> None: ...

    def state(self) -> Any: ...

    def merge(self, state: Any) -> None: ...


def spare_core(threads: int = 1) -> bool:
    """True when this process may run on more cores than the ``threads`` ncnn uses and can
    fork; the environment
    variable ``EDGECAL_AGENT_BIN_WORKER=0`` turns the worker off, ``1`` forces it on (even on
    one core, even when the agent does not have a core to itself: :class:`CpuShare`, whose
    verdict "busy" holds for :data:`BUSY_HOLD_S`)."""
    forced = os.environ.get("EDGECAL_AGENT_BIN_WORKER", "")
    if forced == "0":
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    if forced == "1":
        return True
    if time.monotonic() < _busy_until[0]:
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores > max(1, threads)


class CpuShare:
    """This process's CPU time against the wall time since it was made."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def alone(self) -> bool:
        """True while this process ran at least :data:`ALONE_SHARE` of the time (always with
        ``EDGECAL_AGENT_BIN_WORKER=1``)."""
        if os.environ.get("EDGECAL_AGENT_BIN_WORKER", "") == "1":
            return True
        wall = time.perf_counter() - self.wall
        if wall <= 0 or (time.process_time() - self.cpu) >= ALONE_SHARE * wall:
            return True
        note_busy()
        return False


class BinWorker:
    """The forked worker and its shared slots; use as a context manager (the worker is ended
    on the way out, whatever happened)."""

    def __init__(self, make: Callable[[], Reducer], floats: int) -> None:
        self.floats = max(1, min(int(floats), SLOT_MAX_FLOATS))
        self._mem = mmap.mmap(-1, SLOTS * self.floats * 4)
        self.slots = np.frombuffer(self._mem, dtype=np.float32).reshape(SLOTS, self.floats)
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.slots, make), daemon=True)
        self._proc.start()
        child.close()
        self._free = list(range(SLOTS))
        self.handed = 0  # samples given to the worker (for the timing report)

    def __enter__(self) -> BinWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def take_slot(self) -> int | None:
        """A free slot, or None when the worker still holds every slot."""
        while not self._free and self._conn.poll():
            self._free.append(self._answer())
        return self._free.pop() if self._free else None

    def give(self, slot: int, layout: list[tuple[int, int, int]]) -> None:
        """Slot ``slot`` holds ``(blob, offset, count)`` runs: the worker reduces them."""
        self._send((slot, layout))
        self.handed += 1

    def finish(self) -> Any:
        """The worker's reducer state once it has reduced every slot given to it."""
        self._send(None)
        while True:
            got = self._answer()
            if not isinstance(got, int):
                return got[1]

    def _send(self, msg: Any) -> None:
        try:
            self._conn.send(msg)
        except OSError:  # the worker is gone; its last words, if any, say why
            if self._conn.poll():
                self._answer()
            raise self._gone() from None

    def _answer(self) -> Any:
        try:
            got = self._conn.recv()
        except (EOFError, OSError):
            raise self._gone() from None
        if isinstance(got, tuple) and got[0] == "error":
            raise JobError(f"the agent's statistics worker process failed: {got[1]}")
        return got

    def _gone(self) -> JobError:
        self._proc.join(1)
        return JobError(
            f"the agent's statistics worker process (pid {self._proc.pid}) ended "
            f"unexpectedly (exit code {self._proc.exitcode}); run the job again, or set "
            "EDGECAL_AGENT_BIN_WORKER=0 on the device to reduce in the agent alone"
        )

    def close(self) -> None:
        self._conn.close()
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(5)
        del self.slots
        with contextlib.suppress(BufferError):  # a view still alive (a traceback): unmapped
            self._mem.close()  # when the last one goes


def _serve(conn: Any, slots: np.ndarray, make: Callable[[], Reducer]) -> None:
    """The worker: reduce the slots it is given until ``None``, then send the state."""
    try:  # never hold the agent's protocol stream open
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass
    try:
        reducer = make()
        while True:
            msg = conn.recv()
            if msg is None:
                conn.send(("state", reducer.state()))
                return
            slot, layout = msg
            row = slots[slot]
            for b, offset, count in layout:
                reducer.add(b, row[offset : offset + count])
            conn.send(slot)
    except (EOFError, OSError):
        return  # the agent is gone or gave up on this job
    except Exception as e:  # reported to the agent, which fails the job
        conn.send(("error", f"{type(e).__name__}: {e}"))
