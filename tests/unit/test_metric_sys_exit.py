"""A user metric whose module or function calls ``sys.exit`` is an error naming it, as any other
exception of user code is (it ended ``check`` and ``tune`` with exit 0 and no output); Ctrl-C
in the user's code still interrupts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecal.errors import UsageError
from edgecal.inputs.metricspec import resolve_metric
from edgecal.quality.taskmetrics import MetricError, UserMetric

FP32 = [{"out": np.ones(3, np.float32)}]


@pytest.mark.parametrize("code", ["0", "1", "'bye'", ""])
def test_sys_exit_while_importing_names_the_module(tmp_path: Path, code: str) -> None:
    path = tmp_path / "exits_on_import.py"
    path.write_text(f"import sys\nsys.exit({code})\ndef fn(a, b, c):\n    return 1.0\n")
    with pytest.raises(UsageError) as exc:
        resolve_metric(f"{path}:fn")
    assert f"importing {path} failed" in exc.value.message
    assert "sys.exit" in exc.value.message


def test_sys_exit_in_a_module_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "exits_on_import_mod.py").write_text("raise SystemExit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match="importing exits_on_import_mod failed"):
        resolve_metric("exits_on_import_mod:fn")


def test_sys_exit_in_the_function_is_a_metric_error_ctrl_c_still_interrupts(
    tmp_path: Path,
) -> None:
    def exits(fp32: object, int8: object, labels: object) -> float:
        sys.exit(0)

    def interrupted(fp32: object, int8: object, labels: object) -> float:
        raise KeyboardInterrupt

    with pytest.raises(MetricError, match=r"metric mine failed: it called sys\.exit\(0\)"):
        UserMetric(exits, "mine")(FP32, FP32, None)
    with pytest.raises(KeyboardInterrupt):
        UserMetric(interrupted, "mine")(FP32, FP32, None)
    path = tmp_path / "interrupts_on_import.py"
    path.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        resolve_metric(f"{path}:fn")


def test_check_with_a_metric_module_that_exits_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "mym4.py").write_text("import sys; sys.exit(0)\ndef fn(a,b,c): return 1\n")
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecal",
            "check",
            "m.param",
            "m.bin",
            "--images",
            "imgs",
            "--metric",
            "mym4.py:fn",
            "--max-metric-drop",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 2, got.stderr
    assert "mym4.py" in got.stderr and "sys.exit(0)" in got.stderr
    assert "Traceback" not in got.stderr
