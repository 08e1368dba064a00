"""The pytest plugin's device when labgrid's environment is named but cannot give a place: in
a user's pytest run (a folder of its own), the test that asks for the device errors with the
message alone, naming the fix, and no traceback into the plugin -- with ``LG_ENV`` set and
labgrid's plugin not loaded, and with a target ``main`` that has no ``RemotePlace``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TEST = "def test_device(edgecal_device_name):\n    assert edgecal_device_name\n"


def run(folder: Path, env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    (folder / "test_dev.py").write_text(TEST)
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "LG_ENV"} | env_extra
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("yaml", "args", "want"),
    [
        (
            "targets:\n  main:\n    resources:\n      RemotePlace:\n        name: p1\n",
            ("-p", "no:labgrid"),
            "LG_ENV is set but labgrid's pytest plugin is not loaded",
        ),
        (
            "targets:\n  main:\n    resources:\n      NetworkService: {address: h}\n",
            (),
            "has no RemotePlace: name the device with --edgecal-device",
        ),
    ],
)
def test_an_unusable_labgrid_environment_is_one_usage_line(
    tmp_path: Path, yaml: str, args: tuple[str, ...], want: str
) -> None:
    env_file = tmp_path / "env.yaml"
    env_file.write_text(yaml)
    folder = tmp_path / "project"
    folder.mkdir()
    r = run(folder, {"LG_ENV": str(env_file)}, *args)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    # the message alone on its line (pytest.fail(pytrace=False)), not inside source lines
    assert any(line.startswith("edgecal: ") and want in line for line in out.splitlines()), out
    assert "pytest_plugin.py" not in out, out  # no traceback into the plugin
