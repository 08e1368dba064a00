"""The ``edgecal`` command's entry point: the CLI imported and run with an interrupt before or
around :func:`edgecal.cli.main.main`'s own handling (Ctrl-C while the CLI's modules load, or
while the arguments are parsed) ending as every other interrupt does: one line, exit 130, no
traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from edgecal.cli.main import main as run

        return run()
    except KeyboardInterrupt:
        print("edgecal: interrupted", file=sys.stderr)
        return 130
