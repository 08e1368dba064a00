"""Calibrating on the emulated phone through the CLI, and the phone's faults on the way.

The phone is the boards file's (``EDGECAL_BOARDS``, ``make boards-up BOARDS=phone1``; or
``EDGECAL_TEST_PHONE``); its controls are ``toolchains/emuphone.sh`` (root).  Each fault hits a
calibration of the small digits model while its first capture job runs: the calibration still
ends with exit 0 and writes the same table as an undisturbed run on the same phone.

* the connection cut (held closed for 3 s, then let through again): the job's answer, written
  by the agent while the host was away, is collected;
* the phone "rebooted": every process of the phone killed, its files kept;
* the adb server killed (``adb kill-server``): the next adb call starts a new one, which
  knows no TCP phone until ``adb connect`` -- the transport connects again.  (The module runs
  an adb server of its own, ``ANDROID_ADB_SERVER_PORT``, so other adb users are not hit.)

No timing assertions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgecal.errors import DeviceError

pytestmark = pytest.mark.phone

#: an adb server of this module's own: its ``adb kill-server`` hits no other adb user
ADB_PORT = os.environ.get("EDGECAL_TEST_ADB_PORT", "5043")


@pytest.fixture(scope="module", autouse=True)
def own_adb_server():  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANDROID_ADB_SERVER_PORT", ADB_PORT)
        yield
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=60, check=False)


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "toolchains" / "emuphone.sh"
DIGITS = ROOT / "tests" / "data" / "reference" / "digits"


def control(*args: str) -> None:
    subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True, timeout=60)


def jobs_dir(phone: str) -> Path:
    """The phone's job folders as this host sees them (the emulated phone's root folder)."""
    state = Path(os.environ.get("EMUPHONE_STATE", "/srv/edgecal-phones"))
    return state / "phones" / phone / "root" / "data" / "local" / "tmp" / "edgecal" / "jobs"


def calibrate(
    phone: str, out: Path, images: Path, fault: Callable[[], None] | None = None
) -> dict[str, Any]:
    """``edgecal calibrate --device PHONE`` (JSON summary); ``fault`` runs once the first
    capture job reports progress."""
    argv = [
        sys.executable,
        "-m",
        "edgecal",
        "calibrate",
        str(DIGITS / "model.param"),
        str(DIGITS / "model.bin"),
        "--images",
        str(images),
        "--mean",
        "0",
        "--norm",
        "0.00392157",
        "--shape",
        "32,32",
        "--pixel",
        "GRAY",
        "--device",
        phone,
        "--out",
        str(out),
        "--json",
    ]
    jobs = jobs_dir(phone)
    old = {p.name for p in jobs.iterdir()} if jobs.is_dir() else set()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(out.parent)
    )
    assert proc.stderr is not None and proc.stdout is not None
    err: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)

    def fire_mid_job() -> None:
        """Once a capture job runs on the phone (its request there, no response yet)."""
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            for job in jobs.glob("*/request.json") if jobs.is_dir() else []:
                if job.parent.name in old:  # another run's leftover
                    continue
                text = job.read_text(errors="replace")
                if '"absmax"' in text and not (job.parent / "response.json").exists():
                    assert fault is not None
                    fault()
                    return
            time.sleep(0.01)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    if fault is not None:
        threading.Thread(target=fire_mid_job, daemon=True).start()
    stdout = proc.stdout.read()
    code = proc.wait(timeout=600)
    reader.join(30)
    assert code == 0, "".join(err[-20:])
    return {**json.loads(stdout), "stderr": "".join(err)}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("phone") / "images.txt"
    path.write_text("".join(f"{DIGITS / 'images' / f'calib_{i:02d}.png'}\n" for i in range(8)))
    return path


@pytest.fixture(scope="module")
def undisturbed(phone_board, images: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The table of an undisturbed run, and the bytes a repeated run pushes."""
    out = tmp_path_factory.mktemp("clean") / "phone.table"
    calibrate(phone_board.name, out, images)
    again = calibrate(phone_board.name, out.with_name("again.table"), images)
    assert again["bytes_pushed"] == 0  # everything is on the phone: 0 bytes re-pushed
    assert out.with_name("again.table").read_bytes() == out.read_bytes()
    return out.read_bytes()


