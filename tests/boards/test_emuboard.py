"""Smoke checks of the emulated boards (toolchains/emuboard.sh) over real SSH: the aarch64
ones (emu1..) and the 32-bit armv7 one without python3 (emuv7, profile emulated-armv7).

The boards come from the TOML file named by ``EDGECAL_BOARDS`` (``make boards-up`` prints
it). Without it, or with a board that cannot be reached, these tests skip on a developer's
machine and FAIL under CI (``CI=true``), so that CI never passes with no board behind it.

The link-cut and power-off tests drive ``toolchains/emuboard.sh`` and so need root; the cuts
also need boards in netns mode (``BOARDS_NET=netns make boards-up``), else they skip.
Everything runs under qemu (~300x slower than native): keep each command tiny.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import paramiko
import pytest

from edgecal.boards.config import load_profile

try:
    import tomllib
except ModuleNotFoundError:  # python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = pytest.mark.board

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "toolchains" / "emuboard.sh"
ARMV7_PROBE = ROOT / "tests" / "data" / "emuboard" / "armv7_probe.cpp"
ARMV7_CXX = "arm-linux-gnueabihf-g++"
IN_CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT = 10.0
CMD_TIMEOUT = 60.0
PROBE = (
    'python3 -c "import ncnn, numpy, platform; '
    'print(platform.machine(), ncnn.__version__, ncnn.cpu_support_arm_asimdhp())"'
)
CPU_OF_PROFILE = {
    "emulated-pi3": "cortex-a53",
    "emulated-pi4": "cortex-a72",
    "emulated-pi5": "cortex-a76",
    "emulated-armv7": "cortex-a7",
}
MODEL_OF_PROFILE = {
    "emulated-pi3": "Raspberry Pi 3",
    "emulated-pi4": "Raspberry Pi 4",
    "emulated-pi5": "Raspberry Pi 5",
    "emulated-armv7": "Raspberry Pi 2",
}
ARMV7_PROFILES = {"emulated-armv7"}  # boards of toolchains/emuboard.sh's armhf rootfs
# /proc/cpuinfo "Features" of a Raspberry Pi 2 (Cortex-A7) on a 32-bit OS
ARMV7_FEATURES = "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm"
# what a network-level failure to reach a board looks like (not a wrong key or host key)
UNREACHABLE = (OSError, paramiko.ssh_exception.NoValidConnectionsError, EOFError)


def unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {why}", pytrace=False)
    pytest.skip(why)


@dataclass(frozen=True)
class Board:
    name: str
    host: str
    port: int
    user: str
    identity_file: str
    known_hosts: str
    profile: str
    workdir: str

    @property
    def armv7(self) -> bool:
        return self.profile in ARMV7_PROFILES

    @property
    def machine(self) -> str:
        return "armv7l" if self.armv7 else "aarch64"

    @property
    def netns(self) -> bool:
        return self.host.startswith("10.200.")

    @property
    def state_dir(self) -> Path:
        return Path(self.identity_file).parent.parent


def load_boards() -> tuple[dict[str, Board], str | None]:
    path = os.environ.get("EDGECAL_BOARDS")
    if not path:
        return {}, "EDGECAL_BOARDS is not set (run `make boards-up` as root and export it)"
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return {}, f"cannot read the boards file {path}: {e}"
    if data.get("schema") != 1:
        return {}, f"{path}: schema {data.get('schema')!r}, expected 1"
    keys = {f.name for f in dataclasses.fields(Board)}  # other keys (agent, ...) are not ours
    boards = {
        name: Board(name=name, **{k: v for k, v in fields.items() if k in keys})
        for name, fields in data.get("boards", {}).items()
        if fields.get("transport", "ssh") == "ssh"  # the emulated phones: tests/phones
    }
    if not boards:
        return {}, f"{path} lists no board"
    return boards, None


BOARDS, WHY_NOT = load_boards()
NAMES = sorted(BOARDS) or ["<no-board>"]


def connect(
    board: Board,
    timeout: float = TIMEOUT,
    policy: paramiko.MissingHostKeyPolicy | None = None,
    known_hosts: str | None = None,
) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    c.load_host_keys(known_hosts if known_hosts is not None else board.known_hosts)
    c.set_missing_host_key_policy(policy or paramiko.RejectPolicy())
    try:
        c.connect(
            board.host,
            port=board.port,
            username=board.user,
            key_filename=board.identity_file,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except BaseException:
        c.close()
        raise
    return c


def run(c: paramiko.SSHClient, cmd: str, timeout: float = CMD_TIMEOUT) -> tuple[int, str, str]:
    _, out, err = c.exec_command(cmd, timeout=timeout)
    rc = out.channel.recv_exit_status()
    return rc, out.read().decode(), err.read().decode()


def admin(*args: str, board: Board) -> subprocess.CompletedProcess[str]:
    """Run toolchains/emuboard.sh on the boards' state dir (root only)."""
    env = dict(
        os.environ,
        EMUBOARD_STATE=str(board.state_dir),
        EDGECAL_BOARDS_FILE=os.environ["EDGECAL_BOARDS"],
    )
    r = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, f"emuboard.sh {' '.join(args)} failed:\n{r.stderr}"
    return r


