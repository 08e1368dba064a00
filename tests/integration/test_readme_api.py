"""The README's Python API example runs as written (from a folder holding the sample model)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    (tmp_path / "samples").symlink_to(ROOT / "samples", target_is_directory=True)
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"\d+ layers calibrated; int8 top-1 drop -?\d+\.\d\d points", lines[0])
    assert lines[1].startswith(("target met", "target not met"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", lines[2]), lines  # ncnn's version, from the agent
    for name in (
        "model.table",
        "int8.param",
        "int8.bin",
        "tuned/calibration.table",
        "tuned/int8.bin",
        "tuned/report.html",
    ):
        assert (tmp_path / name).is_file(), name
    # the API wrote what the command line writes: the same table for the same inputs
    from edgecal.cli.main import main

    pre = [
        "--pixel",
        "RGB",
        "--mean",
        "127.5,127.5,127.5",
        "--norm",
        "0.00784314,0.00784314,0.00784314",
        "--shape",
        "48,48",
    ]
    sample = ROOT / "samples" / "tinted_digits"
    cli_table = tmp_path / "cli.table"
    assert (
        main(
            [
                "-q",
                "calibrate",
                str(sample / "model.param"),
                str(sample / "model.bin"),
                "--images",
                str(sample / "calib.txt"),
                *pre,
                "--out",
                str(cli_table),
            ]
        )
        == 0
    )
    assert cli_table.read_bytes() == (tmp_path / "model.table").read_bytes()
