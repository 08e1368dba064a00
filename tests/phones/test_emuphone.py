"""The emulated Android phone (toolchains/emuphone.sh + emuphone.py, a test fixture) driven by
the REAL adb client (Debian's `adb`): the CNXN handshake, `adb shell` (shell protocol v2 and
the v1 raw stream), push/pull/ls over the sync service, the Android-like world (aarch64 under
qemu-user, uid 2000, getprop, no python, big.LITTLE sysfs, dumpsys), and the fault controls
(cut, reboot).

The phone comes from the boards file named by ``EDGECAL_BOARDS`` (``make boards-up
BOARDS="emu1 phone1"``): a ``[boards.NAME]`` with ``transport = "adb"`` and an
``emulated-phone-*`` profile. Without it, without `adb`, or with a phone that does not answer,
these tests skip on a developer's machine and FAIL under CI (``CI=true``). The cut and reboot
tests drive ``toolchains/emuphone.sh`` and so need root. No timing assertions.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = pytest.mark.board

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "toolchains" / "emuphone.sh"
PROBE = ROOT / "tests" / "data" / "emuphone" / "big_cores_probe.c"
IN_CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT = 60.0
ADB_PORT = "5041"  # the tests' own adb server (the default one is 5037)
BASE = "/data/local/tmp/emuphone-test"
# a file name that `adb shell` (which joins its words with spaces for the phone's sh) breaks
# unless the host quotes it: spaces, both quotes, ;$() and backquotes, a newline
NASTY = "we ird 'q' \"dq\" ;$(touch INJECTED) `touch INJECTED2`\nline2 .."


def unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {why}", pytrace=False)
    pytest.skip(why)


@dataclass(frozen=True)
class Phone:
    name: str
    serial: str
    profile: str
    workdir: str
    adb: str

    def run(
        self, *args: str, input: bytes | None = None, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [self.adb, "-s", self.serial, *args],
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def sh(
        self, cmd: str, *, v1: bool = False, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """`adb shell CMD` (one word: the phone's sh gets CMD as its command line)."""
        return self.run("shell", *(["-x"] if v1 else []), cmd, input=input)

    def out(self, cmd: str) -> str:
        r = self.sh(cmd)
        assert r.returncode == 0, (cmd, r.returncode, r.stdout, r.stderr)
        return r.stdout.decode()


def quote(s: str) -> str:
    """sh single quotes (the phone's sh is busybox ash, POSIX quoting)."""
    return "'" + s.replace("'", "'\\''") + "'"


def phones_in(path: Path) -> list[tuple[str, dict[str, object]]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        unavailable(f"cannot read the boards file {path}: {e}")
    return [
        (name, d)
        for name, d in sorted(data.get("boards", {}).items())
        if d.get("transport") == "adb" and str(d.get("profile", "")).startswith("emulated-phone")
    ]


def reconnect(p: Phone, deadline: float = 30.0) -> None:
    """`adb connect` afresh (a dropped TCP transport stays 'offline' until adb retries)."""
    subprocess.run(
        [p.adb, "disconnect", p.serial], capture_output=True, timeout=TIMEOUT, check=False
    )
    end = time.monotonic() + deadline
    last = b""
    while time.monotonic() < end:
        r = subprocess.run(
            [p.adb, "connect", p.serial], capture_output=True, timeout=TIMEOUT, check=False
        )
        last = r.stdout + r.stderr
        state = p.run("get-state", timeout=10)
        if state.stdout.strip() == b"device":
            return
        time.sleep(0.3)
    raise AssertionError(f"{p.name}: no adb device at {p.serial} after {deadline} s: {last!r}")


@pytest.fixture(scope="module")
def phone() -> Iterator[Phone]:
    """The phone, through an adb server of these tests' own (ANDROID_ADB_SERVER_PORT): other
    adb users on the machine (and their `adb kill-server`) neither disturb nor see them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANDROID_ADB_SERVER_PORT", os.environ.get("EMUPHONE_TEST_ADB_PORT", ADB_PORT))
        p = _phone()
        try:
            yield p
        finally:
            subprocess.run([p.adb, "kill-server"], capture_output=True, timeout=TIMEOUT)


def _phone() -> Phone:
    value = os.environ.get("EDGECAL_BOARDS")
    if not value:
        unavailable(
            'EDGECAL_BOARDS is not set (run `make boards-up BOARDS="phone1"` as root and export it)'
        )
    found = phones_in(Path(str(value)))
    if not found:
        unavailable(f'no emulated phone (transport = "adb", profile emulated-phone-*) in {value}')
    adb = shutil.which("adb")
    if adb is None:
        unavailable("no adb client (apt-get install adb; `make test-deps` does)")
    name, d = found[0]
    p = Phone(name, str(d["serial"]), str(d["profile"]), str(d.get("workdir", "")), str(adb))
    subprocess.run(
        [p.adb, "start-server"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=TIMEOUT,
    )
    try:
        reconnect(p, deadline=15)
    except AssertionError as e:
        unavailable(str(e))
    return p


@pytest.fixture()
def work(phone: Phone) -> Iterator[str]:
    d = f"{BASE}/{uuid.uuid4().hex[:8]}"
    phone.out(f"mkdir -p {d}")
    yield d
    phone.sh(f"rm -rf {d}")


def control(phone: Phone, *args: str) -> str:
    if os.geteuid() != 0:
        unavailable("the phone's fault controls (toolchains/emuphone.sh) need root")
    r = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, timeout=TIMEOUT, check=False, text=True
    )
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


# ------------------------------------------------------------------ the device and its world


def test_connect_banner_and_boards_entry(phone: Phone) -> None:
    r = subprocess.run(
        [phone.adb, "devices", "-l"], capture_output=True, timeout=TIMEOUT, check=True, text=True
    )
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith(phone.serial + " "))
    # the CNXN banner's properties, as adb shows a real phone's
    assert re.search(
        r"\sdevice\s.*product:edgecal_emuphone model:EdgecalPhone_A76_emulated device:emuphone",
        line,
    ), line
    assert phone.profile == "emulated-phone-a76"
    assert phone.workdir == "/data/local/tmp/edgecal"
    assert phone.run("get-state").stdout.strip() == b"device"


def test_aarch64_shell_user_no_python(phone: Phone) -> None:
    assert phone.out("uname -m").strip() == "aarch64"
    assert phone.out("id -u; id -g; id -un").split() == ["2000", "2000", "shell"]
    assert phone.out("echo $PATH").strip().split(":")[2:4] == ["/system/bin", "/system/xbin"]
    r = phone.sh(
        "command -v python3 || command -v python || ls /system/bin /system/xbin | grep -i python"
    )
    assert r.returncode == 1 and r.stdout == b"", r  # no python anywhere, as on a phone
    # Android's shape: a read-only /system, a writable /data/local/tmp, nothing else writable
    assert phone.sh("touch /system/x").returncode == 1
    assert phone.sh("touch /data/x").returncode == 1
    assert phone.out("cd /data/local/tmp && touch .w && rm .w && echo ok").strip() == "ok"


def test_getprop(phone: Phone) -> None:
    assert phone.out("getprop ro.product.model").strip() == "EdgecalPhone A76 (emulated)"
    assert phone.out("getprop ro.product.cpu.abi").strip() == "arm64-v8a"
    assert phone.out("getprop ro.build.version.sdk").strip() == "33"
    assert phone.out("getprop no.such.prop fallback").strip() == "fallback"
    assert phone.out("getprop no.such.prop") == "\n"
    listing = phone.out("getprop")
    assert "[ro.product.model]: [EdgecalPhone A76 (emulated)]" in listing
    assert "[ro.build.version.release]: [13]" in listing


def test_cpus_thermal_screen(phone: Phone) -> None:
    # big.LITTLE: as many cores as the host gives (at most 8), the first half cortex-a55, the
    # rest cortex-a76 (toolchains/emuphone.sh cpu_split: a CPU the host lacks could not be pinned)
    n = min(len(os.sched_getaffinity(0)), 8)
    little = n // 2
    cpuinfo = phone.out("cat /proc/cpuinfo")
    parts = re.findall(r"^CPU part\s*: (0x[0-9a-f]+)$", cpuinfo, re.M)
    assert parts == ["0xd05"] * little + ["0xd0b"] * (n - little)
    features = re.findall(r"^Features\s*: (.*)$", cpuinfo, re.M)
    assert len(features) == n
    assert all({"asimdhp", "asimddp", "fphp"} <= set(f.split()) for f in features)
    cpus = "/sys/devices/system/cpu"
    assert phone.out(f"cat {cpus}/possible").strip() == (f"0-{n - 1}" if n > 1 else "0")
    cap = phone.out(f"cat {cpus}/cpu*/cpu_capacity").split()
    assert cap == ["381"] * little + ["1024"] * (n - little)
    freq = phone.out(
        f"cat {cpus}/cpu0/cpufreq/cpuinfo_max_freq {cpus}/cpu{n - 1}/cpufreq/cpuinfo_max_freq"
    )
    assert [int(x) for x in freq.split()] == [1800000 if little else 2600000, 2600000]
    temps = phone.out("cat /sys/class/thermal/thermal_zone*/temp").split()
    assert len(temps) >= 2 and all(10000 < int(t) < 90000 for t in temps)
    assert "mWakefulness=Awake" in phone.out("dumpsys power")
    assert "Thermal Status: 0" in phone.out("dumpsys thermalservice")
    df = phone.out("df /data/local/tmp").splitlines()[-1].split()
    assert df[-1] == "/data" and int(df[3]) > 0  # free 1K-blocks


def test_native_code_on_big_cores(phone: Phone, work: str, tmp_path: Path) -> None:
    """A static aarch64 program (as the native agent is) pins itself to the big cores, runs
    threads there and uses ARMv8.2 fp16 arithmetic + dotprod: QEMU_CPU=cortex-a76 is in effect."""
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        unavailable("no aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)")
    exe = tmp_path / "big_cores_probe"
    subprocess.run(
        [
            str(cc),
            "-static",
            "-O2",
            "-pthread",
            "-march=armv8.2-a+fp16+dotprod",
            "-o",
            str(exe),
            str(PROBE),
        ],
        check=True,
        timeout=TIMEOUT,
    )
    assert phone.run("push", str(exe), f"{work}/probe").returncode == 0
    n = min(len(os.sched_getaffinity(0)), 8)
    r = phone.sh(f"{work}/probe")
    assert r.returncode == 0, r
    assert r.stdout.decode() == f"cpus {n} big {n - n // 2} threads_on_big 1 fp16 3.0 dot 24\n"
    # the same binary on a CPU without them: SIGILL (128 + 4)
    assert phone.sh(f"QEMU_CPU=cortex-a72 {work}/probe").returncode == 132


# ------------------------------------------------------------------ adb shell


def test_exit_status_and_streams_shell_v2(phone: Phone) -> None:
    r = phone.sh("echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert phone.sh("kill -9 $$").returncode == 137  # killed by a signal: 128 + 9, as adbd says
    # stdin to the command, closed at its end (shell v2's close-stdin packet)
    data = os.urandom(300_000)
    r = phone.sh("cat | md5sum", input=data)
    assert r.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()


def test_binary_output_exec_out_and_shell(phone: Phone, work: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000 + b"\r\n\n\r\x00"  # no pty: nothing translated
    (tmp_path / "bin").write_bytes(data)
    assert phone.run("push", str(tmp_path / "bin"), f"{work}/bin").returncode == 0
    assert phone.run("exec-out", f"cat {work}/bin").stdout == data  # exec:
    assert phone.sh(f"cat {work}/bin").stdout == data  # shell,v2,raw:
    assert phone.sh(f"cat {work}/bin", v1=True).stdout == data  # shell: (v1)


def test_exit_status_shell_v1(phone: Phone) -> None:
    # `adb shell -x`: the v1 service (`shell:CMD`): one stream, no exit status from adb ...
    r = phone.sh("echo out; echo err >&2; exit 3", v1=True)
    assert r.returncode == 0
    assert sorted(r.stdout.splitlines()) == [b"err", b"out"] and r.stderr == b""
    # ... so the host appends the status to the output itself
    r = phone.sh("false; echo EXIT:$?", v1=True)
    assert r.stdout == b"EXIT:1\n"


def test_quoting_of_nasty_names(phone: Phone, work: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"payload\n")
    remote = f"{work}/{NASTY}"
    r = phone.run("push", str(src), remote)  # sync SEND: the path travels as bytes, unquoted
    assert r.returncode == 0, r
    # through `adb shell`, the host must quote: one word, single-quoted for sh
    assert phone.out(f"cat {quote(remote)}") == "payload\n"
    # the only entry of the folder is that very name, byte for byte
    assert phone.sh(f"cd {quote(work)} && printf '%s' *").stdout == NASTY.encode()
    assert (
        phone.sh(f"ls {quote(work)}/INJECTED* {quote(BASE)}/INJECTED* /INJECTED*").returncode == 1
    )
    # a `..` inside a quoted name stays a name; the parent is not touched
    assert (
        phone.out(
            f"test -e {quote(work + '/..')}/{quote(os.path.basename(work))} && echo ok"
        ).strip()
        == "ok"
    )
    back = tmp_path / "back"
    assert phone.run("pull", remote, str(back)).returncode == 0
    assert back.read_bytes() == b"payload\n"


# ------------------------------------------------------------------ sync: push, pull, ls, stat


def test_push_pull_identical_with_mtime(phone: Phone, work: str, tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    data = os.urandom(1_234_567)
    src.write_bytes(data)
    os.chmod(src, 0o640)
    os.utime(src, (1_700_000_000, 1_700_000_123))
    assert phone.run("push", str(src), f"{work}/deep/er/blob.bin").returncode == 0  # parents made
    st = phone.out(f"stat -c '%s %Y %a %u' {work}/deep/er/blob.bin").split()
    assert st == [str(len(data)), "1700000123", "640", "2000"]  # mtime from SEND's DONE
    assert phone.out(f"md5sum {work}/deep/er/blob.bin").split()[0] == hashlib.md5(data).hexdigest()
    back = tmp_path / "back.bin"
    assert phone.run("pull", "-a", f"{work}/deep/er/blob.bin", str(back)).returncode == 0
    assert back.read_bytes() == data
    assert int(back.stat().st_mtime) == 1_700_000_123  # pull -a: the STAT's mtime
    # errors come back as sync FAILs
    r = phone.run("pull", f"{work}/nope", str(tmp_path / "nope"))
    assert r.returncode == 1 and b"does not exist" in r.stdout + r.stderr
    r = phone.run("push", str(src), "/system/bin/blob")
    assert r.returncode == 1 and b"Read-only file system" in r.stdout + r.stderr


def test_list_and_stat(phone: Phone, work: str, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    os.utime(tmp_path / "a", (1_600_000_000, 1_600_000_000))
    assert phone.run("push", str(tmp_path / "a"), f"{work}/a").returncode == 0
    phone.out(f"mkdir {work}/sub")
    r = phone.run("ls", work)  # sync LIST: "mode size mtime name" in hex
    assert r.returncode == 0, r
    rows = {ln.split(" ", 3)[3]: ln.split(" ", 3)[:3] for ln in r.stdout.decode().splitlines()}
    assert set(rows) == {".", "..", "a", "sub"}
    mode, size, mtime = (int(x, 16) for x in rows["a"])
    assert (mode & 0o170000, size, mtime) == (0o100000, 10, 1_600_000_000)
    assert int(rows["sub"][0], 16) & 0o170000 == 0o040000
    # STAT: a push into an existing directory lands inside it (the host STATs the target)
    assert phone.run("push", str(tmp_path / "a"), f"{work}/sub").returncode == 0
    assert phone.out(f"cat {work}/sub/a") == "x" * 10


def test_big_push(phone: Phone, work: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    with big.open("wb") as f:
        for i in range(64):
            f.write(bytes([i]) + chunk[1:])
    t0 = time.monotonic()
    r = phone.run("push", str(big), f"{work}/big.bin", timeout=600)
    took = time.monotonic() - t0
    assert r.returncode == 0, r
    print(
        f"64 MiB push: {took:.2f} s ({64 / took:.0f} MiB/s); adb says {r.stdout.decode().strip()}"
    )
    digest = hashlib.md5(big.read_bytes()).hexdigest()
    assert phone.out(f"md5sum {work}/big.bin").split()[0] == digest


def test_push_pull_a_folder(phone: Phone, work: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "top.txt").write_text("top")
    (tree / "a" / "b" / "deep.bin").write_bytes(bytes(range(256)) * 40)
    assert phone.run("push", str(tree), f"{work}/").returncode == 0
    assert phone.out(f"cd {work}/tree && find . -type f | sort") == "./a/b/deep.bin\n./top.txt\n"
    back = tmp_path / "back"
    back.mkdir()
    assert phone.run("pull", f"{work}/tree", str(back)).returncode == 0
    assert (back / "tree" / "a" / "b" / "deep.bin").read_bytes() == bytes(range(256)) * 40
    assert (back / "tree" / "top.txt").read_text() == "top"


def test_screen_and_temperature_controls(phone: Phone) -> None:
    try:
        control(phone, "set", phone.name, "screen", "off")
        control(phone, "set", phone.name, "temp", "96000")
        power = phone.out("dumpsys power")
        assert "mWakefulness=Asleep" in power and "Display Power: state=OFF" in power
        assert "Thermal Status: 4" in phone.out("dumpsys thermalservice")
        assert phone.out("cat /sys/class/thermal/thermal_zone0/temp").strip() == "96000"
    finally:
        control(phone, "set", phone.name, "screen", "on")
        control(phone, "set", phone.name, "temp", "41500")
    assert "mWakefulness=Awake" in phone.out("dumpsys power")
    assert "Thermal Status: 0" in phone.out("dumpsys thermalservice")


# ------------------------------------------------------------------ faults


def test_cut_mid_command(phone: Phone, work: str) -> None:
    # a job detached with setsid outlives the cut (the stream's session gets SIGHUP, as adbd does)
    detached = f"setsid sh -c 'sleep 2; echo done > {work}/detached' > /dev/null 2>&1 < /dev/null &"
    proc = subprocess.Popen(
        [
            phone.adb,
            "-s",
            phone.serial,
            "shell",
            f"{detached} echo started; sleep 20; echo finished",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        # our connection and any other adb server's
        assert re.match(r"cut [1-9][0-9]* connections", control(phone, "cut", phone.name))
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert b"finished" not in out  # the stream died with the connection
    reconnect(phone)
    assert phone.out("echo back").strip() == "back"
    assert (
        phone.out(
            f"for i in $(seq 50); do [ -e {work}/detached ] && break; sleep 0.2; done; "
            f"cat {work}/detached"
        )
        == "done\n"
    )
    assert (
        phone.sh("pgrep -f 'sleep 20'").returncode == 1
    )  # the cut command's own processes are gone
    # hold: the phone refuses connections until restore
    control(phone, "cut", phone.name, "hold")
    try:
        subprocess.run(
            [phone.adb, "disconnect", phone.serial], capture_output=True, timeout=TIMEOUT
        )
        r = subprocess.run(
            [phone.adb, "connect", phone.serial], capture_output=True, timeout=TIMEOUT, text=True
        )
        assert (
            "failed to connect" in r.stdout + r.stderr or "unable to connect" in r.stdout + r.stderr
        ), r
    finally:
        control(phone, "restore", phone.name)
    reconnect(phone)
    assert phone.out("echo restored").strip() == "restored"


def test_reboot_kills_processes_keeps_files(phone: Phone, work: str) -> None:
    phone.out(f"echo kept > {work}/file; nohup sleep 300 > /dev/null 2>&1 < /dev/null &")
    assert phone.out("pgrep -f 'sleep 300'").strip() != ""
    # down for 1 s (adb refused, as while booting), then back
    assert "rebooted" in control(phone, "reboot", phone.name, "1")
    reconnect(phone)
    assert phone.sh("pgrep -f 'sleep 300'").returncode == 1  # every process of the phone is gone
    assert phone.out(f"cat {work}/file") == "kept\n"
    assert phone.out("uname -m").strip() == "aarch64"


def test_adb_server_killed(phone: Phone) -> None:
    """`adb kill-server` mid-command: the command's stream dies; a new server connects again.
    A private server port (ANDROID_ADB_SERVER_PORT), so other adb users keep theirs; the phone
    serves both servers at once."""
    env = dict(os.environ, ANDROID_ADB_SERVER_PORT="5039")

    def adb(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [phone.adb, *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    adb("start-server")
    try:
        assert "connected to" in adb("connect", phone.serial).stdout
        for _ in range(50):
            if adb("-s", phone.serial, "get-state").stdout.strip() == "device":
                break
            time.sleep(0.1)
        proc = subprocess.Popen(
            [phone.adb, "-s", phone.serial, "shell", "echo started; sleep 20; echo finished"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
            adb("kill-server")
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
        assert b"finished" not in out
        adb("start-server")
        assert "connected to" in adb("connect", phone.serial).stdout
        for _ in range(50):
            r = adb("-s", phone.serial, "shell", "echo again")
            if r.stdout == "again\n":
                break
            time.sleep(0.1)
        assert r.stdout == "again\n", r
        assert phone.out("echo default-server").strip() == "default-server"  # untouched
    finally:
        adb("kill-server")
