"""SshDevice and the board commands against a real sshd on 127.0.0.1 (tests/integration/sshd.py).

The "board" is this host: the agent runs on this venv's python (numpy + ncnn there) in a work
directory the tests can also look at locally.  Every CLI test runs ``edgecal.cli.main.main`` in
process with ``HOME`` pointing at an empty folder (no ``~/.ssh/config`` or ``known_hosts`` of
the machine running the tests), and checks: exit != 0, one ``edgecal: error:`` line naming the
board and the fix, no traceback, no table written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgecal.cli.main import main
from edgecal.device.ssh.device import SshDevice
from edgecal.device.ssh.link import SshTarget
from edgecal.errors import DeviceError, HostKeyError
from tests.integration.sshd import LoopbackSshd, keygen

pytestmark = pytest.mark.ssh

REF = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"
BOARD = "loop"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("EDGECAL_BOARDS", raising=False)
    return h


def write_boards(path: Path, sshd: LoopbackSshd, workdir: Path, **over: object) -> Path:
    board: dict[str, object] = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "identity_file": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts),
        "workdir": str(workdir),
        "python": sys.executable,
        "connect_timeout_s": 5,
    }
    board.update(over)
    lines = ["schema = 1", f"[boards.{BOARD}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in board.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def boards(loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path) -> Path:
    return write_boards(tmp_path / "boards.toml", loopback_sshd, tmp_path / "wd")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgecal: error:")]
    assert len(lines) == 1, err
    line = lines[0]
    print(line)  # shown with -s: the error texts at a glance
    assert BOARD in line and "(fix: " in line, line
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def calib_args(table: Path, n: int = 10, *extra: str) -> list[str]:
    lst = table.parent / "images.txt"
    lst.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(n)))
    return [
        "-q",
        "calibrate",
        str(REF / "model.param"),
        str(REF / "model.bin"),
        "--images",
        str(lst),
        "--pixel",
        "GRAY",
        "--mean",
        "0",
        "--norm",
        "0.00392157",
        "--shape",
        "32,32",
        "--out",
        str(table),
        *extra,
    ]


def target(sshd: LoopbackSshd, **over: object) -> SshTarget:
    kw: dict[str, object] = dict(
        name=BOARD,
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        identity_file=str(sshd.client_key),
        known_hosts=str(sshd.known_hosts),
        ssh_config=str(sshd.ssh_config),
        connect_timeout_s=5,
    )
    kw.update(over)
    return SshTarget(**kw)  # type: ignore[arg-type]


# -- happy paths ---------------------------------------------------------------------------------
def test_hello_through_the_cli(boards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["ncnn_ok"] is True and info["protocol"] == 1


def test_calibrate_matches_local_and_second_run_pushes_nothing(
    boards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local_table = tmp_path / "local.table"
    assert run_cli(capsys, *calib_args(local_table))[0] == 0
    runs = []
    for k in range(2):
        table = tmp_path / f"ssh{k}.table"
        code, out, err = run_cli(
            capsys, *calib_args(table), "--device", BOARD, "--boards", str(boards), "--json"
        )
        assert code == 0, err
        runs.append(json.loads(out))
        assert table.read_text() == local_table.read_text()  # same host CPU, same kernels
    first, second = runs
    assert first["bytes_pushed"] > 0 and first["bytes_fetched"] > 0
    assert second["bytes_pushed"] == 0  # agent, model and image shards are all there
    assert second["bytes_fetched"] > 0  # artifacts still come back
    assert set(second["transfer_timings_s"]) >= {"connect", "push", "fetch"}


def test_ncnn2table_dropin_takes_device_anywhere(
    boards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(8)))
    out = tmp_path / "out.table"
    code, _, err = run_cli(
        capsys,
        "-q",
        "ncnn2table",
        str(REF / "model.param"),
        "--device",
        BOARD,
        str(REF / "model.bin"),
        str(lst),
        str(out),
        "mean=[0]",
        "norm=[0.00392157]",
        "shape=[32,32]",
        "pixel=GRAY",
        "thread=1",
        "method=kl",
        f"--boards={boards}",
    )
    assert code == 0, err
    assert out.read_text().startswith("convrelu_0_param_0")


def test_device_user_at_host_uses_ssh_config(
    loopback_sshd: LoopbackSshd, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No boards file: ``--device user@host:port``; the key and known_hosts come from
    ~/.ssh/config (the board's python3 lacks numpy here, so `board check` says provision)."""
    (home / ".ssh").mkdir()
    (home / ".ssh" / "config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {loopback_sshd.client_key}\n"
        f"  UserKnownHostsFile {loopback_sshd.known_hosts}\n"
    )
    spec = f"{loopback_sshd.user}@127.0.0.1:{loopback_sshd.port}"
    _, out, err = run_cli(capsys, "board", "check", spec)
    assert "Traceback" not in err
    assert f"{loopback_sshd.user}@127.0.0.1:{loopback_sshd.port}" in out
    assert "python " in out  # it connected and probed


