"""Adversarial output paths (issue 10: "a fuzz suite covers the CLI's output-path checks").

Random sets of inputs and outputs drawn from one folder of aliases: the same file by another
spelling, through a symlink (to the file or to its folder), a hard link, a folder, a missing
folder, a dangling symlink, standard output.  Checked against an independent oracle (resolved
path and inode); when the check lets a set through, it is written and every input must be
unchanged (bytes and mtime), every output complete, no temporary file left.  Then the same
with the real command line (``edgecal quantize`` / ``edgecal table``)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecal.cli.main import main
from edgecal.errors import UsageError
from edgecal.files.outputs import Input, Output, check_outputs, write_outputs

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"

INPUTS = ["in/a.param", "in/b.bin", "in/list.txt", "in/img.png"]
# every way to name a file here: inputs by other spellings and links, new files, bad places
POOL = [
    *INPUTS,
    "./in/a.param",
    "in/../in/b.bin",
    "out/../in/list.txt",
    "link_a",
    "hard_b",
    "in_link/list.txt",
    "in_link/img.png",
    "out/x.table",
    "out/./x.table",
    "out/y.npz",
    "out_link/y.npz",
    "new.txt",
    "missing/x.table",
    "out/sub/z.bin",
    "out",
    "in_link",
    "dangling",
    "file/under",
    "-",
]


def _layout(root: Path) -> None:
    (root / "in").mkdir()
    (root / "out").mkdir()
    for i, name in enumerate(INPUTS):
        (root / name).write_bytes(f"input {i}\n".encode() * (i + 1))
    (root / "link_a").symlink_to(root / "in" / "a.param")
    (root / "hard_b").hardlink_to(root / "in" / "b.bin")
    (root / "in_link").symlink_to(root / "in")
    (root / "out_link").symlink_to("out")
    (root / "dangling").symlink_to(root / "out" / "made-through-link")
    (root / "file").write_text("a file, not a folder\n")


def _path(root: Path, rel: str) -> str:
    return "-" if rel == "-" else os.path.join(root, rel)


def _ident(path: str) -> tuple[str, tuple[int, int] | None]:
    try:
        s = os.stat(path)
        ino: tuple[int, int] | None = (s.st_dev, s.st_ino)
    except OSError:
        ino = None
    return os.path.realpath(path), ino


def _same(a: str, b: str) -> bool:
    (ra, ia), (rb, ib) = _ident(a), _ident(b)
    return ra == rb or (ia is not None and ia == ib)


def _writable_place(path: str, text: bool) -> bool:
    if path == "-":
        return text
    real = os.path.realpath(path)
    if os.path.isdir(real):
        return False
    return os.path.isdir(os.path.dirname(real))


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for name in INPUTS:
        p = root / name
        out[name] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith((".edgecal-tmp", ".edgecal-old"))]


@contextlib.contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-out-") as tmp:
        root = Path(tmp)
        _layout(root)
        yield root


@given(
    inputs=st.lists(st.sampled_from(INPUTS), min_size=1, max_size=4, unique=True),
    outputs=st.lists(
        st.tuples(st.sampled_from(POOL), st.booleans(), st.binary(max_size=64)),
        min_size=1,
        max_size=3,
    ),
)
def test_the_check_refuses_exactly_the_unsafe_sets_and_writes_the_rest(
    inputs: list[str], outputs: list[tuple[str, bool, bytes]]
) -> None:
    with _folder() as root:
        ins = [Input(f"input {i}", _path(root, r)) for i, r in enumerate(inputs)]
        outs = [
            Output(f"output {i}", _path(root, r), text=text)
            for i, (r, text, _) in enumerate(outputs)
        ]
        files = [o.path for o in outs if o.path != "-"]
        unsafe = (
            any(not _writable_place(o.path, o.text) for o in outs)
            or sum(o.path == "-" for o in outs) > 1
            or any(_same(o, i.path) for o in files for i in ins)
            or any(_same(a, b) for k, a in enumerate(files) for b in files[k + 1 :])
        )
        before = _snapshot(root)
        try:
            check_outputs(outs, ins)
        except UsageError:
            assert unsafe, (inputs, outputs)
            assert _snapshot(root) == before
            return
        assert not unsafe, (inputs, outputs)
        data = [(o.path, d) for o, (_, _, d) in zip(outs, outputs, strict=True)]
        captured = io.BytesIO()
        wrapper = io.TextIOWrapper(captured, write_through=True)  # kept: closing it closes both
        with contextlib.redirect_stdout(wrapper):
            write_outputs(data)
        for path, d in data:
            if path == "-":
                assert captured.getvalue() == d
            else:
                assert Path(path).read_bytes() == d  # complete, never half
        after = _snapshot(root)
        for name in inputs:  # what was declared an input is untouched
            assert after[name] == before[name]
        assert _leftovers(root) == []
        assert (root / "dangling").is_symlink() and (root / "link_a").is_symlink()


# ----------------------------------------------------------------------------- the CLI

CLI_POOL = [
    "model.param",
    "model.bin",
    "t.table",
    "h.npz",
    "link.param",
    "hard.bin",
    "./model.bin",
    "new.param",
    "new.bin",
    "sub",
    "missing/x.bin",
    "new.param",
]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("made")
    lines = (SAMPLE / "calib.txt").read_text().split()[:4]
    (d / "l.txt").write_text("".join(f"{SAMPLE / x}\n" for x in lines))
    assert (
        main(
            [
                "-q",
                "calibrate",
                str(SAMPLE / "model.param"),
                str(SAMPLE / "model.bin"),
                "--images",
                str(d / "l.txt"),
                "--pixel",
                "RGB",
                "--mean",
                "127.5,127.5,127.5",
                "--norm",
                "0.00784314,0.00784314,0.00784314",
                "--shape",
                "48,48",
                "--out",
                str(d / "t.table"),
                "--histograms-out",
                str(d / "h.npz"),
            ]
        )
        == 0
    )
    return d


def _cli_folder(made: Path, root: Path) -> None:
    shutil.copy(SAMPLE / "model.param", root / "model.param")
    shutil.copy(SAMPLE / "model.bin", root / "model.bin")
    shutil.copy(made / "t.table", root / "t.table")
    shutil.copy(made / "h.npz", root / "h.npz")
    (root / "link.param").symlink_to(root / "model.param")
    (root / "hard.bin").hardlink_to(root / "model.bin")
    (root / "sub").mkdir()


@given(
    cmd=st.sampled_from(["quantize", "table"]),
    a=st.sampled_from(CLI_POOL),
    b=st.sampled_from(CLI_POOL),
)
def test_the_command_line_never_changes_an_input(made: Path, cmd: str, a: str, b: str) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as tmp:
        root = Path(tmp)
        _cli_folder(made, root)
        inputs = ["model.param", "model.bin", "t.table" if cmd == "quantize" else "h.npz"]
        before = {n: ((root / n).read_bytes(), (root / n).stat().st_mtime_ns) for n in inputs}
        if cmd == "quantize":
            argv = [
                "quantize",
                str(root / "model.param"),
                str(root / "model.bin"),
                str(root / a),
                str(root / b),
                "--table",
                str(root / "t.table"),
            ]
            outs = [root / a, root / b]
        else:
            argv = [
                "table",
                "--histograms",
                str(root / "h.npz"),
                "--param",
                str(root / "model.param"),
                "--bin",
                str(root / "model.bin"),
                "--out",
                str(root / a),
            ]
            outs = [root / a]
        stderr, stdout = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            rc = main(argv)
        err = stderr.getvalue()
        assert "Traceback" not in err
        after = {n: ((root / n).read_bytes(), (root / n).stat().st_mtime_ns) for n in inputs}
        assert after == before, (argv, err)
        if rc == 0:
            for o in outs:
                assert stat.S_ISREG(o.stat().st_mode) and o.stat().st_size > 0
            if cmd == "quantize":
                assert outs[0].read_text().startswith("7767517")
        else:
            assert rc == 2 and "edgecal: error:" in err, err
        assert _leftovers(root) == []
