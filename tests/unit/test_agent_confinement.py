"""The agent stays in its work directory: whatever a request names and whatever is planted in
the work directory, nothing outside it is read, written, renamed or deleted (issue 10, part 4).

Each test here failed on 9c5bc55: a ``files/<sha>`` symlink got another folder's file
unlinked, a planted ``*.tmp<pid>`` symlink got its target overwritten, a ``jobs`` symlink got
another folder's subfolders deleted, a deep recent change did not keep a job folder, a huge
request or job-id line was taken whole, job ids of two hosts could collide, and the agent
started in ``/``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgecal.boards.config import load_boards
from edgecal.device import jobs as host_jobs
from edgecal.errors import ConfigError
from edgecal_agent import PROTOCOL_VERSION, jobdirs, server
from edgecal_agent.messages import (
    JOBS_DIR,
    MAX_JOB_LINE,
    MAX_REQUEST_BYTES,
    REQUEST_FILE,
    InputDesc,
)
from edgecal_agent.npzio import NpzWriter
from edgecal_agent.shards import write_shard

TRASH_PREFIX: str = getattr(jobdirs, "TRASH_PREFIX", ".trash-")

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"
HOUR = 3600.0
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
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _request(job: Path, op: str, params: dict[str, object]) -> None:
    job.mkdir(parents=True, exist_ok=True)
    (job / REQUEST_FILE).write_text(
        json.dumps({"protocol": PROTOCOL_VERSION, "op": op, "job_id": job.name, "params": params})
    )


def _absmax_params(param: str, bin_: str, shards: list[str]) -> dict[str, object]:
    inp = InputDesc("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))
    return {
        "model": {"param": param, "bin": bin_},
        "inputs": [inp.to_dict()],
        "shards": shards,
        "blobs": [],
        "runtime": "calibration",
        "threads": 1,
    }


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    (out / "sub").mkdir()
    (out / "sub" / "deep.txt").write_text("also precious")
    return out


def _tree(root: Path) -> dict[str, tuple[bytes | str, int]]:
    got: dict[str, tuple[bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            body: bytes | str = (
                os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
            )
            got[str(p.relative_to(root))] = (body, st.st_mtime_ns)
    return got


# -- files/<sha> ---------------------------------------------------------------------------------
def test_a_files_symlink_to_another_folder_never_gets_its_file_unlinked(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    wd = tmp_path / "wd"
    (wd / "files").mkdir(parents=True)
    bad = outside / "m.param"
    bad.write_text("not the pushed model")
    digest = _sha(b"the pushed model")  # the folder promises other bytes than are there
    os.symlink(outside, wd / "files" / digest)
    before = _tree(outside)
    _request(
        wd / JOBS_DIR / "j1",
        "absmax",
        _absmax_params(f"files/{digest}/m.param", f"files/{digest}/m.param", []),
    )
    response = server.run_job(str(wd), "j1", io.StringIO())
    assert _tree(outside) == before  # base: m.param was unlinked as "InputCorrupt"
    assert response.error is not None and response.error.kind in AGENT_KINDS
    assert "symlink" in response.error.message


def test_a_damaged_pushed_input_in_a_real_folder_is_still_removed(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    digest = _sha(b"the pushed model")
    (wd / "files" / digest).mkdir(parents=True)
    (wd / "files" / digest / "m.param").write_text("damaged")
    _request(
        wd / JOBS_DIR / "j1",
        "absmax",
        _absmax_params(f"files/{digest}/m.param", f"files/{digest}/m.param", []),
    )
    response = server.run_job(str(wd), "j1", io.StringIO())
    assert response.error is not None and response.error.kind == "InputCorrupt"
    assert not (wd / "files" / digest / "m.param").exists()


def test_a_model_symlink_to_an_outside_file_is_not_read(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    wd = tmp_path / "wd"
    (wd / "m").mkdir(parents=True)
    os.symlink(DIGITS / "int8_kl.param", wd / "m" / "x.param")
    os.symlink(outside / "keep.txt", wd / "m" / "x.bin")
    _request(wd / JOBS_DIR / "j1", "absmax", _absmax_params("m/x.param", "m/x.bin", []))
    response = server.run_job(str(wd), "j1", io.StringIO())
    assert response.error is not None and response.error.kind == "ModelLoadError"
    assert "symlink" in response.error.message


# -- temp files ----------------------------------------------------------------------------------
def test_a_planted_tmp_symlink_is_never_written_through(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    job = tmp_path / "wd" / JOBS_DIR / "j1"
    job.mkdir(parents=True)
    target = job / "absmax.npz"
    os.symlink(outside / "keep.txt", f"{target}.tmp{os.getpid()}")  # what 9c5bc55 wrote to
    before = _tree(outside)
    with NpzWriter(target) as w:
        w.add("x", np.arange(3))
    assert _tree(outside) == before  # base: keep.txt became the npz
    assert target.is_file() and not target.is_symlink()


def test_a_shard_written_beside_planted_names_lands_in_its_folder(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    folder = tmp_path / "shards"
    folder.mkdir()
    for suffix in (f".tmp{os.getpid()}", ".tmp", f".tmp{os.getpid()}.npz"):
        os.symlink(outside / "keep.txt", folder / f"s.npz{suffix}")
    before = _tree(outside)
    inp = InputDesc("in0", "image", "GRAY", shape=(4, 4))
    write_shard(folder / "s.npz", [(np.zeros((4, 4, 3), np.uint8),)], [inp])
    assert _tree(outside) == before


# -- stale job folders ---------------------------------------------------------------------------
def _old(path: Path, age_s: float) -> None:
    when = time.time() - age_s
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for n in dirnames + filenames:
            os.utime(Path(dirpath) / n, (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


def test_a_jobs_symlink_never_gets_another_folders_subfolders_deleted(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    _old(outside, 2 * HOUR)
    wd = tmp_path / "wd"
    wd.mkdir()
    os.symlink(outside, wd / JOBS_DIR)
    before = _tree(outside)
    assert jobdirs.remove_stale(str(wd)) == []
    assert _tree(outside) == before  # base: outside/sub was deleted


def test_a_job_folder_with_a_recent_change_at_depth_is_kept(tmp_path: Path) -> None:
    job = tmp_path / JOBS_DIR / "deep"
    (job / "a" / "b").mkdir(parents=True)
    (job / "a" / "b" / "new.npz").write_bytes(b"x")
    _old(job, 2 * HOUR)
    os.utime(job / "a" / "b" / "new.npz")  # written just now, two levels down
    assert jobdirs.remove_stale(str(tmp_path)) == []
    assert (job / "a" / "b" / "new.npz").is_file()  # base: the folder was deleted
    _old(job, 2 * HOUR)
    assert jobdirs.remove_stale(str(tmp_path)) == ["deep"]
    assert os.listdir(tmp_path / JOBS_DIR) == []


def test_stale_removal_unlinks_links_inside_a_job_never_their_targets(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    job = tmp_path / "wd" / JOBS_DIR / "old"
    job.mkdir(parents=True)
    os.symlink(outside, job / "dirlink")
    os.symlink(outside / "keep.txt", job / "filelink")
    os.symlink(tmp_path / "nowhere", job / "dangling")
    _old(outside, 2 * HOUR)
    _old(job, 2 * HOUR)
    before = _tree(outside)
    assert jobdirs.remove_stale(str(tmp_path / "wd")) == ["old"]
    assert _tree(outside) == before and not job.exists()


def test_a_trash_folder_left_by_an_interrupted_cleanup_goes_too(tmp_path: Path) -> None:
    trash = tmp_path / JOBS_DIR / f"{TRASH_PREFIX}0123"
    (trash / "x").mkdir(parents=True)
    _old(trash, 2 * HOUR)
    assert jobdirs.remove_stale(str(tmp_path)) == []  # not a job: not counted
    assert not trash.exists()


# -- sizes ---------------------------------------------------------------------------------------
def test_an_oversized_request_is_a_bad_request(tmp_path: Path) -> None:
    job = tmp_path / JOBS_DIR / "j1"
    job.mkdir(parents=True)
    head = json.dumps(
        {"protocol": PROTOCOL_VERSION, "op": "sleep", "job_id": "j1", "params": {"seconds": 0.0}}
    )
    (job / REQUEST_FILE).write_text(head[:-1] + " " * MAX_REQUEST_BYTES + "}")
    response = server.run_job(str(tmp_path), "j1", io.StringIO())
    assert response.error is not None and response.error.kind == "BadRequest"
    assert str(MAX_REQUEST_BYTES) in response.error.message


def test_an_oversized_job_id_line_is_refused_and_serving_goes_on(tmp_path: Path) -> None:
    _request(tmp_path / JOBS_DIR / "j1", "sleep", {"seconds": 0.0})
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO("x" * (50 * MAX_JOB_LINE) + "\nj1\nquit\n")
    assert server.serve(str(tmp_path), stdin, out, err) == 0
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["EDGECAL-DONE j1"]  # base: a DONE line echoing the 51 KB id
    assert "BadRequest" in err.getvalue() and len(err.getvalue()) < 4 * MAX_JOB_LINE


# -- job ids -------------------------------------------------------------------------------------
def test_job_ids_of_two_hosts_with_the_same_pid_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_jobs.time, "strftime", lambda fmt: "20261206T130000")
    ids = []
    for _ in range(2):  # two fresh host processes: same pid, same second, counter at 1
        monkeypatch.setattr(host_jobs, "_job_counter", itertools.count(1))
        ids.append(host_jobs.new_job_id("absmax"))
    assert ids[0] != ids[1]


# -- the work directory itself -------------------------------------------------------------------
def _agent(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edgecal_agent", *args],
        input="quit\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("where", ["/", "home", "outside", "link-out"])
def test_the_agent_refuses_a_workdir_outside_the_home_or_root(tmp_path: Path, where: str) -> None:
    home = tmp_path / "home"
    (home / "wd").mkdir(parents=True)
    outside = _outside(tmp_path)
    os.symlink(outside, home / "link-out")
    workdir = {
        "/": "/",
        "home": str(home),
        "outside": str(outside),
        "link-out": str(home / "link-out"),
    }[where]
    res = _agent("serve", "--workdir", workdir, home=home)
    assert res.returncode == 2 and "WorkdirRefused" in res.stderr, res
    assert "EDGECAL-READY" not in res.stdout


def test_the_agent_serves_inside_the_home_or_its_root(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".cache" / "edgecal").mkdir(parents=True)
    res = _agent("serve", "--workdir", str(home / ".cache" / "edgecal"), home=home)
    assert res.returncode == 0 and "EDGECAL-READY" in res.stdout, res
    elsewhere = tmp_path / "data" / "wd"
    elsewhere.mkdir(parents=True)
    res = _agent("serve", "--root", str(tmp_path / "data"), "--workdir", str(elsewhere), home=home)
    assert res.returncode == 0 and "EDGECAL-READY" in res.stdout, res
    res = _agent("serve", "--root", "/", "--workdir", str(elsewhere), home=home)
    assert res.returncode == 2 and "WorkdirRefused" in res.stderr


@pytest.mark.parametrize(
    "workdir", ["/", ".", "./", "~", "~/", "~/.", "/.", "a/../..", "//", "~other/x"]
)
def test_the_boards_file_refuses_a_workdir_that_is_not_a_folder_of_its_own(
    tmp_path: Path, workdir: str
) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text(f'schema = 1\n[boards.b]\nhost = "h"\nworkdir = "{workdir}"\n')
    with pytest.raises(ConfigError) as info:
        load_boards(boards)
    assert "workdir" in str(info.value)


def test_the_boards_file_takes_a_workdir_root(tmp_path: Path) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text(
        'schema = 1\n[boards.b]\nhost = "h"\nworkdir = "/data/local/tmp/ec"\n'
        'workdir_root = "/data/local/tmp"\n'
        '[boards.c]\nhost = "h"\nworkdir = ".cache/edgecal"\n'
    )
    got = load_boards(boards)
    assert got["b"].workdir_root == "/data/local/tmp" and got["c"].workdir_root is None
    boards.write_text(
        'schema = 1\n[boards.b]\nhost = "h"\nworkdir = "/etc/ec"\n'
        'workdir_root = "/data/local/tmp"\n'
    )
    with pytest.raises(ConfigError, match="outside 'workdir_root'"):
        load_boards(boards)


# -- artifacts -----------------------------------------------------------------------------------
def test_a_vanished_artifact_is_the_agents_own_error(tmp_path: Path) -> None:
    from edgecal_agent.jobs import JobContext
    from edgecal_agent.messages import Request, SleepParams
    from edgecal_agent.workdir import Workdir

    job = tmp_path / JOBS_DIR / "j1"
    job.mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere.npz", job / "link.npz")
    (tmp_path / "elsewhere.npz").write_bytes(b"x")
    request = Request(op="sleep", job_id="j1", params=SleepParams(0.0))
    with Workdir(str(tmp_path)) as wd:
        fd = wd.open_dir_parts([JOBS_DIR, "j1"])
        try:
            ctx = JobContext(wd, fd, "j1", request, lambda done, total: None)
            for name in ("gone.npz", "link.npz"):
                with pytest.raises(Exception) as info:
                    ctx.artifact(name)
                assert type(info.value).__name__ == "ArtifactMissing"
                assert name in str(info.value) and "j1" in str(info.value)
        finally:
            os.close(fd)


def test_a_write_that_races_the_age_check_keeps_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host writes into an old job folder right after the cleanup looked at its age (here:
    the write happens as the first age check returns): the folder is checked again after it was
    renamed aside, and keeps its name and the new file."""
    job = tmp_path / JOBS_DIR / "old"
    job.mkdir(parents=True)
    (job / REQUEST_FILE).write_text("{}")
    _old(job, 2 * HOUR)
    name = "_newest_mtime" if hasattr(jobdirs, "_newest_mtime") else "_last_change"
    real = getattr(jobdirs, name)
    calls: list[int] = []

    def check_then_host_writes(*args: object) -> float:
        age = real(*args)
        if not calls:
            (job / "response.json").write_text("{}")  # the concurrent writer
        calls.append(1)
        return float(age)

    monkeypatch.setattr(jobdirs, name, check_then_host_writes)
    assert jobdirs.remove_stale(str(tmp_path)) == []
    assert (job / "response.json").is_file() and (job / REQUEST_FILE).is_file()
    assert os.listdir(tmp_path / JOBS_DIR) == ["old"]


def test_the_host_refuses_to_send_a_request_the_agent_would_refuse() -> None:
    from edgecal.errors import ProtocolError

    shards = [f"files/{'0' * 64}/{'s' * 200}-{i}.npz" for i in range(MAX_REQUEST_BYTES // 200)]
    params = _absmax_params("m.param", "m.bin", shards)
    with pytest.raises(ProtocolError, match=str(MAX_REQUEST_BYTES)):
        host_jobs.build_request("board", "absmax", params)


def test_a_local_device_in_the_home_folder_itself_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgecal.device.local import LocalDevice
    from edgecal.errors import DeviceError

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(DeviceError) as info, LocalDevice(workdir=home, agent="module") as dev:
        dev.hello()
    assert "WorkdirRefused" in str(info.value) and "home folder itself" in str(info.value)
    assert "workdir" in (info.value.hint or "")
