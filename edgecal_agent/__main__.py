"""``python -m edgecal_agent`` and the zipapp entry point.

python -m edgecal_agent serve --workdir W       persistent: job ids on stdin
python -m edgecal_agent run-job --workdir W ID  one job directory
python -m edgecal_agent hello                   the hello facts as JSON on stdout
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from collections.abc import Sequence


def _protocol_stdout() -> object:
    """Reserve the real stdout for protocol lines; anything else printing to fd 1 (ncnn, a
    stray print) is redirected to stderr so it cannot corrupt the protocol stream."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def main(argv: Sequence[str] | None = None) -> int:
    from edgecal_agent import __version__
    from edgecal_agent.server import run_job, serve

    parser = argparse.ArgumentParser(
        prog="edgecal-agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run jobs whose ids arrive on stdin")
    root_help = (
        "the folder the work directory must be in (default: the user's home; the "
        "work directory is refused when its real path is outside it, or is /)"
    )
    p_serve.add_argument("--workdir", required=True)
    p_serve.add_argument("--root", help=root_help)
    p_job = sub.add_parser("run-job", help="run one job directory")
    p_job.add_argument("--workdir", required=True)
    p_job.add_argument("--root", help=root_help)
    p_job.add_argument("job_id")
    sub.add_parser("hello", help="print the device facts as JSON")
    args = parser.parse_args(argv)

    if args.command == "hello":
        from edgecal_agent.jobs import hello_info

        json.dump(hello_info(), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    from edgecal_agent.errors import WorkdirRefused
    from edgecal_agent.workdir import Workdir, check_workdir

    try:
        workdir = Workdir(check_workdir(args.workdir, args.root), real=True)
    except WorkdirRefused as e:
        sys.stderr.write(f"edgecal-agent: {e.kind}: {e}\n")
        return 2
    # a crash inside ncnn (SIGSEGV on a malformed model) prints "Fatal Python error: ..." and
    # the Python stack: the host tells a crash from a killed agent by it
    faulthandler.enable(sys.stderr)
    if args.command == "run-job":
        response = run_job(workdir, args.job_id)
        return 0 if response.ok else 1
    proto = _protocol_stdout()
    return serve(workdir, sys.stdin, proto, sys.stderr)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
