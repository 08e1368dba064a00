"""The API's ``out="-"`` writes into a redirected ``sys.stdout`` (``redirect_stdout`` into a
``StringIO``, as a notebook's stream is): the table, the report page."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import edgecal

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
PREP = {"pixel": "RGB", "mean": (127.5,) * 3, "norm": (0.00784314,) * 3, "shape": (48, 48)}


def test_table_and_page_to_a_redirected_stdout(tmp_path: Path) -> None:
    lst = tmp_path / "calib.txt"
    lst.write_text("".join(f"{SAMPLE / 'calib' / f'calib_00{i}.png'}\n" for i in range(4)))
    model = (SAMPLE / "model.param", SAMPLE / "model.bin")
    images = edgecal.ImageInput(lst, **PREP)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        edgecal.calibrate(model, images, out="-")
    assert "_param_0 " in out.getvalue()
    (tmp_path / "m.table").write_text(out.getvalue())
    edgecal.validate(model, table=tmp_path / "m.table", inputs=images, run_dir=tmp_path / "run")
    with contextlib.redirect_stdout(io.StringIO()) as page:
        edgecal.write_report(tmp_path / "run", "-")
    assert page.getvalue().startswith("<!DOCTYPE html>")
