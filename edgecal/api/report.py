"""Report: one self-contained HTML page from a run directory (:func:`write_report`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal.api.samples import PathArg
from edgecal.files.outputs import Input, Output, check_outputs, input_paths
from edgecal.inputs.arguments import optional_path_arg, path_arg


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
    the run's files nor over one of the inputs its ``run.json`` records (models, table,
    labels, sample lists); ``outputs``: the caller's own outputs, checked with ``out``."""
    from edgecal.report.html import REPORT_FILES
    from edgecal.report.page import write_report as write_page
    from edgecal.runs.rundir import INT8_BIN, INT8_PARAM, RUN_JSON, TABLE, recorded_inputs

    run, out = path_arg(run, "run"), optional_path_arg(out, "out")
    path = Path(os.fspath(run))
    out_s = None if out is None else os.fspath(out)
    if out_s is not None:  # before any work (an empty name is refused)
        own = [RUN_JSON, TABLE, INT8_PARAM, INT8_BIN, *REPORT_FILES]
        check_outputs(
            [Output("out (-o/--out)", out_s, text=True), *outputs],
            [
                *input_paths("run file", [path / n for n in dict.fromkeys(own)]),
                *(Input(f"run input {key}", p) for key, p in recorded_inputs(path)),
            ],
        )
    page = write_page(path, Path(out_s) if out_s is not None else None)
    return Report(str(page), str(path), {name: (path / name).is_file() for name in REPORT_FILES})
