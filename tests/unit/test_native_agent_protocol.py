"""The native agent's command line, work-directory confinement, stale-job cleanup and request
checks: what tests/unit/test_agent_confinement.py and test_agent_jobdirs.py ask of the Python
agent, asked of the native binary (run as a process, as a host runs it)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgecal_agent import PROTOCOL_VERSION, __version__
from edgecal_agent.messages import JOBS_DIR, MAX_JOB_LINE, MAX_REQUEST_BYTES, REQUEST_FILE

HOUR = 3600.0
DIGITS = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"


def _run(
    binary: Path, *args: str, home: Path, stdin: str = "quit\n"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [str(binary), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def _run_job(agent: str, binary: Path, root: Path, wd: Path, returncode: object) -> None:
    """Job ``j1`` of work directory ``wd`` run by the ``python`` or the ``native`` agent (the
    native one must exit with ``returncode``)."""
    if agent == "python":
        import io

        from edgecal_agent import server

        server.run_job(str(wd), "j1", io.StringIO())
    else:
        res = _run(binary, "run-job", "--root", str(root), "--workdir", str(wd), "j1", home=root)
        assert res.returncode == returncode, res


def _request(job: Path, op: str, params: dict[str, object], **over: object) -> None:
    job.mkdir(parents=True, exist_ok=True)
    doc = {"protocol": PROTOCOL_VERSION, "op": op, "job_id": job.name, "params": params, **over}
    (job / REQUEST_FILE).write_text(json.dumps(doc))


def _response(job: Path) -> dict:
    return json.loads((job / "response.json").read_text())


def _old(path: Path, age_s: float) -> None:
    when = time.time() - age_s
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for n in dirnames + filenames:
            os.utime(Path(dirpath) / n, (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("precious")
    (out / "sub" / "deep.txt").write_text("also precious")
    return out


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (
            os.readlink(p) if p.is_symlink() else p.read_text() if p.is_file() else "dir"
        )
        for p in root.rglob("*")
    }


def test_version_and_hello(native_agent_binary: Path, tmp_path: Path) -> None:
    res = _run(native_agent_binary, "--version", home=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == __version__
    res = _run(native_agent_binary, "hello", home=tmp_path)
    info = json.loads(res.stdout)
    assert info["agent_kind"] == "native" and info["protocol"] == PROTOCOL_VERSION
    assert info["python"] is None and info["numpy"] is None and info["ncnn_ok"] is True
    assert info["cores"] >= 1 and isinstance(info["cpu_features"], list)


@pytest.mark.parametrize("where", ["/", "home", "outside", "link-out"])
def test_a_workdir_outside_the_home_or_root_is_refused(
    native_agent_binary: Path, tmp_path: Path, where: str
) -> None:
    home = tmp_path / "home"
    (home / "wd").mkdir(parents=True)
    outside = _outside(tmp_path)
    os.symlink(outside, home / "link-out")
    workdir = {"/": "/", "home": str(home), "outside": str(outside)}.get(
        where, str(home / "link-out")
    )
    res = _run(native_agent_binary, "serve", "--workdir", workdir, home=home)
    assert res.returncode == 2 and "WorkdirRefused" in res.stderr, res
    assert "EDGECAL-READY" not in res.stdout


def test_it_serves_inside_the_home_or_its_root(native_agent_binary: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".cache" / "edgecal").mkdir(parents=True)
    res = _run(native_agent_binary, "serve", "--workdir", str(home / ".cache/edgecal"), home=home)
    assert res.returncode == 0
    assert res.stdout == f"EDGECAL-READY {PROTOCOL_VERSION} {__version__}\n"
    elsewhere = tmp_path / "data" / "wd"
    elsewhere.mkdir(parents=True)
    args = ("serve", "--root", str(tmp_path / "data"), "--workdir", str(elsewhere))
    assert _run(native_agent_binary, *args, home=home).returncode == 0
    res = _run(native_agent_binary, "serve", "--root", "/", "--workdir", str(elsewhere), home=home)
    assert res.returncode == 2 and "WorkdirRefused" in res.stderr


def test_stale_job_folders_go_at_start_and_nothing_outside_is_touched(
    native_agent_binary: Path, tmp_path: Path
) -> None:
    wd = tmp_path / "wd"
    jobs = wd / JOBS_DIR
    outside = _outside(tmp_path)
    for name in ("old", "recent", "running", "answered", "linked"):
        _request(jobs / name, "hello", {})
    os.symlink(outside, jobs / "linked" / "dirlink")
    os.symlink(outside / "keep.txt", jobs / "linked" / "filelink")
    (jobs / "old" / "a" / "b").mkdir(parents=True)
    (jobs / ".trash-0123" / "x").mkdir(parents=True)
    os.symlink(outside, jobs / "jobs-link")
    for name in ("old", "running", "answered", "linked", ".trash-0123"):
        _old(jobs / name, 2 * HOUR)
    _old(outside, 2 * HOUR)
    (jobs / "answered" / "response.json").write_text("{}")  # written now
    _old(jobs / "recent", 60)
    before = _tree(outside)
    with open(jobs / "running" / REQUEST_FILE, "rb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_SH)  # a running job's lock
        res = _run(native_agent_binary, "serve", "--root", str(tmp_path), "--workdir", str(wd),
                   home=tmp_path)  # fmt: skip
    assert res.returncode == 0, res
    assert "removed 2 job folder(s) left by earlier runs" in res.stderr
    assert sorted(os.listdir(jobs)) == ["answered", "jobs-link", "recent", "running"]
    assert _tree(outside) == before


def test_bad_requests_and_job_lines(native_agent_binary: Path, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    jobs = wd / JOBS_DIR
    _request(jobs / "mismatch", "hello", {}, protocol=PROTOCOL_VERSION + 1)
    _request(jobs / "unknown-op", "fly", {})
    _request(jobs / "other-id", "hello", {}, job_id="someone-else")
    _request(jobs / "bad-path", "absmax", {"model": {"param": "../x", "bin": "b"}, "inputs": [
        {"blob": "in0"}], "shards": [], "blobs": []})  # fmt: skip
    _request(jobs / "ok", "sleep", {"seconds": 0})
    (jobs / "huge").mkdir()
    head = json.dumps({"protocol": PROTOCOL_VERSION, "op": "sleep", "job_id": "huge"})
    (jobs / "huge" / REQUEST_FILE).write_text(head[:-1] + " " * MAX_REQUEST_BYTES + "}")
    outside = _outside(tmp_path)
    os.symlink(outside, jobs / "via-link")
    lines = ["mismatch", "unknown-op", "other-id", "bad-path", "huge", "via-link", "../escape"]
    stdin = "\n".join([*lines, "x" * (50 * MAX_JOB_LINE), "ok", "quit", "never"]) + "\n"
    res = _run(native_agent_binary, "serve", "--root", str(tmp_path), "--workdir", str(wd),
               home=tmp_path, stdin=stdin)  # fmt: skip
    assert res.returncode == 0, res
    out = res.stdout.splitlines()
    assert out[1:] == [f"EDGECAL-DONE {n}" for n in [*lines, "ok"]]
    assert "a job id line longer than 1024 characters was refused" in res.stderr
    assert "job id '../escape' must match" in res.stderr
    kinds = {n: _response(jobs / n)["error"] for n in lines[:5]}
    assert kinds["mismatch"]["kind"] == "ProtocolMismatch"
    assert f"protocol {PROTOCOL_VERSION + 1}" in kinds["mismatch"]["message"]
    assert kinds["unknown-op"]["kind"] == "BadRequest" and "'fly'" in kinds["unknown-op"]["message"]
    assert "someone-else" in kinds["other-id"]["message"]
    assert "params.model.param: '../x' must be" in kinds["bad-path"]["message"]
    assert str(MAX_REQUEST_BYTES) in kinds["huge"]["message"]
    assert not (outside / "response.json").exists()
    ok = _response(jobs / "ok")
    assert ok["ok"] is True and ok["result"] == {"slept_s": 0.0}
    assert ok["agent_version"] == __version__ and ok["timing_s"]["total"] >= 0
    assert ok["ru_maxrss_kb"] > 0 and ok["error"] is None
    assert not [p for p in (jobs / "ok").iterdir() if p.name.startswith(".")]  # no temp left


def test_pushed_inputs_are_checked_and_a_symlinked_folder_is_never_unlinked_in(
    native_agent_binary: Path, tmp_path: Path
) -> None:
    wd = tmp_path / "wd"
    outside = _outside(tmp_path)
    digest = hashlib.sha256(b"the pushed model").hexdigest()
    (outside / "m.param").write_text("not the pushed model")
    (wd / "files").mkdir(parents=True)
    os.symlink(outside, wd / "files" / digest)
    real = hashlib.sha256(b"other").hexdigest()
    (wd / "files" / real).mkdir()
    (wd / "files" / real / "m.param").write_text("damaged")
    good = hashlib.sha256(DIGITS.joinpath("model.param").read_bytes()).hexdigest()
    (wd / "files" / good).mkdir()
    (wd / "files" / good / "m.param").write_bytes(DIGITS.joinpath("model.param").read_bytes())

    def params(rel: str) -> dict[str, object]:
        return {"model": {"param": rel, "bin": rel}, "inputs": [{"blob": "in0"}], "shards": [],
                "blobs": []}  # fmt: skip

    _request(wd / JOBS_DIR / "link", "absmax", params(f"files/{digest}/m.param"))
    _request(wd / JOBS_DIR / "damaged", "absmax", params(f"files/{real}/m.param"))
    _request(wd / JOBS_DIR / "good", "absmax", params(f"files/{good}/m.param"))
    before = _tree(outside)
    res = _run(native_agent_binary, "serve", "--root", str(tmp_path), "--workdir", str(wd),
               home=tmp_path, stdin="link\ndamaged\ngood\nquit\n")  # fmt: skip
    assert res.returncode == 0, res
    assert _tree(outside) == before
    link = _response(wd / JOBS_DIR / "link")["error"]
    assert link["kind"] == "ModelLoadError" and "symlink" in link["message"]
    damaged = _response(wd / JOBS_DIR / "damaged")["error"]
    assert damaged["kind"] == "InputCorrupt" and f"files/{real}/m.param" in damaged["message"]
    assert not (wd / "files" / real / "m.param").exists()
    # the good copy was hashed and its state remembered beside it, as the Python agent does
    marker = (wd / "files" / good / ".m.param.sha256").read_text().split()
    assert marker[-1] == good
    assert _response(wd / JOBS_DIR / "good")["error"]["kind"] == "ModelLoadError"  # bin = param


def test_a_deep_request_and_incomplete_eq_inputs_are_bad_requests(
    native_agent_binary: Path, tmp_path: Path
) -> None:
    wd = tmp_path / "wd"
    deep = wd / JOBS_DIR / "deep"
    deep.mkdir(parents=True)
    (deep / REQUEST_FILE).write_text(
        '{"op": "hello", "job_id": "deep", "params": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    eq = wd / JOBS_DIR / "eq"
    eq.mkdir()
    (eq / "probe.param").write_text("7767517\n0 0\n")
    (eq / "probe.bin").write_bytes(b"")
    np.savez(
        eq / "cand.npz",
        candidates=np.ones((2, 3), np.float32),
        weight_scales=np.ones(1, np.float32),
        bottom_scale=np.zeros(0, np.float32),
    )
    params = {
        "model": {"param": "m.param", "bin": "m.bin"},
        "inputs": [],
        "shards": [],
        "bottom": "a",
        "top": "b",
        "probe_param": "probe.param",
        "probe_prefix": "probe.bin",
        "candidates": "cand.npz",
    }
    _request(eq, "eq_layer", params)
    _request(wd / JOBS_DIR / "eq-missing", "eq_layer", {**params, "probe_param": "gone.param"})
    res = _run(native_agent_binary, "serve", "--root", str(tmp_path), "--workdir", str(wd),
               home=tmp_path, stdin="deep\neq\neq-missing\nquit\n")  # fmt: skip
    assert res.returncode == 0, res
    assert _response(deep)["error"]["kind"] == "BadRequest"
    error = _response(eq)["error"]
    assert error["kind"] == "BadRequest" and "index" in error["message"], error
    error = _response(wd / JOBS_DIR / "eq-missing")["error"]
    assert (
        error["kind"] == "BadRequest" and "job file gone.param cannot be used" in error["message"]
    )


_M = {"param": "r.param", "bin": "r.bin"}
_V = {"model": _M, "feed": ["a"]}  # a variant
_PATCH: dict[str, object] = {
    "data": "p.data",
    "segments": [[0, 0, 1], [1, 3, 2]],
    "sha256": "0" * 64,
}
_PP: dict[str, object] = {"patch": _PATCH, "feed": ["a"]}
_P: dict[str, object] = {"param": "r.param", **_PP}  # a variant with its .bin made on the device


def _vs(*variants: object) -> tuple[str, dict[str, object]]:
    """A run with these variants."""
    return "run", {"variants": {"models": list(variants)}}


def _patch(**over: object) -> dict[str, object]:
    """_P with fields of its patch replaced (None: left out)."""
    patch = {k: v for k, v in {**_PATCH, **over}.items() if v is not None}
    return {**_P, "patch": patch}


BAD_PARAMS: dict[str, tuple[str, dict[str, object]]] = {
    "runtime": ("absmax", {"runtime": "turbo"}),
    "threads": ("absmax", {"threads": 0}),
    "bool-threads": ("absmax", {"threads": True}),
    "absmax": ("histogram", {"absmax": {"in0": "big"}}),
    "no-absmax": ("histogram", {}),
    "no-inputs": ("absmax", {"inputs": []}),
    "pixel": ("absmax", {"inputs": [{"blob": "in0", "pixel": "YUV"}]}),
    "kind": ("absmax", {"inputs": [{"blob": "in0", "kind": "video"}]}),
    "shape": ("absmax", {"inputs": [{"blob": "in0", "shape": [1.5]}]}),
    "mean": ("absmax", {"inputs": [{"blob": "in0", "mean": ["x"]}]}),
    "shards": ("absmax", {"shards": ["/etc/passwd"]}),
    "blobs": ("absmax", {"blobs": "in0"}),
    "model": ("absmax", {"model": {"param": "a\\\\b", "bin": "b"}}),
    "sleep": ("sleep", {"seconds": 4000}),
    "eq-max": ("eq_layer", {"bottom": "a", "top": "b", "max_samples": 51}),
    "eq-top": ("eq_layer", {"bottom": "a"}),
    "missing-model": ("absmax", {"model": {"param": "nope.param", "bin": "nope.bin"}}),
    "compare-scale": ("run", {"compare": {"model": _M, "pairs": [["a", 0]]}}),
    "compare-pair": ("run", {"compare": {"model": _M, "pairs": [["a"]]}}),
    "compare-blob": ("run", {"compare": {"model": _M, "pairs": [[1, None]]}}),
    "compare-none": ("run", {"compare": {"model": _M, "pairs": []}}),
    "compare-model": ("run", {"compare": {"pairs": [["a", None]]}}),
    "compare-type": ("run", {"compare": [["a", None]]}),
    "variants-type": ("run", {"variants": [_V]}),
    "variants-models": ("run", {"variants": {"models": _V}}),
    "variants-none": ("run", {"variants": {"models": []}}),
    "variants-many": ("run", {"variants": {"models": [_V] * 33}}),
    "variants-item": ("run", {"variants": {"models": [["a"]]}}),
    "variants-no-feed": ("run", {"variants": {"models": [{"model": _M}]}}),
    "variants-empty-feed": ("run", {"variants": {"models": [{"model": _M, "feed": []}]}}),
    "variants-feed-twice": ("run", {"variants": {"models": [{"model": _M, "feed": ["a", "a"]}]}}),
    "variants-feed-type": ("run", {"variants": {"models": [{"model": _M, "feed": ["a", 1]}]}}),
    "variants-feed-str": ("run", {"variants": {"models": [{"model": _M, "feed": "a"}]}}),
    "variants-model": ("run", {"variants": {"models": [{"feed": ["a"]}]}}),
    "variants-path": ("run", {"variants": {"models": [{**_V, "model": {**_M, "bin": "/b"}}]}}),
    "variants-timed-negative": ("run", {"variants": {"models": [_V], "timed_samples": -1}}),
    "variants-timed-many": ("run", {"variants": {"models": [_V], "timed_samples": 65}}),
    "variants-timed-float": ("run", {"variants": {"models": [_V], "timed_samples": 1.0}}),
    "variants-timed-bool": ("run", {"variants": {"models": [_V], "timed_samples": True}}),
    "variants-timed-huge": ("run", {"variants": {"models": [_V], "timed_samples": 2**63}}),
    "variants-and-timed": ("run", {"timed": True, "variants": {"models": [_V]}}),
    "variants-and-compare": (
        "run",
        {"compare": {"model": _M, "pairs": [["a", None]]}, "variants": {"models": [_V]}},
    ),
    # timed and variants are checked before the shards are read, the variants after them
    "variants-first": ("run", {"timed": True, "variants": {}, "shards": ["/etc/passwd"]}),
    "variants-last": ("run", {"variants": {"models": []}, "shards": ["/etc/passwd"]}),
    "variants-absmax": ("absmax", {"variants": {"models": []}}),
    "variants-no-blobs": ("run", {"blobs": [], "variants": {"models": [_V]}}),
    # a variant whose .bin is made on the device (param and patch), checked in this order
    "patch-and-model": _vs({**_P, "model": _M}),
    "patch-and-null-model": _vs({**_P, "model": None}),
    "patch-and-model-no-param": _vs({**_PP, "model": _M}),
    "patch-no-param": _vs(_PP),
    "patch-param-path": _vs({**_P, "param": "../p"}),
    "patch-param-type": _vs({**_P, "param": 1}),
    "patch-type": _vs({**_P, "patch": ["x"]}),
    "patch-null": _vs({**_V, "param": "p", "patch": None}),
    "patch-null-no-model": _vs({**_P, "patch": None}),
    "patch-feed-first": _vs({**_P, "patch": 1, "feed": []}),
    "patch-segments-type": _vs(_patch(segments={"a": 1})),
    "patch-segments-missing": _vs(_patch(segments=None)),
    "patch-segments-many": _vs(_patch(segments=[[0, 0, 0]] * 65537)),
    "patch-segments-max": _vs(_patch(segments=[[0, 0, 0]] * 65536)),
    "patch-segment-two": _vs(_patch(segments=[[0, 0]])),
    "patch-segment-four": _vs(_patch(segments=[[0, 0, 1, 1]])),
    "patch-segment-type": _vs(_patch(segments=[[0, 0, 1], "x"])),
    "patch-segment-source": _vs(_patch(segments=[[2, 0, 1]])),
    "patch-segment-source-neg": _vs(_patch(segments=[[-1, 0, 1]])),
    "patch-segment-negative": _vs(_patch(segments=[[0, -1, 1]])),
    "patch-segment-neg-length": _vs(_patch(segments=[[1, 0, -1]])),
    "patch-segment-bool": _vs(_patch(segments=[[0, 0, True]])),
    "patch-segment-bool-src": _vs(_patch(segments=[[False, 0, 1]])),
    "patch-segment-float": _vs(_patch(segments=[[0, 1.0, 1]])),
    "patch-segment-null": _vs(_patch(segments=[[0, 0, None]])),
    "patch-segment-str": _vs(_patch(segments=[[0, "0", 1]])),
    "patch-segment-huge": _vs(_patch(segments=[[0, 2**64 - 1, 1]])),
    "patch-segment-huge-src": _vs(_patch(segments=[[2**64 - 1, 0, 1]])),
    "patch-sha-upper": _vs(_patch(sha256="A" * 64)),
    "patch-sha-short": _vs(_patch(sha256="0" * 63)),
    "patch-sha-long": _vs(_patch(sha256="0" * 65)),
    "patch-sha-quote": _vs(_patch(sha256='it\'s "x"\n')),
    "patch-sha-type": _vs(_patch(sha256=64)),
    "patch-no-sha": _vs(_patch(sha256=None)),
    "patch-data-path": _vs(_patch(data="/x")),
    "patch-data-dots": _vs(_patch(data="a/../../x")),
    "patch-data-type": _vs(_patch(data=["x"])),
    "patch-no-data": _vs(_patch(data=None)),
    # segments before sha256 before data
    "patch-segments-then-sha": _vs(_patch(segments=[[3, 0, 0]], sha256="x")),
    "patch-sha-then-data": _vs(_patch(sha256="x", data="/x")),
    "patch-second-variant": _vs(_V, _patch(segments=[[0, 0]])),
}
#: BAD_PARAMS cases that pass the request checks (the job then fails on its missing model)
PARSED = {"patch-null", "patch-segments-max", "patch-segment-huge"}


@pytest.mark.parametrize("what", list(BAD_PARAMS))
def test_a_bad_request_gets_the_python_agents_answer(
    native_agent_binary: Path, tmp_path: Path, what: str
) -> None:

    op, extra = BAD_PARAMS[what]
    base: dict[str, object] = {
        "model": {"param": "m.param", "bin": "m.bin"},
        "inputs": [{"blob": "in0"}],
        "shards": [],
        "blobs": ["in0"],
    }
    answers = []
    for agent in ("python", "native"):
        wd = tmp_path / agent
        _request(wd / JOBS_DIR / "j1", op, {**base, **extra})
        _run_job(agent, native_agent_binary, tmp_path, wd, 1)
        doc = _response(wd / JOBS_DIR / "j1")
        answers.append((doc["op"], doc["ok"], doc["error"]["kind"], doc["error"]["message"]))
    assert answers[0] == answers[1]
    if what.startswith("patch-"):  # the check meant, not the missing model behind it
        parsed = answers[0][2] == "ModelLoadError"
        assert parsed == (what in PARSED), answers[0]
        assert parsed or "params.variants.models[" in answers[0][3], answers[0]


_SMALL = "7767517\n2 2\nInput in 0 1 6\nReLU relu 1 1 6 x\n"  # neither in0 nor out0
_NO_IN0 = "7767517\n2 2\nInput in 0 1 6\nReLU relu 1 1 6 out0\n"
_D = {"param": "d.param", "bin": "d.bin"}  # the digits model
_BIN = DIGITS.joinpath("model.bin").read_bytes()
_N = len(_BIN)
_DATA = b"junk" + _BIN[100:5000]  # a pushed piece: part of the digits model's .bin
_DATA_REL = f"files/{hashlib.sha256(_DATA).hexdigest()}/d.patch"  # as the host pushes it
_BAD_REL = f"files/{'0' * 64}/d.patch"  # a pushed piece that is not what its name says
_MIXED = [[0, 0, 100], [1, 4, 4900], [0, 5000, _N - 5000]]  # the whole .bin, from both


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _patched(
    segments: list[list[int]], sha256: str = _sha(_BIN), data: str = "p.data",
    param: str = "d.param",
) -> dict[str, object]:  # fmt: skip
    """A variant of the digits model whose .bin is made on the device."""
    return {"param": param, "patch": {"data": data, "segments": segments, "sha256": sha256},
            "feed": ["6"]}  # fmt: skip


def _workdir(wd: Path) -> None:
    """The models and pushed pieces BAD_VARIANTS name, in work directory wd."""
    wd.mkdir()
    for name, text in (("s", _SMALL), ("n", _NO_IN0)):
        (wd / f"{name}.param").write_text(text)
        (wd / f"{name}.bin").write_bytes(b"")
    for suffix in ("param", "bin"):
        (wd / f"d.{suffix}").write_bytes(DIGITS.joinpath(f"model.{suffix}").read_bytes())
    for rel in ("p.data", _DATA_REL, _BAD_REL):
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_bytes(_DATA)


def _made_bins(job: Path) -> list[str]:
    return sorted(p.name for p in job.iterdir() if p.name.startswith("variant_"))


#: run jobs with variants that fail once the models are loaded (and one that does not)
BAD_VARIANTS: dict[str, list[dict[str, object]]] = {
    "missing": [{"model": {"param": "gone.param", "bin": "gone.bin"}, "feed": ["6"]}],
    "second-missing": [{"model": _D, "feed": ["6"]}, {"model": {**_D, "bin": "x"}, "feed": ["6"]}],
    "feed-not-in-base": [{"model": _D, "feed": ["6", "nope"]}],
    "feed-not-in-variant": [{"model": {"param": "s.param", "bin": "s.bin"}, "feed": ["5"]}],
    "blob-not-in-variant": [{"model": {"param": "s.param", "bin": "s.bin"}, "feed": ["6"]}],
    "input-not-in-variant": [{"model": {"param": "n.param", "bin": "n.bin"}, "feed": ["6"]}],
    "ok": [{"model": _D, "feed": ["6"]}, {"model": _D, "feed": ["in0", "5"]}],
    # a variant's .bin made on the device from the digits model's and the pushed piece
    "patch-past-base": [_patched([[0, 0, 100], [0, 100, _N - 99]])],
    "patch-past-data": [_patched([[0, 0, 100], [1, 4, len(_DATA) - 3]])],
    "patch-past-empty": [_patched([[1, len(_DATA), 1]])],
    "patch-sha": [_patched([[0, 0, _N]], sha256=_sha(_BIN[:-1]))],
    "patch-missing-data": [_patched([[0, 0, _N]], data="gone.data")],
    "patch-corrupt-data": [_patched([[0, 0, _N]], data=_BAD_REL)],
    "patch-missing-param": [_patched([[0, 0, _N]], param="gone.param")],
    "patch-param-not-in-bin": [_patched([[0, 0, _N]], param="s.param")],
    "patch-truncated": [_patched([[0, 0, _N - 4]], sha256=_sha(_BIN[:-4]))],
    "patch-truncated-slash": [_patched(_MIXED[:2], sha256=_sha(_BIN[:5000]), data=_DATA_REL)],
    "patch-second": [{"model": _D, "feed": ["6"]}, _patched([[0, 0, _N + 1]])],
    "patch-second-sha": [_patched([[0, 0, _N]]), _patched(_MIXED, sha256=_sha(b""))],
    "patch-in-the-way": [_patched([[0, 0, _N]])],  # jobs/j1/variant_0.bin is there already
    # offsets and lengths far past any file: the same "past the end" before any read
    "patch-far-offset": [_patched([[0, 1 << 62, 1]])],
    "patch-huge-offset": [_patched([[0, 1 << 63, 1]])],
    "patch-huge-length": [_patched([[1, 0, 1 << 63]])],
    "patch-empty-past-end": [_patched([[0, 0, _N], [0, _N + 7, 0]])],
    "ok-patch": [
        _patched([[0, 0, _N]]),
        _patched(_MIXED, data=_DATA_REL),
        _patched([[0, _N, 0], [1, 0, 0], [0, 0, 10], [0, 10, _N - 10], [1, len(_DATA), 0]]),
        {"model": _D, "feed": ["in0", "5"]},
    ],
}
#: what BAD_VARIANTS' failures may be (the Python agent's answers to the same jobs)
VARIANT_ERRORS = ("ModelLoadError", "BlobNotFound", "BadRequest", "InputCorrupt",
                  "DeviceFileError")  # fmt: skip


@pytest.mark.parametrize("what", list(BAD_VARIANTS))
def test_a_run_with_bad_variants_gets_the_python_agents_answer(
    native_agent_binary: Path, tmp_path: Path, what: str
) -> None:

    params = {
        "model": _D,
        "inputs": [{"blob": "in0"}],
        "shards": [],
        "blobs": ["out0"],
        "variants": {"models": BAD_VARIANTS[what], "timed_samples": 3},
    }
    ok = what.startswith("ok")
    answers = []
    for agent in ("python", "native"):
        wd = tmp_path / agent
        _workdir(wd)
        job = wd / JOBS_DIR / "j1"
        _request(job, "run", params)
        if what == "patch-in-the-way":
            (job / "variant_0.bin").write_bytes(b"not the agent's")
        _run_job(agent, native_agent_binary, tmp_path, wd, (0 if ok else 1))
        doc = _response(job)
        error = doc["error"] and (doc["error"]["kind"], doc["error"]["message"])
        answers.append((doc["ok"], error, doc["result"], doc["artifacts"], sorted(doc["timing_s"])))
        # a made .bin is gone whatever happened (one in its way is left alone)
        assert _made_bins(job) == (["variant_0.bin"] if what == "patch-in-the-way" else [])
    assert answers[0] == answers[1]
    if ok:
        latency: list[list[float]] = [[] for _ in BAD_VARIANTS[what]]
        assert answers[0][2] == {"n_samples": 0, "n_shards": 0, "latency_s": latency}
    else:
        assert answers[0][1][0] in VARIANT_ERRORS, answers[0]
    if what == "patch-in-the-way":
        assert (tmp_path / "native" / JOBS_DIR / "j1" / "variant_0.bin").read_bytes() == (
            b"not the agent's"
        )


def test_patched_variants_answer_as_the_pushed_model_on_both_agents(
    native_agent_binary: Path, tmp_path: Path
) -> None:
    """Variants whose .bin the device made from pieces compute what the pushed model computes,
    on both agents, sample for sample."""

    from edgecal_agent.messages import InputDesc
    from edgecal_agent.npzio import load_npz
    from edgecal_agent.shards import write_shard

    rng = np.random.default_rng(7)
    inp = InputDesc("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))
    runs = [
        {"model": _D, "feed": ["6"]},
        _patched([[0, 0, _N]]),
        _patched(_MIXED, data=_DATA_REL),
        {"model": _D, "feed": ["in0", "5"]},
        {**_patched(_MIXED), "feed": ["in0", "5"]},
    ]
    params: dict[str, object] = {
        "model": _D,
        "inputs": [inp.to_dict()],
        "shards": ["s0.npz", "s1.npz"],
        "blobs": ["out0"],
        "variants": {"models": runs, "timed_samples": 2},
    }
    outputs = []
    for agent in ("python", "native"):
        wd = tmp_path / agent
        _workdir(wd)
        for k, n in enumerate((3, 2)):
            samples = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),) for _ in range(n)]
            write_shard(wd / f"s{k}.npz", samples, [inp])
        rng = np.random.default_rng(7)  # the same samples for the other agent
        job = wd / JOBS_DIR / "j1"
        _request(job, "run", params)
        _run_job(agent, native_agent_binary, tmp_path, wd, 0)
        doc = _response(job)
        assert doc["ok"], doc["error"]
        assert doc["result"]["n_samples"] == 5 and len(doc["result"]["latency_s"]) == len(runs)
        assert _made_bins(job) == []
        arrays = {}
        for k in range(2):
            with load_npz(job / f"outputs_{k}.npz") as z:
                arrays.update({f"{k}/{key}": np.array(z[key]) for key in z.files})
        for key, value in arrays.items():  # each variant as its pushed model
            if "/v" in key:
                j = int(key.split("/v")[1].split("_")[0])
                twin = key.replace(f"/v{j}_", f"/v{0 if j < 3 else 3}_")
                np.testing.assert_array_equal(value, arrays[twin], err_msg=key)
        outputs.append(arrays)
    assert outputs[0].keys() == outputs[1].keys()
    for key in outputs[0]:
        if outputs[0][key].dtype.kind == "f":  # one ncnn build and another
            np.testing.assert_allclose(outputs[1][key], outputs[0][key], rtol=0, atol=1e-5,
                                       err_msg=key)  # fmt: skip
        else:
            np.testing.assert_array_equal(outputs[1][key], outputs[0][key], err_msg=key)