# -- host keys -----------------------------------------------------------------------------------
def test_unknown_host_key_is_refused(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards))
    assert_one_line_error(code, err, "unknown", "SHA256:", "--accept-new-host-key")


def test_accept_new_host_key_records_it(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kh = tmp_path / "kh"
    kh.write_text("")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = run_cli(
        capsys, "hello", "--device", BOARD, "--boards", str(boards), "--accept-new-host-key"
    )
    assert code == 0, err
    assert loopback_sshd.host_pub.split()[1] in kh.read_text()
    # under this host's name (hashed where ssh_config says HashKnownHosts yes): ssh finds it
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{loopback_sshd.port}", "-f", str(kh)],
        capture_output=True,
        text=True,
    )
    assert loopback_sshd.host_pub in found.stdout
    # recorded: the next run needs no flag
    assert run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards))[0] == 0


def test_changed_host_key_is_refused_even_with_accept_new(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    pub = " ".join(keygen(other, "impostor").split()[:2])
    kh = tmp_path / "kh"
    kh.write_text(f"[127.0.0.1]:{loopback_sshd.port} {pub}\n")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    for extra in ([], ["--accept-new-host-key"]):
        code, _, err = run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards), *extra)
        assert_one_line_error(code, err, "CHANGED", "ssh-keygen -R")
    assert kh.read_text() == f"[127.0.0.1]:{loopback_sshd.port} {pub}\n"  # untouched


def test_fabric_autoadd_is_not_used(loopback_sshd: LoopbackSshd, tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    kh.write_text("")
    with pytest.raises(HostKeyError):
        SshDevice(target(loopback_sshd, known_hosts=str(kh)), workdir=str(tmp_path / "wd"))
    assert kh.read_text() == ""


# -- connection faults ---------------------------------------------------------------------------
def test_auth_refused(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger, "not-authorized")
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", identity_file=str(stranger)
    )
    code, _, err = run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards))
    assert_one_line_error(code, err, "authentication refused", "ssh-copy-id")


def test_unreachable_port(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", port=port)
    t0 = time.monotonic()
    code, _, err = run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards))
    assert_one_line_error(code, err, "cannot reach", f":{port}")
    assert time.monotonic() - t0 < 10


# -- board set-up faults -------------------------------------------------------------------------
def test_python_missing(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", python="/nonexistent/python3"
    )
    table = tmp_path / "t.table"
    code, _, err = run_cli(
        capsys, *calib_args(table, 4), "--device", BOARD, "--boards", str(boards)
    )
    assert_one_line_error(code, err, "not found", "python")
    assert not table.exists()


def test_python_too_old(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "python3.6"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = "-V" ]; then echo "Python 3.6.9"; exit 0; fi\n'
        'echo "  File \\"<string>\\", line 1" >&2\n'
        'echo "SyntaxError: invalid syntax" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", python=str(fake), agent="python"
    )
    table = tmp_path / "t.table"
    code, _, err = run_cli(
        capsys, *calib_args(table, 4), "--device", BOARD, "--boards", str(boards)
    )
    assert_one_line_error(code, err, "3.6.9", "too old", ">= 3.9")
    assert not table.exists()


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A python without numpy and ncnn (a fresh venv without pip)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def test_numpy_missing_says_provision(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    bare_python: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", python=bare_python, agent="python"
    )
    table = tmp_path / "t.table"
    code, _, err = run_cli(
        capsys, *calib_args(table, 4), "--device", BOARD, "--boards", str(boards)
    )
    assert_one_line_error(code, err, "numpy is missing", f"edgecal board provision {BOARD}")
    assert not table.exists()
    code, out, err = run_cli(capsys, "board", "check", BOARD, "--boards", str(boards))
    assert code == 1 and "numpy    MISSING" in out and "ncnn     MISSING" in out
    assert f"edgecal board provision {BOARD}" in err