@pytest.fixture(scope="module", params=NAMES)
def board(request: pytest.FixtureRequest) -> Board:
    if WHY_NOT:
        unavailable(WHY_NOT)
    return BOARDS[request.param]


@pytest.fixture(scope="module")
def client(board: Board):
    try:
        c = connect(board)
    except UNREACHABLE as e:
        unavailable(f"board {board.name} ({board.host}:{board.port}) unreachable: {e!r}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def is_bare(client: paramiko.SSHClient) -> bool:
    rc, out, _ = run(client, "echo ${EMUBOARD_BARE:-0}")
    assert rc == 0
    return out.strip() == "1"


def test_identity(board: Board, client: paramiko.SSHClient) -> None:
    rc, out, err = run(client, 'hostname; uname -m; echo "$QEMU_CPU"; id -un; pwd')
    assert rc == 0, err
    hostname, machine, cpu, user, home = out.split()
    assert (hostname, machine, user) == (board.name, board.machine, board.user)
    assert home == f"/home/{board.user}"
    if board.profile in CPU_OF_PROFILE:
        assert cpu == CPU_OF_PROFILE[board.profile]


def test_address_follows_the_numbering_rule(board: Board) -> None:
    """NAME ends in N; the board's number is N (aarch64) or 100+N (armv7: emuv7 is 107)."""
    m = re.search(r"(\d+)$", board.name)
    assert m is not None, f"board name {board.name} does not end in a number"
    number = int(m[1]) + (100 if board.armv7 else 0)
    if board.netns:
        assert (board.host, board.port) == (f"10.200.{number}.2", 22)
    else:
        assert (board.host, board.port) == ("127.0.0.1", 2221 + number)


def test_cpuinfo_looks_like_a_pi(board: Board, client: paramiko.SSHClient) -> None:
    if board.profile not in MODEL_OF_PROFILE:
        pytest.skip(f"no Pi cpuinfo for profile {board.profile}")
    rc, out, _ = run(client, "cat /proc/cpuinfo")
    assert rc == 0
    assert MODEL_OF_PROFILE[board.profile] in out
    assert ("asimdhp" in out) == (board.profile == "emulated-pi5")
    if board.armv7:
        assert out.count("model name\t: ARMv7 Processor rev 5 (v7l)") == 4
        features = {
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Features" in line
        }
        assert features == {ARMV7_FEATURES}
        assert "CPU architecture: 7" in out


def test_exit_status_and_pty(client: paramiko.SSHClient) -> None:
    assert run(client, "exit 3")[0] == 3
    _, out, _ = client.exec_command("tty", get_pty=True, timeout=CMD_TIMEOUT)
    assert out.channel.recv_exit_status() == 0
    assert out.read().decode().strip().startswith("/dev/pts/")


def test_sftp_roundtrip(board: Board, client: paramiko.SSHClient, tmp_path: Path) -> None:
    assert run(client, f"mkdir -p {board.workdir}")[0] == 0
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000))
    remote = f"{board.workdir}/smoke-{os.getpid()}.bin"
    with client.open_sftp() as sftp:
        sftp.put(str(src), remote)
        assert sftp.stat(remote).st_size == 300_000
        sftp.get(remote, str(tmp_path / "back.bin"))
        sftp.remove(remote)
        assert Path(remote).name not in sftp.listdir(board.workdir)
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_python_numpy_ncnn(board: Board, client: paramiko.SSHClient, is_bare: bool) -> None:
    rc, out, err = run(client, PROBE)
    if board.armv7:  # no python3 at all (test_armv7_board_has_no_python)
        assert rc == 127 and "python3" in err and "not found" in err, (rc, out, err)
        return
    if is_bare:
        assert rc != 0 and "No module named" in err, (out, err)
        rc, out, err = run(client, 'python3 -c "import platform; print(platform.python_version())"')
        assert rc == 0 and out.startswith("3.11."), err
        return
    assert rc == 0, err
    machine, version, asimdhp = out.split()
    assert machine == "aarch64"
    host_ncnn = None
    with contextlib.suppress(metadata.PackageNotFoundError):
        host_ncnn = metadata.version("ncnn")
    if host_ncnn:
        assert version == host_ncnn, "board and host ncnn differ"
    if board.profile == "emulated-pi4":
        assert int(asimdhp) == 0
    elif board.profile == "emulated-pi5":
        assert int(asimdhp) != 0


