"""Fleet health: check many boards at once and keep the ones fit to calibrate on.

Each board is checked in its own thread (:func:`edgecal.boards.check.check_board`: connect,
probe, start the agent, optionally the golden check), at most :data:`MAX_PARALLEL` at a time.
A board that fails (unreachable, not provisioned, wrong results) is reported and never stops
the others.  With ``golden`` the host's reference outputs are computed once, alongside.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence

from edgecal.boards.check import CheckReport, check_board
from edgecal.boards.config import Board
from edgecal.boards.golden import host_reference
from edgecal.device.probe import Problem
from edgecal.errors import EdgecalError
from edgecal.fleet.pool import MAX_PARALLEL, board_pool


def _check_one(board: Board, *, golden: bool, accept_new_host_key: bool) -> CheckReport:
    t0, started = time.perf_counter(), time.time()
    try:
        return check_board(board, accept_new_host_key=accept_new_host_key, golden=golden)
    except EdgecalError:
        raise  # the host's own failure (e.g. no golden reference): not this board's
    except Exception as e:  # a surprise on one board must not lose the others' reports
        report = CheckReport(board=board.name, started=started)
        report.problems.append(
            Problem(
                f"the check failed unexpectedly: {type(e).__name__}: {e}",
                f"rerun `edgecal board check {board.name}`; if it persists, report it",
            )
        )
        report.seconds = time.perf_counter() - t0
        report.finished = time.time()
        return report


def iter_check_boards(
    boards: Sequence[Board],
    *,
    golden: bool = False,
    accept_new_host_key: bool = False,
    max_parallel: int = MAX_PARALLEL,
) -> Iterator[CheckReport]:
    """The boards' reports in the given order, each as soon as it and those before it are
    done; all boards run concurrently (up to ``max_parallel``).  Raises
    ``HostReferenceError`` when ``golden`` and this machine cannot compute the reference
    (no board can be judged then)."""
    if not boards:
        return
    with board_pool(len(boards), max_parallel, extra=int(golden)) as pool:
        # the host reference in parallel with the boards' connect and probe
        host = pool.submit(host_reference) if golden else None
        one = functools.partial(_check_one, golden=golden, accept_new_host_key=accept_new_host_key)
        futures = [pool.submit(one, b) for b in boards]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()
        if host is not None:
            host.result()


def healthy_boards(
    boards: Sequence[Board], *, golden: bool, accept_new_host_key: bool = False
) -> tuple[list[Board], list[CheckReport]]:
    """The boards fit to work on (every check passed; with ``golden`` also the golden check),
    in the given order, and every board's report (the left-out ones say why and the fix)."""
    reports = list(
        iter_check_boards(boards, golden=golden, accept_new_host_key=accept_new_host_key)
    )
    return [b for b, r in zip(boards, reports, strict=True) if r.ok], reports
