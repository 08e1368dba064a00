"""The ``edgecal report RUN`` command (argument parsing and printing)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    from edgecal.files.outputs import Output, check_outputs, input_paths
    from edgecal.report.html import REPORT_FILES
    from edgecal.report.page import write_report
    from edgecal.runs.rundir import RUN_JSON

    run = Path(args.run)
    if args.out:  # never over one of the run's files
        check_outputs([Output("-o/--out", args.out, text=True),
                       *([Output("--json", "-", text=True)] if args.json else [])],
                      input_paths("run file", [run / n for n in (RUN_JSON, *REPORT_FILES)]))
    out = write_report(run, Path(args.out) if args.out else None)
    if args.json:
        doc = {"report": str(out), "run": str(run),
               "files": {name: (run / name).is_file() for name in REPORT_FILES}}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif str(out) != "-":
        sys.stdout.write(f"wrote {out}\n")
    return 0


def add_report_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="one self-contained HTML page from a run directory")
    p.add_argument("run", metavar="RUN", help="run directory (of `edgecal validate`/`tune`)")
    p.add_argument("-o", "--out", metavar="OUT.html", default=None,
                   help="page to write (default: RUN/report.html)")
    p.add_argument("--json", action="store_true",
                   help="print the page's path and which run files it used, as JSON")
    p.set_defaults(func=cmd_report)
