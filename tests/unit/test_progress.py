"""Progress where stderr is not a terminal (a CI log, a pipe): plain periodic lines, not
nothing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the edgecal beside these tests
FEED = """
from edgecal.cli.progress import ProgressBars
with ProgressBars() as bars:
    update = bars.task("build histogram", 300)
    for i in range(301):
        update(i, 300)
"""


def test_progress_into_a_pipe_prints_a_line_per_tenth() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_TERMINAL")
    }
    proc = subprocess.run(
        [sys.executable, "-c", FEED], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )  # stderr: a pipe
    lines = proc.stderr.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"edgecal: build histogram {k}/300" for k in range(30, 301, 30)
    ], proc.stderr
    assert lines[-1].startswith("edgecal: build histogram 300/300 (100 %, ")


def test_plain_progress_also_every_ten_seconds_while_it_moves() -> None:
    from edgecal.cli.progress import PlainProgress

    now = [0.0]
    out = io.StringIO()
    update = PlainProgress(out, clock=lambda: now[0]).task("count the absmax", 1000)
    for done, t in (
        (1, 5.0),
        (2, 11.0),
        (3, 12.0),
        (4, 30.0),
        (4, 50.0),
        (100, 51.0),
        (1000, 52.0),
        (1000, 53.0),
    ):
        now[0] = t
        update(done, 1000)
    assert [x.split(" (")[0] for x in out.getvalue().splitlines()] == [
        "edgecal: count the absmax 2/1000",
        "edgecal: count the absmax 4/1000",
        "edgecal: count the absmax 100/1000",
        "edgecal: count the absmax 1000/1000",
    ]
    assert out.getvalue().splitlines()[1].endswith("(0 %, 30 s)")
