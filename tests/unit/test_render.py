"""The command line's text tables (edgecal.cli.render): plain, aligned, names in full."""

from __future__ import annotations

import os
import subprocess
import sys

from edgecal.cli.calibrate import fleet_lines
from edgecal.cli.render import render_histogram_diff, table_lines
from edgecal.cli.validate import render_board
from edgecal.workflows.compare import HistogramDiff

LONG = "backbone.stage4.block12.attention.output_projection_conv_" + "x" * 150
MARKUP = "[bold red]conv[/] :smile:"  # rich markup and an emoji code


def test_columns_aligned_and_cells_in_full() -> None:
    lines = table_lines(
        ("layer", "type", "cosine"),
        [(LONG, "Convolution", "0.999812"), ("c1", "ReLU", "1.0"), (MARKUP, "中文层", "0.5")],
        right={2},
    )
    assert lines[0].split() == ["layer", "type", "cosine"]
    assert [line.split()[0] for line in lines[1:3]] == [LONG, "c1"]  # not cut, not wrapped
    assert len(lines) == 4 and lines[3].startswith(MARKUP)  # shown as it is, no markup
    ends = {len(line) for line in lines[:3]}
    assert len(ends) == 1  # right-aligned column: every line ends at the same place
    assert lines[1].index("Convolution") == lines[2].index("ReLU") == lines[0].index("type")
    assert all(line == line.rstrip() for line in lines)
    text = "\n".join(lines)
    assert not set(text) & set("─│┃━┏┓┗┛╭╮╰╯┡┩") and "\x1b" not in text


def test_same_text_on_a_terminal_of_any_width() -> None:
    """rich reads COLUMNS, FORCE_COLOR, TERM: none of them changes the table."""
    code = (
        "from edgecal.cli.render import table_lines\n"
        f"print('\\n'.join(table_lines(('layer', 'n'), [({LONG!r}, '1')], right={{1}})))"
    )
    outs = set()
    for env in (
        {},
        {"COLUMNS": "20", "FORCE_COLOR": "1", "TERM": "xterm-256color"},
        {"NO_COLOR": "1", "TERM": "dumb"},
    ):
        outs.add(
            subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, **env},
            ).stdout
        )
    assert len(outs) == 1 and LONG in outs.pop()


def test_command_tables() -> None:
    fleet = fleet_lines(
        [
            {
                "board": LONG,
                "shards": 3,
                "samples": 120,
                "retried": 1,
                "reassigned": 0,
                "collected": 0,
                "seconds": 12.34,
                "lost": 2,
            }
        ]
    )
    assert fleet[0].split()[:2] == ["board", "shards"] and fleet[1].split() == [
        LONG,
        "3",
        "120",
        "1",
        "0",
        "0",
        "12.3",
        "LOST:",
        "2",
    ]
    hist = render_histogram_diff([HistogramDiff(LONG, 8.0, 8.5, 0.0625, None, 1180, 0.012)])
    assert hist.splitlines()[1].split() == [
        LONG,
        "8.000000",
        "8.500000",
        "0.0625",
        "-",
        "1180",
        "0.0120",
    ]
    layer = {
        "name": LONG,
        "type": "Convolution",
        "cosine_mean": 0.99,
        "cosine_min": 0.9,
        "sqnr_db": 20.0,
        "requantized": True,
    }
    board = render_board(
        {
            "n_samples": 4,
            "device": {"name": "b"},
            "runtime": "deployed",
            "threads": 1,
            "top1_fp32": None,
            "top1_int8": None,
            "agreement": 1.0,
            "output_blob": "out",
            "cosine_mean": 1.0,
            "cosine_min": 1.0,
            "sqnr_mean_db": 30.0,
            "sqnr_min_db": 30.0,
            "latency_fp32_ms": 1.0,
            "latency_int8_ms": 1.0,
            "layers": [layer],
        }
    )
    assert board[-1].split() == [
        LONG,
        "Convolution",
        "0.990000",
        "0.900000",
        "20.00",
        "(int8",
        "out)",
    ]
