"""Text tables of the command line, drawn by rich.

Plain text wherever it goes (a terminal, a pipe, a CI log): no colour codes and no box
lines, only columns aligned by spaces; every cell in full (a long layer or board name widens
its column, never wraps or is cut); the same output for the same rows.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgecal.quality.gate import GateReport, fmt, limit_text

if TYPE_CHECKING:
    from edgecal.workflows.compare import HistogramDiff, ScaleDiff


def table_lines(
    head: Sequence[str], rows: Iterable[Sequence[str]], *, right: Collection[int] = (), gap: int = 2
) -> list[str]:
    """``head`` and ``rows`` as aligned lines (header first, no trailing blanks); columns
    whose index is in ``right`` are right-aligned, ``gap`` spaces between columns."""
    body = [[str(c) for c in row] for row in rows]
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, gap, 0, 0),
        show_edge=False,
        header_style="",
        highlight=False,
    )
    for i, h in enumerate(head):
        table.add_column(Text(h), justify="right" if i in right else "left", no_wrap=True)
    for row in body:
        table.add_row(*(Text(c) for c in row))
    # wide enough for every cell in full: rich never needs to shrink a column
    width = sum(max(cell_len(c) for c in col) + gap for col in zip(head, *body, strict=True))
    out = io.StringIO()
    console = Console(
        file=out,
        width=width + 1,
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
        legacy_windows=False,
    )
    console.print(table)
    return [line.rstrip() for line in out.getvalue().splitlines()]


# ----------------------------------------------------------------------------- edgecal compare


def render_table_diff(rows: list[ScaleDiff]) -> str:
    """``edgecal compare A.table B.table``: per key, the two scales and their difference."""
    return "\n".join(
        table_lines(
            ("key", "a", "b", "rel diff", "note"),
            [
                (
                    r.key,
                    f"{r.a:.6f}" if r.a is not None else "-",
                    f"{r.b:.6f}" if r.b is not None else "-",
                    f"{r.max_rel:.3g}",
                    r.note,
                )
                for r in rows
            ],
            right={1, 2, 3},
        )
    )


def render_histogram_diff(rows: list[HistogramDiff]) -> str:
    """``edgecal compare A.npz B.npz``: per layer, the abs-max, KL bin and shape changes."""
    return "\n".join(
        table_lines(
            ("layer", "absmax a", "absmax b", "rel", "kl bin a", "kl bin b", "mass moved", "note"),
            [
                (
                    r.layer,
                    f"{r.absmax_a:.6f}",
                    f"{r.absmax_b:.6f}",
                    f"{r.absmax_rel:.3g}",
                    "-" if r.kl_bin_a is None else str(r.kl_bin_a),
                    "-" if r.kl_bin_b is None else str(r.kl_bin_b),
                    f"{r.mass_moved:.4f}",
                    r.note,
                )
                for r in rows
            ],
            right={1, 2, 3, 4, 5, 6},
        )
    )


def render_gate(report: GateReport) -> str:
    """The gate's rows as a table (board, check, value, limit, result, note) between the
    sources it compared and its summary line."""
    src = f"edgecal check: {report.current_source}"
    if report.baseline_source:
        src += f" vs baseline {report.baseline_source}"
    rows = [
        (
            r.board,
            r.check,
            fmt(r.value, r.unit),
            limit_text(r),
            "PASS" if r.passed else "FAIL",
            r.message,
        )
        for r in report.rows
    ]
    table = table_lines(("board", "check", "value", "limit", "result", "note"), rows, right={2})
    lines = [src, *table, *(f"warning: {w}" for w in report.warnings), report.summary()]
    return "\n".join(lines) + "\n"
