"""The dependency rules of the design, checked on the source: layered packages with a pure core
at the bottom and the command line on top, and a standalone agent."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: edgecal's packages from the bottom up: a module may import its own layer and the layers below,
#: never one above.  ``edgecal`` itself (``__init__``: the version) and ``edgecal.errors`` are
#: the ground every layer stands on; ``edgecal.__main__`` is ``python -m edgecal``, the top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("edgecal", "edgecal.errors"),
    ("edgecal.ncnnfmt", "edgecal.calib", "edgecal.int8", "edgecal.quality"),  # pure
    ("edgecal.files",),
    ("edgecal.inputs",),
    ("edgecal.runs",),
    ("edgecal.native",),  # drives compilers: not pure
    ("edgecal.device",),
    ("edgecal.boards",),
    ("edgecal.fleet",),
    ("edgecal.workflows",),
    ("edgecal.report",),
    ("edgecal.api",),
    ("edgecal.cli", "edgecal.testing"),  # the command line; the pytest plugin
    ("edgecal.__main__",),
)
PURE = ("edgecal/calib", "edgecal/ncnnfmt", "edgecal/int8", "edgecal/quality")
# The pure core may use the standard library except what touches files, processes, the network,
# the environment or logging configuration.
PURE_FORBIDDEN = {
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "subprocess",
    "socket",
    "logging",
    "glob",
    "io",
    "threading",
    "multiprocessing",
    "signal",
    "urllib",
    "http",
}
PURE_ALLOWED_EDGECAL = (
    "edgecal.calib",
    "edgecal.ncnnfmt",
    "edgecal.int8",
    "edgecal.quality",
    "edgecal.errors",
)
AGENT_ALLOWED = {"numpy", "ncnn", "edgecal_agent"}
FORBIDDEN_CALLS = {"open", "print", "input"}


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            if node.module:
                out.append(node.module)
    return out


def py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int | None:
    """The layer of module ``name``: the one of its longest listed prefix."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            inside = name == p or (p != "edgecal" and name.startswith(p + "."))
            if inside and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return None if best is None else best[1]


EDGECAL_FILES = [p for p in py_files("edgecal") if "board_snippets" not in p.parts]


def test_the_layers_are_known() -> None:
    """The layer table names packages that exist, and the layer test sees the whole tree."""
    for prefixes in LAYERS[1:-1]:
        for p in prefixes:
            assert (ROOT / p.replace(".", "/") / "__init__.py").is_file(), p
    assert len(EDGECAL_FILES) > 80


def upward(me: str, names: list[str]) -> list[str]:
    """The edgecal modules among ``names`` that lie in a layer above module ``me``'s."""
    mine = layer(me)
    assert mine is not None, f"{me}: in no layer"
    out = []
    for name in names:
        if name.split(".")[0] == "edgecal":
            theirs = layer(name)
            assert theirs is not None, f"{me} imports {name}, which is in no layer"
            if theirs > mine:
                out.append(name)
    return out


def type_checking_imports(path: Path) -> list[str]:
    """The modules imported under ``if TYPE_CHECKING:`` (names for type checkers only)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            out += [n.module for n in ast.walk(node) if isinstance(n, ast.ImportFrom) and n.module]
    return out


@pytest.mark.parametrize("path", EDGECAL_FILES, ids=str)
def test_every_module_is_placed_and_imports_no_layer_above(path: Path) -> None:
    me = module_name(path)
    mine = layer(me)
    assert mine is not None, f"{path}: not in a layer's package (see LAYERS)"
    names = imports(path)
    if me == "edgecal":  # the front door re-exports the API lazily; types for type checkers
        names = [n for n in names if n not in type_checking_imports(path)]
    assert upward(me, names) == [], f"{path} (layer {LAYERS[mine]}) imports from above"


def test_the_front_door_exports_what_it_names() -> None:
    """``edgecal.NAME`` for every exported name is the object its module defines, and the
    names for type checkers are the same ones: the API is importable lazily and typed."""
    import importlib

    import edgecal

    exports = edgecal._EXPORTS
    for name, module in exports.items():
        assert getattr(edgecal, name) is getattr(importlib.import_module(module), name), name
    init = ROOT / "edgecal" / "__init__.py"
    typed = {
        a.name: n.module
        for n in ast.walk(ast.parse(init.read_text()))
        if isinstance(n, ast.ImportFrom) and n.module in type_checking_imports(init)
        for a in n.names
    }
    assert typed == exports
    assert set(edgecal.__all__) == {"__version__", *exports}
    with pytest.raises(AttributeError):
        edgecal.no_such_name  # noqa: B018


def test_the_layer_rule_on_known_cases() -> None:
    """So that the test above cannot pass by looking at nothing."""
    assert layer("edgecal.device.ssh.link") == layer("edgecal.device")
    assert layer("edgecal.device.adb.link") == layer("edgecal.device")
    assert layer("edgecal.cli.main") == len(LAYERS) - 2
    assert layer("edgecal.calib.kl") == layer("edgecal.quality.jsondoc") == 1
    assert layer("edgecal.jsondoc") is None  # a flat module is in no layer
    assert upward(
        "edgecal.runs.rundir",
        [
            "os",
            "edgecal.cli.main",
            "edgecal.files.atomic",
            "edgecal",
            "edgecal.errors",
            "edgecal.device.base",
        ],
    ) == ["edgecal.cli.main", "edgecal.device.base"]
    assert upward("edgecal.quality.consistency", ["edgecal.quality.jsondoc", "edgecal.calib"]) == []


@pytest.mark.parametrize("path", [p for f in PURE for p in py_files(f)], ids=str)
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


#: numpy calls that may run on BLAS: in the agent, BLAS's thread pool spins against ncnn's
#: OpenMP threads and made every ``extract`` after it ~100x slower (validate's comparison, 2
#: cores); the agent sums with ``np.add.reduce`` (``edgecal_agent.stats.dot``).
BLAS_CALLS = {"dot", "vdot", "inner", "matmul", "einsum", "tensordot", "linalg"}


@pytest.mark.parametrize("path", py_files("edgecal_agent"), ids=str)
def test_agent_never_calls_blas(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)), (
            f"{path}:{node.lineno}: the @ operator runs on BLAS"
        )
        if isinstance(node, ast.Attribute) and node.attr in BLAS_CALLS:
            value = node.value
            assert not (isinstance(value, ast.Name) and value.id in ("np", "numpy")), (
                f"{path}:{node.lineno}: np.{node.attr} may run on BLAS"
            )


def test_local_runs_import_no_transport() -> None:
    """The command line and a run on this machine never import what only boards, phones and
    farms need (paramiko/fabric take ~90 ms of every command's start, asyncio ~20 ms):
    :mod:`edgecal.boards.open` and :mod:`edgecal.boards.labgrid` import them when a board is
    opened."""
    code = (
        "import sys\n"
        "import edgecal.cli.main, edgecal.api, edgecal.api.calibrate, edgecal.api.tune\n"
        "import edgecal.fleet.prepare, edgecal.device.local\n"
        "from edgecal.fleet.prepare import Devices\n"
        "Devices.of(None)\n"
        "print(' '.join(sorted(m for m in ('paramiko', 'fabric', 'invoke', 'asyncio', 'labgrid')"
        " if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.split() == []
