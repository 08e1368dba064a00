"""The dependency rules of the design, checked on the source: a pure core, a standalone agent."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ("edgecal/calib", "edgecal/ncnnfmt", "edgecal/int8")
# The pure core may use the standard library except what touches files, processes, the network,
# the environment or logging configuration.
PURE_FORBIDDEN = {"os", "pathlib", "shutil", "tempfile", "subprocess", "socket", "logging",
                  "glob", "io", "threading", "multiprocessing", "signal", "urllib", "http"}
PURE_ALLOWED_EDGECAL = ("edgecal.calib", "edgecal.ncnnfmt", "edgecal.int8", "edgecal.errors")
AGENT_ALLOWED = {"numpy", "ncnn", "edgecal_agent"}
FORBIDDEN_CALLS = {"open", "print", "input"}


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", [*(p for f in PURE for p in py_files(f)),
                                  ROOT / "edgecal/quality/jsondoc.py"], ids=str)
def test_pure_core_imports_and_calls(path: Path) -> None:
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in PURE_FORBIDDEN, f"{path}: imports {name}"
        assert top in sys.stdlib_module_names or top in ("numpy", "edgecal", "__future__"), (
            f"{path}: imports {name}"
        )
        if top == "edgecal":
            assert name.startswith(PURE_ALLOWED_EDGECAL), f"{path}: imports {name}"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path}: calls {node.func.id}()"


@pytest.mark.parametrize("path", py_files("edgecal_agent"), ids=str)
def test_agent_imports_only_stdlib_numpy_ncnn(path: Path) -> None:
    for name in imports(path):
        top = name.split(".")[0]
        assert top in AGENT_ALLOWED or top in sys.stdlib_module_names or top == "__future__", (
            f"{path}: imports {name}"
        )
