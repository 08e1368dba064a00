"""Ctrl-C while the CLI's modules load ends as any interrupt does: one line, exit 130."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# a finder that interrupts the import of the CLI's main module, as a Ctrl-C at that moment does
_INTERRUPTED_IMPORT = textwrap.dedent(
    """
    import sys

    class Interrupt:
        def find_spec(self, name, path=None, target=None):
            if name == "edgecal.cli.main":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, Interrupt())
    from edgecal.cli.launch import main
    sys.exit(main())
    """
)


def test_interrupt_while_the_cli_loads_is_one_line_and_130() -> None:
    got = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_IMPORT], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 130
    assert got.stderr == "edgecal: interrupted\n"
    assert got.stdout == ""


def test_the_launcher_runs_the_cli() -> None:
    got = subprocess.run(
        [sys.executable, "-m", "edgecal", "--version"], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("edgecal ")
