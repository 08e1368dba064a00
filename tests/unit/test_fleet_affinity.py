"""Fleet scheduling: a unit goes back to the board that already holds its shard (Job.home);
hello reaches every board at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from edgecal.fleet.scheduler import Fleet, Job


class _Board:
    def __init__(self, name: str) -> None:
        self.name = name

    def recover(self) -> None:  # never called: no unit fails here
        raise AssertionError


def _run(fleet: Fleet, units: list[int], who: dict[int, str]) -> None:
    lock = threading.Lock()

    def start(dev: Any, unit: int, job_id: str, tick: Any) -> int:
        time.sleep(0.02)
        return unit

    def done(unit: int, answer: Any, board: str, job_id: str) -> None:
        with lock:
            who[unit] = board

    job: Job[int] = Job(
        start=start, collect=lambda d, u, j: None, size=lambda u: 1, name=str, home=lambda u: u
    )
    fleet.run(iter(units), job, done, len(units), lambda k, n: None)


def test_second_pass_goes_where_the_first_put_the_shards() -> None:
    fleet = Fleet([_Board("a"), _Board("b")])  # type: ignore[list-item]
    first: dict[int, str] = {}
    second: dict[int, str] = {}
    _run(fleet, list(range(12)), first)
    _run(fleet, list(reversed(range(12))), second)  # FIFO would swap most boards
    assert set(first.values()) == {"a", "b"}
    home = sum(first[u] == second[u] for u in first)
    assert home >= 10, (first, second)  # a board takes another's unit only when idle


def test_a_lost_boards_units_belong_to_nobody() -> None:
    fleet = Fleet([_Board("a"), _Board("b")])  # type: ignore[list-item]
    first: dict[int, str] = {}
    _run(fleet, list(range(6)), first)
    fleet.lost.add("b")
    second: dict[int, str] = {}
    _run(fleet, list(range(6)), second)
    assert set(second.values()) == {"a"} and len(second) == 6


def test_hello_reaches_every_board_at_once() -> None:
    from edgecal.errors import TransportError
    from edgecal.fleet.scheduler import RetryPolicy

    started = threading.Barrier(3, timeout=10)  # all three calls run at the same time

    def hello(dev: Any) -> str:
        started.wait()
        if dev.name == "b":
            raise TransportError("b: gone")
        return dev.name

    fleet = Fleet(
        [_Board("a"), _Board("b"), _Board("c")],  # type: ignore[list-item]
        retry=RetryPolicy(attempts=1),
    )
    assert fleet.call("hello", hello) == "a"
    assert fleet.lost == {"b"} and fleet.accounts["b"].lost == "b: gone"
