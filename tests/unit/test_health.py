"""Parallel board checks (`edgecal board check A B ...`, `healthy_boards`) without boards: the
per-board check is replaced by a stand-in that records when it ran."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection, Mapping

import pytest

import edgecal.fleet.health as health
from edgecal.boards.check import CheckReport
from edgecal.boards.config import Board
from edgecal.boards.golden import HostReferenceError
from edgecal.cli.main import main
from edgecal.device.probe import Problem

BOARDS = [Board(name=f"pi@192.0.2.{i}", host=f"192.0.2.{i}", user="pi") for i in (1, 2, 3)]


class FakeCheck:
    """Stands in for ``check_board``: records its calls; ``barrier``: every board must be in
    its check at the same time (else the barrier breaks); ``fail``/``crash``: boards with a
    problem / whose check raises; ``delay``: seconds a board's check takes."""

    def __init__(
        self,
        barrier: threading.Barrier | None,
        *,
        fail: Collection[str] = (),
        crash: Collection[str] = (),
        delay: Mapping[str, float] | None = None,
    ) -> None:
        self.barrier, self.fail, self.crash = barrier, set(fail), set(crash)
        self.delay = dict(delay or {})
        self.calls: list[tuple[str, bool]] = []

    def __call__(
        self, board: Board, *, accept_new_host_key: bool = False, golden: bool = False
    ) -> CheckReport:
        self.calls.append((board.name, golden))
        report = CheckReport(board=board.name, started=time.time())
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        time.sleep(self.delay.get(board.name, 0.0))
        if board.name in self.crash:
            raise RuntimeError("paramiko went sideways")
        if board.name in self.fail:
            report.problems.append(
                Problem(
                    "the board's ncnn computes wrong results",
                    f"reinstall ncnn (`edgecal board provision "
                    f"{board.name} --force`) or leave the board out",
                )
            )
        report.finished = time.time()
        return report


def test_boards_are_checked_concurrently_and_reported_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the first board finishes last: the order stays the given one
    check = FakeCheck(threading.Barrier(3), delay={BOARDS[0].name: 0.3})
    monkeypatch.setattr(health, "check_board", check)
    ok, reports = health.healthy_boards(BOARDS, golden=False)
    assert [r.board for r in reports] == [b.name for b in BOARDS]
    assert ok == BOARDS
    assert max(r.started for r in reports) < min(r.finished for r in reports)
    assert sorted(check.calls) == sorted((b.name, False) for b in BOARDS)


def test_a_failing_board_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    b1, b2, b3 = (b.name for b in BOARDS)
    monkeypatch.setattr(health, "check_board", FakeCheck(None, fail={b1}, crash={b2}))
    monkeypatch.setattr(health, "host_reference", lambda: [])
    ok, reports = health.healthy_boards(BOARDS, golden=True)
    assert [b.name for b in ok] == [b3]
    assert "wrong results" in reports[0].problems[0].what
    assert (
        reports[1].problems[0].what
        == "the check failed unexpectedly: RuntimeError: paramiko went sideways"
    )
    assert reports[2].ok


def test_no_host_reference_is_an_error_of_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reference() -> None:
        raise HostReferenceError("this machine cannot compute the golden model's reference")

    def check(board: Board, **kw: object) -> CheckReport:
        no_reference()
        raise AssertionError

    monkeypatch.setattr(health, "check_board", check)
    monkeypatch.setattr(health, "host_reference", no_reference)
    with pytest.raises(HostReferenceError):
        health.healthy_boards(BOARDS[:2], golden=True)
    assert list(health.iter_check_boards([], golden=True)) == []


def test_board_check_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EDGECAL_BOARDS", raising=False)
    check = FakeCheck(threading.Barrier(3), fail={BOARDS[1].name}, delay={BOARDS[0].name: 0.2})
    monkeypatch.setattr(health, "check_board", check)
    monkeypatch.setattr(health, "host_reference", lambda: [])
    names = [b.name for b in BOARDS]
    assert main(["board", "check", *names, "--golden"]) == 1
    out, err = capsys.readouterr()
    assert [ln.split(" (")[0] for ln in out.splitlines() if not ln.startswith(" ")] == names
    assert out.count("  OK (") == 2 and out.count("  NOT READY (") == 1
    assert err.splitlines() == [
        f"edgecal: error: {names[1]}: the board's ncnn computes wrong results (fix: reinstall "
        f"ncnn (`edgecal board provision {names[1]} --force`) or leave the board out)"
    ]
    assert all(golden for _, golden in check.calls)

    monkeypatch.setattr(health, "check_board", FakeCheck(threading.Barrier(2)))
    assert main(["board", "check", *names[:2], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["board"] for r in doc] == names[:2]
    assert all(r["golden"] is None and r["ok"] for r in doc)
    assert all(r["started"] <= r["finished"] for r in doc)