def test_unknown_host_key_is_rejected(board: Board, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    try:
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            connect(board, known_hosts=str(empty))
    except UNREACHABLE as e:
        unavailable(f"board {board.name} unreachable: {e!r}")


def test_bare_board_has_python_only() -> None:
    if WHY_NOT:
        unavailable(WHY_NOT)
    for b in BOARDS.values():
        try:
            c = connect(b)
        except UNREACHABLE as e:
            unavailable(f"board {b.name} unreachable: {e!r}")
        with c:
            if b.armv7 or run(c, "echo ${EMUBOARD_BARE:-0}")[1].strip() != "1":
                continue
            rc, _, err = run(c, "python3 -c 'import numpy'")
            assert rc != 0 and "No module named 'numpy'" in err
            rc, _, err = run(c, "python3 -c 'import ncnn'")
            assert rc != 0 and "No module named 'ncnn'" in err
            return
    pytest.skip("no bare board in the boards file (make boards-up BOARDS='emu1 emu2 emu3:bare')")


# ---- the armv7 board: nothing but a shell, and a static armhf binary runs


ARMV7_NAMES = sorted(n for n, b in BOARDS.items() if b.armv7) or ["<no-armv7-board>"]


@pytest.fixture(scope="module", params=ARMV7_NAMES)
def armv7(request: pytest.FixtureRequest) -> Board:
    """Each armv7 board of the boards file; none: skip, and under CI fail (CI starts emuv7)."""
    if WHY_NOT:
        unavailable(WHY_NOT)
    if request.param not in BOARDS:
        unavailable("no armv7 board in the boards file (make boards-up BOARDS='emu1 emuv7')")
    return BOARDS[request.param]


@pytest.fixture(scope="module")
def armv7_client(armv7: Board):
    try:
        c = connect(armv7)
    except UNREACHABLE as e:
        unavailable(f"board {armv7.name} ({armv7.host}:{armv7.port}) unreachable: {e!r}")
    yield c
    c.close()


def test_armv7_board_has_no_python(armv7_client: paramiko.SSHClient) -> None:
    client = armv7_client
    rc, out, err = run(client, "python3 -c 'print(1)'")
    assert rc == 127 and "python3" in err and "not found" in err, (rc, out, err)
    rc, out, _ = run(client, "ls /usr/bin /usr/local/bin /bin | grep -c '^python' || true")
    assert out.strip() == "0"
    rc, out, err = run(client, "getconf LONG_BIT; dpkg --print-architecture")
    assert rc == 0 and out.split() == ["32", "armhf"], err


def test_armv7_hwcaps_match_the_profile(armv7: Board, armv7_client: paramiko.SSHClient) -> None:
    """What a program sees (AT_HWCAP, ncnn's source of CPU features on Linux) is the profile's
    CPU: qemu-arm's cortex-a7 (it reports thumbee, qemu-arm's max does not), no fp16 arithmetic."""
    rc, out, err = run(armv7_client, "LD_SHOW_AUXV=1 /bin/true")
    assert rc == 0, err
    aux = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    hwcap = set(aux["AT_HWCAP"].split())
    profile = load_profile(armv7.profile)
    assert set(profile.cpu_features) <= hwcap
    assert not set(profile.cpu_features_absent) & hwcap
    assert "thumbee" in hwcap and aux["AT_PLATFORM"].strip() == "v7l"


def test_armv7_static_binary_runs(
    armv7: Board, armv7_client: paramiko.SSHClient, tmp_path: Path
) -> None:
    board, client = armv7, armv7_client
    cxx = shutil.which(ARMV7_CXX)
    if cxx is None:
        unavailable(f"{ARMV7_CXX} is not installed (apt-get install g++-arm-linux-gnueabihf)")
    exe = tmp_path / "armv7_probe"
    flags = ["-static", "-O2", "-std=c++17", "-march=armv7-a", "-mfpu=neon-vfpv4"]
    flags += ["-mfloat-abi=hard", "-mfp16-format=ieee", "-pthread"]
    subprocess.run([cxx, *flags, "-o", str(exe), str(ARMV7_PROBE)], check=True, timeout=300)
    assert exe.read_bytes()[:5] == b"\x7fELF\x01"  # a 32-bit ELF
    assert run(client, f"mkdir -p {board.workdir}")[0] == 0
    remote = f"{board.workdir}/armv7_probe-{os.getpid()}"
    with client.open_sftp() as sftp:
        sftp.put(str(exe), remote)
        sftp.chmod(remote, 0o755)
        try:
            rc, out, err = run(client, f"./{remote} a b")
        finally:
            sftp.remove(remote)
    assert rc == 0, err
    assert out == (
        "armv7-probe ptr=4 arch=7 neon=1 sum=500500 lanes=22.0 div=10309278 half=0.333252 args=2\n"
    )


# ---- disruptive checks: they drive emuboard.sh (root) and put every board back as it was


def admin_pair() -> tuple[Board, Board]:
    if WHY_NOT:
        unavailable(WHY_NOT)
    if os.geteuid() != 0:
        pytest.skip("cut/stop checks run toolchains/emuboard.sh: root only")
    if len(BOARDS) < 2:
        pytest.skip("needs two boards")
    a, b = (BOARDS[n] for n in sorted(BOARDS)[:2])
    return a, b


def assert_up(board: Board) -> None:
    with connect(board) as c:
        assert run(c, "true")[0] == 0


def require_up(*boards: Board) -> None:
    """Before a disruptive check: a board already down is 'unavailable', not a failure."""
    for b in boards:
        try:
            assert_up(b)
        except UNREACHABLE as e:
            unavailable(f"board {b.name} ({b.host}:{b.port}) unreachable: {e!r}")


@pytest.mark.parametrize("mode", ["drop", "unreach"])
def test_link_cut_and_restore(mode: str) -> None:
    a, b = admin_pair()
    if not a.netns:
        pytest.skip("link cuts need netns boards (BOARDS_NET=netns make boards-up)")
    require_up(a, b)
    admin("cut", a.name, mode, board=a)
    try:
        t0 = time.monotonic()
        with pytest.raises(UNREACHABLE):
            connect(a, timeout=2.0).close()
        took = time.monotonic() - t0
        if mode == "drop":
            assert took >= 1.5, "a silent drop should time out"
        else:
            assert took < 1.5, "unreach should fail at once (EHOSTUNREACH)"
        assert_up(b)  # the other board does not notice
    finally:
        admin("restore", a.name, board=a)
    assert_up(a)


def test_power_off_one_board_other_stays_up() -> None:
    a, b = admin_pair()
    require_up(a, b)
    with connect(b) as cb:
        admin("stop", a.name, board=a)
        try:
            with pytest.raises(UNREACHABLE):
                connect(a, timeout=2.0).close()
            assert run(cb, "true")[0] == 0  # an open session on the other board survives
            assert_up(b)
        finally:
            admin("start", a.name, board=a)  # back with its saved spec (net, cpu, bare)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert_up(a)
            break
        except UNREACHABLE:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
