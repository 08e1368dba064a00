"""Adversarial work directories for the agent's file handling (issue 10, part 4).

Hypothesis builds a work directory with random symlinks (to folders and files outside it,
dangling, loops, into the work directory itself), hard links to outside files, FIFOs, planted temp
names (``*.tmp<pid>``), side files and folders in the way, random names (dots, NUL-free
unicode, long) and sizes, and old or new mtimes; then it runs the agent's jobs on requests
that name good and bad paths, the stale-job cleanup, and the serve loop with random stdin
lines.  Whatever happens, a sentinel tree OUTSIDE the work directory stays byte for byte the
same (names, contents, link targets, modes, mtimes), nothing raises out of the agent, and
every failed job names one of the agent's own error kinds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgecal_agent import PROTOCOL_VERSION, jobdirs, server
from edgecal_agent.messages import (
    JOBS_DIR,
    MAX_JOB_LINE,
    MAX_REQUEST_BYTES,
    REQUEST_FILE,
    InputDesc,
)
from edgecal_agent.shards import write_shard

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
PARAM = (DIGITS / "int8_kl.param").read_bytes()
BIN = (DIGITS / "int8_kl.bin").read_bytes()
INPUT = InputDesc("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))
OLD_S = 2 * 3600.0
#: The kinds the agent answers with (its JobError classes and the protocol mismatch).
AGENT_KINDS = {
    "BadRequest",
    "InputCorrupt",
    "ModelLoadError",
    "BlobNotFound",
    "InputError",
    "ExtractError",
    "NcnnUnavailable",
    "ArtifactMissing",
    "DeviceFileError",
    "ProtocolMismatch",
    "JobError",
}


def _shard_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.npz"
        rng = np.random.default_rng(0)
        write_shard(
            path, [(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),) for _ in range(2)], [INPUT]
        )
        return path.read_bytes()


SHARD = _shard_bytes()
SHA = {
    k: hashlib.sha256(v).hexdigest()
    for k, v in {"param": PARAM, "bin": BIN, "shard": SHARD}.items()
}
GOOD = {
    "param": f"files/{SHA['param']}/m.param",
    "bin": f"files/{SHA['bin']}/m.bin",
    "shard": f"files/{SHA['shard']}/s.npz",
}
CONTENT = {"param": PARAM, "bin": BIN, "shard": SHARD}

# -- names ---------------------------------------------------------------------------------------
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
names = st.one_of(
    st.text(_chars, min_size=1, max_size=12),
    st.sampled_from(
        [
            ".",
            "..",
            "...",
            ".hidden",
            "-",
            "~",
            " ",
            "request.json",
            "jobs",
            f"absmax.npz.tmp{os.getpid()}",
            ".trash-0",
            "j1",
            "a" * 255,
            "é" * 127,
            "é" * 128,
            "x" * 300,
        ]
    ),
)
job_ids = st.one_of(
    st.sampled_from(["j1", "j2", "j.3", "J-4"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
)
#: What a slot in the work directory holds.
KINDS = [
    "absent",
    "dir",
    "file",
    "good",
    "outside-dir",
    "outside-file",
    "outside-rel",
    "dangling",
    "loop",
    "to-workdir",
    "hardlink-outside",
    "fifo",
]
kinds = st.sampled_from(KINDS)


def _fits(name: str) -> bool:
    return name not in (".", "..") and len(os.fsencode(name)) <= 255


# -- the sentinel outside ------------------------------------------------------------------------
def _make_outside(base: Path) -> Path:
    out = base / "outside"
    (out / "sub" / "j1").mkdir(parents=True)
    (out / "emptydir").mkdir()
    (out / "keep.txt").write_bytes(b"precious\n")
    (out / "m.param").write_bytes(b"7767517\nnot a model the agent may touch\n")
    (out / "sub" / "deep.bin").write_bytes(bytes(range(256)))
    (out / "sub" / "j1" / REQUEST_FILE).write_text("{}")
    os.symlink("keep.txt", out / "link-in-outside")
    when = time.time() - OLD_S
    for dirpath, dirnames, filenames in os.walk(out, topdown=False):
        for n in dirnames + filenames:
            os.utime(Path(dirpath) / n, (when, when), follow_symlinks=False)
    os.utime(out, (when, when))
    return out


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    got: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in ["", *dirnames, *filenames]:
            p = Path(dirpath) / n if n else Path(dirpath)
            st_ = p.lstat()
            if stat.S_ISLNK(st_.st_mode):
                body: object = ("link", os.readlink(p))
            elif stat.S_ISREG(st_.st_mode):
                body = ("file", p.read_bytes())
            else:
                body = ("dir", sorted(os.listdir(p)))
            got[str(p.relative_to(root.parent))] = (body, st_.st_mode, st_.st_mtime_ns)
    return got


# -- the work directory --------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    rel: str
    kind: str
    size: int
    old: bool


def _real_dir_chain(wd: Path, rel: str) -> bool:
    """Every folder on the way to ``rel`` is a real folder the test made (the test itself
    never writes through a link)."""
    p = wd
    for part in Path(rel).parts[:-1]:
        p = p / part
        if p.is_symlink() or not p.is_dir():
            return False
    return True


def _plant(wd: Path, outside: Path, slot: Slot, content: bytes | None) -> None:
    if slot.kind == "absent" or not all(_fits(p) for p in Path(slot.rel).parts):
        return
    if not _real_dir_chain(wd, slot.rel):
        return
    path = wd / slot.rel
    if path.exists() or path.is_symlink():
        return
    kind = slot.kind
    if kind == "dir":
        path.mkdir()
    elif kind == "file" or (kind == "good" and content is None):
        path.write_bytes(b"garbage:" + os.urandom(slot.size))
    elif kind == "good":
        assert content is not None
        path.write_bytes(content)
    elif kind == "outside-dir":
        os.symlink(outside / "sub", path)
    elif kind == "outside-file":
        os.symlink(outside / "m.param", path)
    elif kind == "outside-rel":
        os.symlink(os.path.relpath(outside, path.parent), path)
    elif kind == "dangling":
        os.symlink(outside / "no-such-thing", path)
    elif kind == "loop":
        os.symlink(path.name, path)
    elif kind == "to-workdir":
        os.symlink(wd, path)
    elif kind == "hardlink-outside":
        os.link(outside / "keep.txt", path)
    elif kind == "fifo":  # opening it to read would block a careless reader forever
        os.mkfifo(path)
    if slot.old:
        when = time.time() - OLD_S
        os.utime(path, (when, when), follow_symlinks=False)


#: Folders the agent needs are mostly real, its inputs mostly good: most examples get past
#: the first check, and every other kind still turns up.
folder_kinds = st.one_of(st.just("dir"), st.just("dir"), st.just("dir"), kinds)
input_kinds = st.one_of(st.just("good"), st.just("good"), kinds)
planted_kinds = st.one_of(st.just("absent"), kinds)


def _fixed_slots(ids: list[str]) -> list[tuple[str, st.SearchStrategy[str]]]:
    rels = [("files", folder_kinds), ("jobs", folder_kinds)]
    for what in ("param", "bin", "shard"):
        rel = GOOD[what]
        folder = rel.rsplit("/", 1)[0]
        rels += [
            (folder, folder_kinds),
            (rel, input_kinds),
            (f"{folder}/.{rel.rsplit('/', 1)[1]}.sha256", planted_kinds),
        ]
    for job in ids:
        rels.append((f"{JOBS_DIR}/{job}", folder_kinds))
        for name in (
            "absmax.npz",
            f"absmax.npz.tmp{os.getpid()}",
            "response.json",
            "outputs_0.npz",
            "histograms.npz",
            "sub",
        ):
            rels.append((f"{JOBS_DIR}/{job}/{name}", planted_kinds))
    return rels


@st.composite
def workdirs(draw: st.DrawFn) -> tuple[list[str], list[Slot]]:
    ids = draw(st.lists(job_ids, min_size=1, max_size=3, unique=True))
    slots = [
        Slot(rel, draw(how), draw(st.integers(0, 4096)), draw(st.booleans()))
        for rel, how in _fixed_slots(ids)
    ]
    extra_parents = st.sampled_from(["", "files/", "jobs/", f"jobs/{ids[0]}/"])
    for _ in range(draw(st.integers(0, 6))):
        rel = draw(extra_parents) + draw(names)
        slots.append(Slot(rel, draw(kinds), draw(st.integers(0, 4096)), draw(st.booleans())))
    return ids, slots


# -- requests ------------------------------------------------------------------------------------
bad_paths = st.one_of(
    st.sampled_from(
        [
            "../outside/keep.txt",
            "/etc/passwd",
            "a/../../x",
            "files/../../outside",
            "",
            ".",
            "./",
            "a\x00b",
            "a\\..\\b",
            "jobs",
            "files",
            "\ud800x",
            "x" * 300 + "/m.param",
            "/".join(["d"] * 40),
        ]
    ),
    st.lists(names, min_size=1, max_size=4).map("/".join),
)


def paths(what: str) -> st.SearchStrategy[str]:
    return st.one_of(st.just(GOOD[what]), st.just(GOOD[what]), bad_paths)


@st.composite
def requests(draw: st.DrawFn, job_id: str) -> dict[str, object]:
    op = draw(st.sampled_from(["absmax", "histogram", "run", "eq_layer", "hello", "sleep"]))
    params: dict[str, object]
    if op == "hello":
        params = {}
    elif op == "sleep":
        params = {"seconds": 0.0}
    else:
        params = {
            "model": {"param": draw(paths("param")), "bin": draw(paths("bin"))},
            "inputs": [INPUT.to_dict()],
            "shards": draw(st.lists(paths("shard"), max_size=2)),
            "blobs": draw(st.sampled_from([[], ["in0"], ["nope"]])),
            "runtime": "calibration",
            "threads": 1,
        }
        if op == "histogram":
            params["absmax"] = {"in0": 1.0, "nope": 1.0}
        if op == "eq_layer":
            params.update(
                layer="convrelu_0",
                bottom="in0",
                top="in0",
                probe_param=draw(st.sampled_from(["p.param", "../p", "sub/p"])),
                probe_prefix=draw(st.sampled_from(["p.bin", "absmax.npz"])),
                candidates=draw(st.sampled_from(["c.npz", "response.json"])),
            )
            del params["blobs"]
    named = draw(st.sampled_from([job_id, job_id, "other"]))
    return {"protocol": PROTOCOL_VERSION, "op": op, "job_id": named, "params": params}


def _write_request(wd: Path, job_id: str, request: dict[str, object], pad: int) -> None:
    rel = f"{JOBS_DIR}/{job_id}/{REQUEST_FILE}"
    jobs = wd / JOBS_DIR
    if not jobs.exists() and not jobs.is_symlink():
        jobs.mkdir()
    if not _real_dir_chain(wd, rel):
        return
    job = wd / JOBS_DIR / job_id
    if not job.exists() and not job.is_symlink():
        job.mkdir()
    if job.is_symlink() or not job.is_dir():
        return
    path = job / REQUEST_FILE
    if path.is_symlink() or path.exists():
        return
    text = json.dumps(request)
    path.write_text(text[:-1] + " " * pad + "}")


# -- the property --------------------------------------------------------------------------------
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    layout=workdirs(),
    data=st.data(),
    pad=st.sampled_from([0, 0, 0, 100, MAX_REQUEST_BYTES + 1]),
    older_than=st.sampled_from([0.0, 3600.0]),
    lines=st.lists(
        st.one_of(
            st.text(_chars, max_size=30),
            job_ids,
            st.integers(MAX_JOB_LINE - 2, 3 * MAX_JOB_LINE).map(lambda n: "y" * n),
        ),
        max_size=4,
    ),
)
def test_nothing_outside_the_work_directory_changes(
    layout: tuple[list[str], list[Slot]],
    data: st.DataObject,
    pad: int,
    older_than: float,
    lines: list[str],
) -> None:
    ids, slots = layout
    base = Path(tempfile.mkdtemp(prefix="edgecal-fuzz-"))
    try:
        outside = _make_outside(base)
        wd = base / "wd"
        wd.mkdir()
        for slot in slots:
            what = next((k for k, rel in GOOD.items() if slot.rel == rel), None)
            _plant(wd, outside, slot, CONTENT[what] if what else None)
        for job_id in ids:
            _write_request(wd, job_id, data.draw(requests(job_id)), pad if job_id == ids[0] else 0)
        sentinel = _snapshot(outside)

        sink = io.StringIO()
        for job_id in ids:
            try:
                response = server.run_job(str(wd), job_id, sink)
            except OSError as e:  # only: response.json cannot be put in place
                assert "response.json" in f"{e.filename} {e.filename2}", e
                continue
            event(f"{response.op}: {response.error.kind if response.error else 'ok'}")
            if not response.ok:
                assert response.error is not None
                assert response.error.kind in AGENT_KINDS, response.error
        removed = jobdirs.remove_stale(str(wd), older_than_s=older_than)
        assert isinstance(removed, list)
        event(f"stale folders removed: {min(len(removed), 2)}")
        out, err = io.StringIO(), io.StringIO()
        stdin = io.StringIO("".join(f"{line}\n" for line in [*lines, *ids, "quit"]))
        assert server.serve(str(wd), stdin, out, err) == 0
        assert len(out.getvalue()) < 64 * 1024  # no line echoed whole, however long
        assert _snapshot(outside) == sentinel
    finally:
        _rmtree_no_follow(base)


def _rmtree_no_follow(base: Path) -> None:
    """Remove the example's folder; loops and links are removed, never followed."""
    for dirpath, dirnames, filenames in os.walk(base, topdown=False):
        for n in filenames + dirnames:
            p = Path(dirpath) / n
            if p.is_symlink() or not p.is_dir():
                p.unlink()
            else:
                p.rmdir()
    shutil.rmtree(base, ignore_errors=True)