def test_a_cut_connection_mid_capture_is_collected_and_the_table_is_the_same(
    phone_board, images: Path, undisturbed: bytes, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    def cut() -> None:
        control("cut", phone_board.name, "hold")
        time.sleep(3)
        control("restore", phone_board.name)

    got = calibrate(phone_board.name, tmp_path / "t.table", images, cut)
    assert (tmp_path / "t.table").read_bytes() == undisturbed
    fleet = got["fleet"][0]
    assert fleet["retried"] + fleet["collected"] >= 1, (fleet, got["stderr"])


def test_a_rebooted_phone_mid_capture_gives_the_same_table(
    phone_board, images: Path, undisturbed: bytes, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    got = calibrate(
        phone_board.name, tmp_path / "t.table", images, lambda: control("reboot", phone_board.name)
    )
    assert (tmp_path / "t.table").read_bytes() == undisturbed
    # (a short job may end before the reboot lands: then the next job starts a new agent;
    # test_a_job_cut_by... below hits a running job for sure)
    assert got["bytes_pushed"] == 0  # the files survived the reboot


def test_a_killed_adb_server_mid_capture_gives_the_same_table(
    phone_board, images: Path, undisturbed: bytes, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    def kill_server() -> None:
        subprocess.run(["adb", "kill-server"], check=True, capture_output=True, timeout=60)

    calibrate(phone_board.name, tmp_path / "t.table", images, kill_server)
    assert (tmp_path / "t.table").read_bytes() == undisturbed


@pytest.mark.parametrize("fault", ["kill-server", "reboot"])
def test_a_running_job_cut_by_a_fault_is_a_device_error_then_the_phone_recovers(
    phone_board, native_agent_aarch64: Path, fault: str
) -> None:  # type: ignore[no-untyped-def]
    """Device level, a job that surely runs (``sleep``): the adb server dies, or the phone
    reboots (its processes killed, its files kept).  The job fails as a DeviceError naming the
    phone (never hangs), ``recover`` connects again, and the next job runs on a new agent
    without pushing anything again."""
    from edgecal.boards.open import adb_target
    from edgecal.device.adb.device import AdbDevice

    def hit() -> None:
        if fault == "reboot":
            control("reboot", phone_board.name)
        else:
            subprocess.run(["adb", "kill-server"], capture_output=True, timeout=60, check=True)

    with AdbDevice(
        adb_target(phone_board),
        workdir=phone_board.workdir,
        native_agent=lambda t: native_agent_aarch64,
    ) as dev:
        dev.hello()
        pushed = dev.bytes_pushed
        timer = threading.Timer(1.0, hit)
        timer.start()
        with pytest.raises(DeviceError) as info:
            dev.run_job("sleep", {"seconds": 20}, timeout_s=60)
        timer.join()
        assert phone_board.name in str(info.value)
        dev.recover()
        assert dev.hello()["target"] == "aarch64"
        assert dev.bytes_pushed == pushed


def test_board_check_reports_the_phone_and_warns_of_a_dark_hot_phone(phone_board) -> None:  # type: ignore[no-untyped-def]
    from edgecal.boards.check import check_board

    control("set", phone_board.name, "screen", "off")
    control("set", phone_board.name, "temp", "90000")
    try:
        report = check_board(phone_board)
    finally:
        control("set", phone_board.name, "screen", "on")
        control("set", phone_board.name, "temp", "40000")
    assert report.ok, report.lines()
    facts = report.facts.facts if report.facts else {}
    assert facts["phone"] and facts["abi"] == "arm64-v8a" and facts["android"]
    assert [c["kind"] for c in facts["clusters"]] == ["big", "little"]
    text = "\n".join(report.lines())
    assert "screen is off" in text and "thermally throttled" in text
    assert report.agent is not None and report.agent["agent_kind"] == "native"


def test_shell_protocol_v1_carries_the_agent_and_the_exit_status(
    phone_board, native_agent_aarch64: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """``adb shell -x`` (v1: one stream, no exit status, as an older phone's adbd): the job
    ids still reach the agent through adb's stdin, its lines are split again by prefix, and a
    command's status comes back through the exit mark."""
    from edgecal.boards.open import adb_target
    from edgecal.device.adb.device import AdbDevice

    with AdbDevice(
        adb_target(phone_board),
        workdir=phone_board.workdir,
        native_agent=lambda t: native_agent_aarch64,
        shell_v1=True,
    ) as dev:
        assert dev.link.run("echo out; echo err >&2; exit 3").status == 3
        assert dev.link.run("printf 'no newline'").stdout == "no newline"
        src = tmp_path / "a b;$(x)'q'.bin"
        src.write_bytes(os.urandom(1000))
        rel = dev.push(src)
        got = dev.run_job("sleep", {"seconds": 0.2})
        assert got.response["ok"] and dev.hello()["target"] == "aarch64"
        assert dev.push(src) == rel and rel.endswith(src.name)


NASTY = [
    "with space",
    'it\'s "quoted"',
    "a;b $(touch INJECTED) `touch INJECTED2`",
    "new\nline",
    "..",
    "../../x",
    "-n",
    "*",
]


@pytest.mark.parametrize("shell_v1", [False, True])
def test_names_survive_adb_shell_and_pushes(
    phone_board, native_agent_aarch64: Path, tmp_path: Path, shell_v1: bool
) -> None:  # type: ignore[no-untyped-def]
    """Through the real adb and the phone's sh: every word arrives as it was, nothing runs,
    and files with such names are pushed (content-addressed) and found again."""
    from edgecal.boards.open import adb_target
    from edgecal.device.adb.device import AdbDevice
    from edgecal.device.adb.shell import sh_join

    with AdbDevice(
        adb_target(phone_board),
        workdir=phone_board.workdir,
        native_agent=lambda t: native_agent_aarch64,
        shell_v1=shell_v1,
    ) as dev:
        res = dev.link.run(
            f"cd {sh_join([str(dev.workdir)])} && " + sh_join(["printf", "<%s>", *NASTY])
        )
        assert res.status == 0 and res.stdout == "".join(f"<{n}>" for n in NASTY)
        for name in ("with space.bin", 'it\'s "q";$(touch INJECTED).bin', "new\nline.bin"):
            src = tmp_path / name
            src.write_bytes(os.urandom(300))
            before = dev.bytes_pushed
            rel = dev.push(src)
            assert dev.bytes_pushed == before + 300 and dev.push(src) == rel
            assert dev.bytes_pushed == before + 300  # found again: not pushed twice
            q = sh_join([dev.remote(rel)])
            assert dev.link.run(f"cat {q} | wc -c").stdout.strip() == "300"
        found = dev.link.run(f"find {sh_join([str(dev.workdir)])} -name 'INJECTED*'")
        assert found.stdout.strip() == ""


def test_validate_on_the_phone_reports_its_facts(phone_board, images: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``edgecal validate --device PHONE --json``: the int8 model agrees with fp32 on the
    phone, per-layer cosines are those of values (int8 blobs widened, not reinterpreted), and
    the device facts name the phone, its Android and its clusters."""
    table = DIGITS / "kl.table"
    argv = [sys.executable, "-m", "edgecal", "validate", str(DIGITS / "model.param")]
    argv += [str(DIGITS / "model.bin"), "--table", str(table), "--images", str(images)]
    argv += ["--mean", "0", "--norm", "0.00392157", "--shape", "32,32", "--pixel", "GRAY"]
    argv += ["--device", phone_board.name, "--json"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    text = json.dumps(doc)
    assert '"android": "13 (API 33)"' in text and '"abi": "arm64-v8a"' in text
    facts = doc["results"][0]["device"]
    assert facts["cpu_clusters"].startswith("big ") and "little " in facts["cpu_clusters"]
    cosines = re.findall(r'"cosine_mean": ([0-9.e-]+)', text)
    assert cosines and min(float(c) for c in cosines) > 0.99, cosines


def test_the_agent_runs_on_the_big_cluster_as_the_profile_says(phone_board) -> None:  # type: ignore[no-untyped-def]
    """Profile affinity ``big`` (emulated-phone-a76): the agent is started under ``taskset``
    with the fastest cluster's mask, and the kernel holds it there."""
    from edgecal.boards.open import open_phone

    with open_phone(phone_board) as dev:
        assert dev.affinity == "big"
        big = dev.phone_facts().big_cpus
        assert big and len(dev.phone_facts().clusters) >= 2
        dev.hello()
        pid = dev.agent_pid
        assert pid
        status = dev.link.run(f"grep Cpus_allowed_list /proc/{pid}/status").stdout
        allowed = status.split(":", 1)[1].strip()
        assert allowed == ",".join(map(str, big)) or allowed == f"{big[0]}-{big[-1]}", allowed
