"""Report: one self-contained HTML page from a run directory (:func:`write_report`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal.api.samples import PathArg
from edgecal.files.outputs import Output, check_outputs, input_paths


@dataclass
class Report:
    """The page written (``-``: standard output) and which run files it used.
    :meth:`to_dict` is ``edgecal report --json``."""

    page: str
    run: str
    files: dict[str, bool]

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.page, "run": self.run, "files": dict(self.files)}


def write_report(
    run: PathArg, out: PathArg | None = None, *, outputs: Sequence[Output] = ()
) -> Report:
    """Write the report page of the run directory ``run`` (of ``validate(run_dir=...)`` or
    ``tune``) to ``out`` (default: RUN/report.html; ``-``: standard output), never over one of
    the run's files; ``outputs``: the caller's own outputs, checked with ``out``."""
    from edgecal.report.html import REPORT_FILES
    from edgecal.report.page import write_report as write_page
    from edgecal.runs.rundir import RUN_JSON

    path = Path(os.fspath(run))
    out_s = None if out is None else os.fspath(out)
    if out_s:  # never over one of the run's files
        check_outputs(
            [Output("-o/--out", out_s, text=True), *outputs],
            input_paths("run file", [path / n for n in (RUN_JSON, *REPORT_FILES)]),
        )
    page = write_page(path, Path(out_s) if out_s else None)
    return Report(str(page), str(path), {name: (path / name).is_file() for name in REPORT_FILES})
