"""The ``edgecal agent build`` command (argument parsing and printing)."""

from __future__ import annotations

import argparse
import sys

from edgecal.cli.options import add_json, err, print_json
from edgecal.native import TARGET_NAMES


def cmd_agent_build(args: argparse.Namespace) -> int:
    from edgecal.api.agentbuild import agent_build

    b = agent_build(
        args.target,
        args.ncnn,
        sdist=args.ncnn_sdist,
        jobs=args.jobs,
        progress=lambda text: err(f"edgecal: {text}"),
    )
    if args.json:
        print_json(b.to_dict())
        return 0
    how = "cached" if b.cached else "built"
    sys.stdout.write(
        f"{b.path}\n  native agent for {b.target}, ncnn {b.ncnn_version}, "
        f"{b.bytes / 1e6:.1f} MB, {how} in {b.seconds:.1f} s\n"
    )
    return 0


def add_agent_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("agent", help="the native agent (C++, links ncnn statically)")
    asub = p.add_subparsers(dest="agent_command", required=True)
    q = asub.add_parser(
        "build",
        help="build the native agent for a target from the package index's ncnn sdist "
        "(cached: ~0 s when built before)",
    )
    q.add_argument("--target", required=True, choices=TARGET_NAMES)
    q.add_argument(
        "--ncnn",
        metavar="VERSION",
        help="the ncnn version to link (default: this machine's ncnn Python package's)",
    )
    q.add_argument(
        "--ncnn-sdist",
        metavar="FILE",
        help="a local ncnn sdist (.tar.gz) instead of the package index's (offline use)",
    )
    q.add_argument(
        "--jobs", type=int, metavar="N", help="parallel compile jobs (default: every core)"
    )
    add_json(q)
    q.set_defaults(func=cmd_agent_build)
