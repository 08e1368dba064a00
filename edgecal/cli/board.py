"""The ``edgecal board check|provision|clean HOST...`` commands (argument parsing and printing)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from edgecal.cli.options import MIB, NumberOption, add_boards_file, add_json, print_json


class _Report(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


_R = TypeVar("_R", bound=_Report)


def _print_reports(reports: Iterable[_R], as_json: bool, text: Callable[[_R], str]) -> list[_R]:
    """Each report's ``text`` printed as soon as it comes, or all of them as one JSON list at
    the end (``to_dict()``); the reports."""
    got = []
    for r in reports:
        got.append(r)
        if not as_json:
            sys.stdout.write(text(r) + "\n")
            sys.stdout.flush()
    if as_json:
        print_json([r.to_dict() for r in got])
    return got


def cmd_board_check(args: argparse.Namespace) -> int:
    """Every board checked in parallel; reports printed in the order given, each as soon as
    it and those before it are done."""
    from edgecal.api.boards import check_boards

    reports = _print_reports(
        check_boards(
            args.hosts,
            boards_path=args.boards,
            golden=args.golden,
            accept_new_host_key=args.accept_new_host_key,
        ),
        args.json,
        lambda r: "\n".join(r.lines()),
    )
    bad = [r for r in reports if not r.ok]
    for r in bad:
        p = r.problems[0]
        sys.stderr.write(f"edgecal: error: {r.board}: {p.what} (fix: {p.fix})\n")
    return 1 if bad else 0


def cmd_board_provision(args: argparse.Namespace) -> int:
    from edgecal.api.boards import provision_boards

    def say(text: str) -> None:
        sys.stderr.write(f"edgecal: {text}\n")

    status = 0
    for report in provision_boards(
        args.hosts,
        boards_path=args.boards,
        wheels=args.wheels,
        force=args.force,
        accept_new_host_key=args.accept_new_host_key,
        say=say,
    ):
        sys.stdout.write("\n".join(report.lines()) + "\n")
        if not report.ok:
            p = report.problems[0]
            sys.stderr.write(
                f"edgecal: error: {report.board}: still not ready after "
                f"provisioning: {p.what} (fix: {p.fix})\n"
            )
            status = 1
    return status


def cmd_board_clean(args: argparse.Namespace) -> int:
    from edgecal.api.boards import clean_boards

    reports = clean_boards(
        args.hosts,
        boards_path=args.boards,
        keep_mb=args.keep_mb,
        accept_new_host_key=args.accept_new_host_key,
    )
    _print_reports(reports, args.json, lambda r: r.line())
    return 0


def add_board_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "board", help="check, provision or clean boards (over SSH) and phones (over adb)"
    )
    bsub = p.add_subparsers(dest="board_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "hosts",
            nargs="+",
            metavar="HOST",
            help="board name of the boards file, or user@host[:port]",
        )
        add_boards_file(q, whose_key="an")

    q = bsub.add_parser(
        "check",
        help="Python, numpy, ncnn, CPU, memory, disk, agent; "
        "each problem with its fix (boards in parallel)",
    )
    common(q)
    add_json(q)
    q.add_argument(
        "--golden",
        action="store_true",
        help="also run a small reference model on each board and compare its "
        "outputs with this machine's (a board computing wrong results fails)",
    )
    q.set_defaults(func=cmd_board_check)
    q = bsub.add_parser("provision", help="install numpy + ncnn on a board without internet")
    common(q)
    q.add_argument(
        "--wheels",
        metavar="DIR",
        help="folder of wheels to use/fill (default: ~/.cache/edgecal/wheels)",
    )
    q.add_argument("--force", action="store_true", help="reinstall even if they import")
    q.set_defaults(func=cmd_board_provision)
    q = bsub.add_parser(
        "clean",
        help="remove the models and shards runs pushed to a board's work directory (the next "
        "run pushes what it needs again); run it when no run uses the board",
    )
    common(q)
    add_json(q)
    q.add_argument(
        "--keep-mb",
        action=NumberOption,
        within=MIB,
        default=0.0,
        metavar="MIB",
        help="keep the most recently pushed files up to this many MiB (default: 0.0, remove all)",
    )
    q.set_defaults(func=cmd_board_clean)
