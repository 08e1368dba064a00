"""The ``edgecal report RUN`` command (argument parsing and printing)."""

from __future__ import annotations

import argparse
import sys

from edgecal.cli.options import add_json, print_json


def cmd_report(args: argparse.Namespace) -> int:
    from edgecal.api.report import write_report
    from edgecal.files.outputs import Output

    rep = write_report(
        args.run, args.out, outputs=[Output("--json", "-", text=True)] if args.json else []
    )
    if args.json:
        print_json(rep.to_dict())
    elif rep.page != "-":
        sys.stdout.write(f"wrote {rep.page}\n")
    return 0


def add_report_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="one self-contained HTML page from a run directory")
    p.add_argument("run", metavar="RUN", help="run directory (of `edgecal validate`/`tune`)")
    p.add_argument(
        "-o",
        "--out",
        metavar="OUT.html",
        default=None,
        help="page to write (default: RUN/report.html)",
    )
    add_json(p, help="print the page's path and which run files it used, as JSON")
    p.set_defaults(func=cmd_report)