def test_auto_without_numpy_wants_a_built_native_agent(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    bare_python: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``agent = "auto"`` (the default) on a board whose Python lacks numpy and ncnn takes the
    native agent -- from the cache only (HOME here is empty): the run stops at once with one
    line saying why and how to build it, instead of a cold build of minutes."""
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", python=bare_python)
    table = tmp_path / "t.table"
    code, _, err = run_cli(
        capsys, *calib_args(table, 4), "--device", BOARD, "--boards", str(boards)
    )
    line = assert_one_line_error(
        code, err, "native agent for x86_64 is not built", "lacks numpy and ncnn"
    )
    assert "edgecal agent build --target x86_64" in line
    assert not table.exists()
    code, out, err = run_cli(capsys, "board", "check", BOARD, "--boards", str(boards))
    assert code == 1 and "agent    native (auto: the board's Python lacks numpy and ncnn)" in out
    assert "numpy    MISSING" in out  # its Python's facts are shown
    assert "edgecal agent build --target x86_64" in err


@pytest.mark.slow
def test_provision_installs_numpy_and_ncnn(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    bare_python: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The board (this host, a python without numpy/ncnn and without pip) gets the host's
    numpy + ncnn wheels (downloaded from PyPI by the host once, cached), unpacked under the
    work directory; then calibrate works."""
    wheels = Path(os.environ.get("EDGECAL_TEST_WHEELS", "/tmp/edgecal-test-wheels"))
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", python=bare_python, agent="python"
    )
    code, out, err = run_cli(
        capsys, "board", "provision", BOARD, "--boards", str(boards), "--wheels", str(wheels)
    )
    assert code == 0, err
    assert "OK" in out and "unpacking" in err
    assert (tmp_path / "wd" / "site" / "numpy").is_dir()
    table = tmp_path / "t.table"
    code, _, err = run_cli(
        capsys, *calib_args(table, 4), "--device", BOARD, "--boards", str(boards)
    )
    assert code == 0, err


def test_workdir_not_writable(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, blocker / "wd")
    table = tmp_path / "t.table"
    code, _, err = run_cli(
        capsys, *calib_args(table, 4), "--device", BOARD, "--boards", str(boards)
    )
    assert_one_line_error(code, err, "not writable", "workdir")
    assert not table.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a read-only tmpfs")
def test_workdir_read_only(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "edgecal-ro", str(ro)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        boards = write_boards(tmp_path / "b.toml", loopback_sshd, ro / "wd")
        code, _, err = run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards))
        assert_one_line_error(code, err, "not writable")
    finally:
        subprocess.run(["umount", str(ro)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_workdir_full(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "edgecal-full", str(small)],
            capture_output=True,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        boards = write_boards(tmp_path / "b.toml", loopback_sshd, small / "wd")
        table = tmp_path / "t.table"
        code, _, err = run_cli(
            capsys, *calib_args(table, 4), "--device", BOARD, "--boards", str(boards)
        )
        assert_one_line_error(code, err, "disk")
        assert not table.exists()
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_agent_crash_mid_job(
    boards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent dies (SIGKILL) when the first histogram job runs: a clear error, no table.

    The agent's histogram handler is replaced as its job module is imported (an import hook,
    not a watcher polling the job folder, which a fast histogram job could outrun)."""
    site = tmp_path / "wd" / "site"
    site.mkdir(parents=True)
    (site / "sitecustomize.py").write_text(
        "import importlib.util, os, signal, sys\n"
        "class _KillOnHistogram:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name != 'edgecal_agent.jobs':\n"
        "            return None\n"
        "        sys.meta_path.remove(self)\n"
        "        spec = importlib.util.find_spec(name)\n"
        "        run = spec.loader.exec_module\n"
        "        def exec_module(module):\n"
        "            run(module)\n"
        "            if module.__name__ == name:\n"
        "                module.HANDLERS['histogram'] = (\n"
        "                    lambda ctx: os.kill(os.getpid(), signal.SIGKILL))\n"
        "        spec.loader.exec_module = exec_module\n"
        "        return spec\n"
        "if 'serve' in sys.argv:\n"
        "    sys.meta_path.insert(0, _KillOnHistogram())\n"
    )
    table = tmp_path / "t.table"
    code, _, err = run_cli(
        capsys, *calib_args(table, 6), "--device", BOARD, "--boards", str(boards)
    )
    assert_one_line_error(code, err, "SIGKILL", "edgecal board check")
    assert not table.exists()


def test_dead_connection_names_board_and_fix(loopback_sshd: LoopbackSshd, tmp_path: Path) -> None:
    with SshDevice(
        target(loopback_sshd), workdir=str(tmp_path / "wd"), python=sys.executable
    ) as dev:
        dev.hello()
        threading.Timer(0.5, dev.link.conn.client.get_transport().close).start()
        with pytest.raises(DeviceError) as info:
            dev.run_job("sleep", {"seconds": 5}, timeout_s=20)
        assert BOARD in str(info.value) and info.value.hint


# -- names are data ------------------------------------------------------------------------------
HOSTILE = [
    "sp ace.param",
    "q'uo\"te.param",
    "semi;$(touch PWNED)`id`.param",
    "new\nline.param",
    "..dots..param",
    "-dash.param",
    "$HOME.param",
]


def test_hostile_file_names_are_data(loopback_sshd: LoopbackSshd, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    src = tmp_path / "src"
    src.mkdir()
    with SshDevice(target(loopback_sshd), workdir=str(wd), python=sys.executable) as dev:
        for name in HOSTILE:
            p = src / name
            p.write_bytes(name.encode() * 3)
            rel = dev.push(p)
            assert rel.endswith("/" + name)
            assert (wd / rel).read_bytes() == name.encode() * 3
            assert dev.push(p) == rel  # content-addressed: found again
        # a model with hostile names runs
        param, binf = src / "m;$(id) 'x'\n.param", src / 'm b"..".bin'
        shutil.copy(REF / "model.param", param)
        shutil.copy(REF / "model.bin", binf)
        from edgecal.device.capture import write_shards
        from edgecal.inputs.spec import InputSpec
        from tests.contract.refcases import capture_absmax, load_case

        case = load_case("digits")
        spec = InputSpec(
            blob="in0", kind="image", pixel="GRAY", mean=(0.0,), norm=(0.00392157,), shape=(32, 32)
        )
        shards = write_shards(case.samples[:4], [spec], tmp_path / "shards")
        got = capture_absmax(dev, param, binf, [spec], shards, case.blobs[:1])
        assert list(got) == list(case.blobs[:1])
    for where in (Path.cwd(), tmp_path, wd, Path.home(), Path("/")):
        assert not (where / "PWNED").exists()
    # nothing outside files/, jobs/ and the agent
    assert {p.name for p in wd.iterdir()} <= {"files", "jobs"} | {
        p.name for p in wd.glob("edgecal-agent-*.pyz")
    }


def test_paths_escaping_the_workdir_are_refused(
    loopback_sshd: LoopbackSshd, tmp_path: Path
) -> None:
    wd = tmp_path / "wd"
    outside = tmp_path / "outside"
    outside.mkdir()
    with SshDevice(target(loopback_sshd), workdir=str(wd), python=sys.executable) as dev:
        for bad in ("../x", "/etc/passwd", "a/../../x", ""):
            with pytest.raises((DeviceError, ValueError)):
                dev.remote(bad)
        # a symlink planted where a pushed file's folder goes is refused, nothing written
        src = tmp_path / "m.param"
        src.write_bytes(b"payload")
        import hashlib

        digest = hashlib.sha256(b"payload").hexdigest()
        (wd / "files").mkdir(exist_ok=True)
        os.symlink(outside, wd / "files" / digest)
        with pytest.raises(DeviceError, match=r"symlink|not a directory"):
            dev.push(src)
        assert list(outside.iterdir()) == []
        # a symlink as the jobs folder: refused too
        os.symlink(outside, wd / "jobs")
        with pytest.raises(DeviceError):
            dev.hello()
        assert list(outside.iterdir()) == []
    with pytest.raises(DeviceError, match="not a clean path"):
        SshDevice(target(loopback_sshd), workdir="../escape", python=sys.executable)


def test_workdir_symlink_in_home_is_refused(loopback_sshd: LoopbackSshd, tmp_path: Path) -> None:
    # relative workdirs are under the SFTP home; a symlink there would lead out of it
    home = Path(os.path.expanduser("~" + loopback_sshd.user))
    link = home / f".edgecal-test-link-{os.getpid()}"
    os.symlink(tmp_path, link)
    try:
        with pytest.raises(DeviceError, match="symlink"):
            SshDevice(target(loopback_sshd), workdir=f"{link.name}/wd", python=sys.executable)
    finally:
        link.unlink()


def test_agent_timeout_kills_remote_agent(loopback_sshd: LoopbackSshd, tmp_path: Path) -> None:
    with SshDevice(
        target(loopback_sshd), workdir=str(tmp_path / "wd"), python=sys.executable
    ) as dev:
        dev.hello()
        pid = dev.agent_pid
        assert pid
        with pytest.raises(DeviceError, match=r"0\.5 s"):
            dev.run_job("sleep", {"seconds": 30}, timeout_s=0.5)
        time.sleep(0.3)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert dev.hello()["protocol"] == 1


def test_remote_sha256_runs_the_board_snippet(loopback_sshd: LoopbackSshd, tmp_path: Path) -> None:
    """The hashing program (edgecal/device/board_snippets/sha256_files.py) over SSH."""
    import hashlib

    wd = tmp_path / "wd"
    src = tmp_path / "m.param"
    src.write_bytes(b"7767517\n" * 100)
    with SshDevice(target(loopback_sshd), workdir=str(wd), python=sys.executable) as dev:
        rel = dev.push(src)
        (wd / "files" / "link.param").symlink_to(wd / rel)
        assert dev.remote_sha256(rel, "files/link.param", "files/absent") == {
            rel: hashlib.sha256(src.read_bytes()).hexdigest(),
            "files/link.param": None,
            "files/absent": None,
        }
