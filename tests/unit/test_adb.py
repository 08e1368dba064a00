"""The adb transport's pure parts: quoting through ``adb shell``, exit marks, phone facts,
boards-file entries of phones.

``adb shell`` joins its arguments with spaces and the phone's ``adbd`` runs ``sh -c`` on the
result; edgecal passes one pre-quoted string, so what the phone's ``sh`` gets is exactly that
string.  The round trips below run it under this machine's ``sh`` (dash: POSIX, like the
phone's mksh/toybox and the emulated phone's busybox ash).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal.boards.config import load_boards, resolve_board
from edgecal.boards.open import adb_target
from edgecal.device.adb.device import (
    AdbDevice,
    file_states_script,
    mark_mtime,
    parse_file_states,
    phone_workdir,
)
from edgecal.device.adb.facts import (
    clusters,
    cpu_parts,
    parse_cores,
    parse_phone_probe,
    parse_power,
    parse_thermal,
    pinned_cpus,
    taskset_mask,
)
from edgecal.device.adb.link import AdbTarget, find_adb
from edgecal.device.adb.shell import (
    agent_command,
    sh_join,
    split_exit_status,
    touch_stamp,
    with_exit_status,
)
from edgecal.device.remote import PushCheck
from edgecal.errors import BoardSetupError, ConfigError, UsageError

NASTY = [
    "plain",
    "with space",
    "it's",
    'say "hi"',
    "a;b",
    "$(touch /tmp/pwned-edgecal)",
    "`id`",
    "new\nline",
    "..",
    "../../etc/passwd",
    "-n",
    "*",
    "~root",
    "tab\there",
    "back\\slash",
    "",
    "ünïcode €",
    "semi; rm -rf /tmp/x; echo",
    "&& || | > < >>",
    "${HOME}",
    "'\"'\"'",
]


def sh(command: str) -> subprocess.CompletedProcess[bytes]:
    """What ``adbd`` does with the service string: ``sh -c`` of it."""
    return subprocess.run(["sh", "-c", command], capture_output=True, timeout=30, check=False)


def adb_join(*args: str) -> str:
    """What the adb client does with ``adb shell ARGS...``: join with spaces, no escaping."""
    return " ".join(args)


def echo_args(argv: list[str]) -> list[str]:
    out = sh(adb_join(sh_join(["printf", "%s\\0", "start", *argv]))).stdout
    return out.decode("utf-8").split("\0")[1:-1]


@pytest.mark.parametrize("name", NASTY)
def test_a_quoted_name_reaches_the_phone_shell_unchanged(name: str) -> None:
    assert echo_args([name]) == [name]
    assert echo_args(["a", name, "b"]) == ["a", name, "b"]
    assert not os.path.exists("/tmp/pwned-edgecal")


def test_unquoted_words_would_break_which_is_why_they_are_quoted() -> None:
    """The failure the quoting prevents: adb's plain join splits and expands names."""
    out = sh(adb_join("printf", "'%s\\0'", "with space", "$(echo hi)")).stdout
    assert out.decode().split("\0")[:-1] == ["with", "space", "hi"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="\x00", codec="utf-8")), max_size=4))
def test_any_argv_round_trips_through_adb_shell_quoting(argv: list[str]) -> None:
    assert echo_args(argv) == argv


@pytest.mark.parametrize(
    ("script", "output", "status"),
    [
        ("echo hi", "hi\n", 0),
        ("printf 'no newline'", "no newline", 0),
        ("exit 3", "", 3),
        ("echo out; echo err >&2; exit 7", "out\nerr\n", 7),
        ("false", "", 1),
    ],
)
def test_the_exit_status_comes_back_in_the_output(script: str, output: str, status: int) -> None:
    got = sh(with_exit_status(script))
    assert split_exit_status(got.stdout.decode()) == (output, status)


def test_a_cut_off_command_has_no_status_and_a_pty_cr_is_dropped() -> None:
    assert split_exit_status("partial output") == ("partial output", None)
    assert split_exit_status("a\r\nb\r\nEDGECAL-EXIT:0\r\n") == ("a\nb", 0)
    assert split_exit_status("x\nEDGECAL-EXIT:garbage\n")[1] is None


def test_the_agent_command_prints_the_pid_runs_argv_in_cwd_and_reports_a_signal(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "it's a dir; $(x)"
    folder.mkdir()
    got = sh(agent_command(["sh", "-c", 'pwd; echo "$1" >&2; kill -9 $$', "-", "a b"], str(folder)))
    lines = got.stdout.decode().splitlines()
    assert lines[0].startswith("EDGECAL-PID ") and int(lines[0].split()[1]) > 1
    assert lines[1] == str(folder) and lines[2] == "a b"  # stderr on stdout
    assert lines[-1] == "EDGECAL-EXIT:137"  # 128 + SIGKILL


def test_the_mark_is_set_by_touch_in_utc(tmp_path: Path) -> None:
    digest = "ab" * 32
    f = tmp_path / "x"
    f.write_bytes(b"1")
    sh(f"TZ=UTC0 touch -c -t {touch_stamp(mark_mtime(digest))} {sh_join([str(f)])}")
    assert int(f.stat().st_mtime) == mark_mtime(digest)


def test_one_script_says_the_state_of_every_file_of_a_push(tmp_path: Path) -> None:
    """Marked, unmarked, absent, a symlink on the way, a folder in the file's place and a
    name of NASTY characters: one ``sh`` (one ``stat``) answers for all, in order."""
    wd = tmp_path / "wd"
    (wd / "files" / "a").mkdir(parents=True)
    (wd / "files" / "dir").mkdir()
    (wd / "elsewhere").mkdir()
    (wd / "files" / "link").symlink_to(wd / "elsewhere")
    (wd / "elsewhere" / "x").write_bytes(b"12345")
    nasty = "it's $(id); new\nline"
    names = {"marked": b"123", "unmarked": b"1234", nasty: b"12"}
    for name, data in names.items():
        (wd / "files" / "a" / name).write_bytes(data)
    mark = mark_mtime("ab" * 32)
    for name in ("marked", nasty):
        os.utime(wd / "files" / "a" / name, (mark, mark))
    checks = [
        PushCheck("files/a/marked", 3, mark),
        PushCheck("files/a/unmarked", 4, mark),
        PushCheck("files/a/absent", 1, mark),
        PushCheck("files/link/x", 5, mark),
        PushCheck("files/dir", 0, mark),
        PushCheck(f"files/a/{nasty}", 2, mark),
        PushCheck("files/a/marked", 4, mark),  # the right mark, another size
    ]
    got = sh(with_exit_status(file_states_script(str(wd), checks)))
    out, status = split_exit_status(got.stdout.decode())
    assert status == 0, got
    assert out.count("EDGECAL-STAT ") == 4  # one stat, the regular files only
    assert parse_file_states(out, checks) == [
        "verified",
        "unknown",
        "absent",
        "bad",
        "bad",
        "verified",
        "unknown",
    ]
    # a file gone between the look and its stat (one line short): the figures of the next
    # file are never taken for its own
    two = [PushCheck("files/a/gone", 3, mark), PushCheck("files/a/marked", 3, mark)]
    short = f"EDGECAL-STATE 0 file\nEDGECAL-STATE 1 file\nEDGECAL-STAT 3 {mark}\n"
    assert parse_file_states(short, two) == ["unknown", "unknown"]


# -- phone facts ---------------------------------------------------------------------------------
CPUINFO = """processor\t: 0
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimdrdm asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd05

processor\t: 4
CPU part\t: 0xd0b

processor\t: 7
CPU part\t: 0xd44
"""

PERCPU = """cpu0 cap=261 max=1804800 smax=1804800 online=1
cpu1 cap=261 max=1804800 smax=1804800 online=1
cpu2 cap=261 max=1804800 smax=1804800 online=1
cpu3 cap=261 max=1804800 smax=1804800 online=1
cpu4 cap=871 max=2419200 smax=1497600 online=1
cpu5 cap=871 max=2419200 smax=2419200 online=1
cpu6 cap=871 max=2419200 smax=2419200 online=0
cpu7 cap=1024 max=2841600 smax=2841600 online=1
"""


def test_cores_group_into_big_mid_and_little_by_capacity() -> None:
    parts = cpu_parts(CPUINFO.splitlines())
    assert parts == {0: "cortex-a55", 4: "cortex-a76", 7: "cortex-x1"}
    cores = parse_cores(PERCPU.splitlines(), parts)
    assert [c.cpu for c in cores] == list(range(8)) and not cores[6].online
    got = clusters(cores)
    assert [(c.kind, c.cpus, c.part) for c in got] == [
        ("big", (7,), "cortex-x1"),
        ("mid", (4, 5, 6), "cortex-a76"),
        ("little", (0, 1, 2, 3), "cortex-a55"),
    ]


def test_without_capacity_the_max_frequency_orders_the_clusters() -> None:
    lines = ["cpu0 cap= max=1800000", "cpu1 cap= max=2400000", "cpu2 cap= max=1800000"]
    got = clusters(parse_cores(lines, {}))
    assert [(c.kind, c.cpus) for c in got] == [("big", (1,)), ("little", (0, 2))]
    assert [c.kind for c in clusters(parse_cores(["cpu0 cap= max=", "cpu1 cap= max="], {}))] == [
        "all"
    ]


def test_screen_state_from_dumpsys_power() -> None:
    assert parse_power(["  mWakefulness=Asleep", "Display Power: state=OFF"]) == "off"
    assert parse_power(["  mWakefulness=Awake"]) == "on"
    assert parse_power(["Display Power: state=DOZE"]) == "dozing"
    assert parse_power([]) is None


def test_hot_zones_and_busy_cpu_cooling_devices_count_as_throttling() -> None:
    hot, cooling = parse_thermal(
        [
            "zone cpu-1-0-usr 81000",
            "zone battery 35000",
            "zone bogus notanumber",
            "cool thermal-cpufreq-0 3 10",
            "cool thermal-cpufreq-1 0 10",
            "cool fan 2 5",
        ]
    )
    assert hot == [("cpu-1-0-usr", 81000)]
    assert cooling == [("thermal-cpufreq-0", 3, 10)]


def probe_output(extra: str = "") -> str:
    return (
        "EDGECAL-SHPROBE 1\n== machine\naarch64\n== cores\n8\n== cpuinfo\n"
        + CPUINFO
        + "== meminfo\nMemTotal: 7800000 kB\nMemAvailable: 3000000 kB\n"
        + "== df\n/dev/block/dm-5 100000000 50000000 40000000 56% /data\n"
        + "== workdir\nwritable\n== python\n== end\n"
        + "== props\nro.product.manufacturer=Google\nro.product.model=Pixel 6\n"
        + "ro.build.version.release=14\nro.build.version.sdk=34\nro.product.cpu.abi=arm64-v8a\n"
        + "ro.soc.model=\n== percpu\n"
        + PERCPU
        + "== power\nDisplay Power: state=ON\n== thermal\nzone cpu 40000\n"
        + "== taskset\n/system/bin/taskset\n"
        + extra
        + "== done\n"
    )


def test_the_phone_probe_reads_model_android_abi_and_the_shell_probes_facts() -> None:
    f = parse_phone_probe(probe_output())
    assert (f.model, f.android, f.abi, f.machine) == (
        "Google Pixel 6",
        "14 (API 34)",
        "arm64-v8a",
        "aarch64",
    )
    assert f.big_cpus == (7,) and f.taskset and f.screen == "on"
    assert f.throttled == ["cpu 4 capped at 1497 MHz"]
    facts = f.board_facts()
    assert facts.python is None and facts.get("phone") is True
    assert facts.get("disk_free") == 40000000 * 1024 and facts.get("workdir_writable")
    assert "asimddp" in facts.get("cpu_features")
    assert facts.get("soc") is None  # an empty property is no fact


def test_a_probe_that_did_not_run_is_no_facts() -> None:
    f = parse_phone_probe("sh: not found\n", 127)
    assert f.machine == "" and not f.board_facts().facts.get("machine")
    assert "did not run" in str(f.board_facts().python_error)


# -- boards file and --device ---------------------------------------------------------------------
def boards(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "boards.toml"
    p.write_text("schema = 1\n" + text)
    return p


def test_a_phone_entry_and_its_defaults(tmp_path: Path) -> None:
    p = boards(
        tmp_path,
        '[boards.phone1]\ntransport = "adb"\nserial = "127.0.0.1:7101"\n'
        '[boards.usb]\ntransport = "adb"\nserial = "R5CT1234ABC"\nworkdir = "ec"\n'
        'connect_timeout_s = 3\nadb_server = "lab7:5038"\n',
    )
    got = load_boards(p)
    assert (got["phone1"].adb_server, got["usb"].adb_server) == (None, "lab7:5038")
    assert (adb_target(got["usb"]).server_host, adb_target(got["usb"]).server_port) == (
        "lab7",
        5038,
    )
    assert got["phone1"].transport == "adb" and got["phone1"].serial == "127.0.0.1:7101"
    assert got["phone1"].workdir == "/data/local/tmp/edgecal" and got["phone1"].agent == "native"
    assert phone_workdir(got["usb"].workdir) == "/data/local/tmp/ec"
    assert got["usb"].connect_timeout_s == 3.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('transport = "adb"\n', "'serial' is missing"),
        ('transport = "adb"\nserial = "a b"\n', "'serial'"),
        ('transport = "adb"\nserial = 5\n', "'serial' must be a str"),
        ('transport = "adb"\nserial = "x"\nhost = "h"\n', "'host' is not used by transport"),
        ('transport = "adb"\nserial = "x"\nagent = "python"\n', "'agent'"),
        ('transport = "adb"\nserial = "x"\nworkdir = "../x"\n', "'workdir'"),
        ('transport = "usb"\nserial = "x"\n', "'transport' must be one of ssh, adb"),
        ('transport = "adb"\nserial = "x"\nadb_server = "lab7"\n', "'adb_server' 'lab7' is not"),
        ('transport = "adb"\nserial = "x"\nadb_server = "h:0"\n', "'adb_server' 'h:0' is not"),
        ('transport = "adb"\nserial = "x"\nadb_server = "::1:5037"\n', "in brackets"),
    ],
)
def test_a_bad_phone_entry_names_file_board_and_key(tmp_path: Path, text: str, key: str) -> None:
    p = boards(tmp_path, "[boards.ph]\n" + text)
    with pytest.raises(ConfigError) as info:
        load_boards(p)
    assert str(p) in str(info.value) and "[boards.ph]" in str(info.value)
    assert key in str(info.value)


def test_an_ipv6_adb_server_keeps_its_brackets(tmp_path: Path) -> None:
    """``adb_server = "[v6]:PORT"`` is accepted, and ``adb -H`` gets the address in brackets:
    adb 29 reads ``-H ::1`` as ``tcp:::1:PORT`` and fails, ``-H [::1]`` works (tried)."""
    p = boards(
        tmp_path, '[boards.ph]\ntransport = "adb"\nserial = "X"\nadb_server = "[fd00::7]:5038"\n'
    )
    target = adb_target(load_boards(p)["ph"])
    assert target.server_args == ["-H", "[fd00::7]", "-P", "5038"] and not target.is_tcp


def test_device_adb_serial_needs_no_boards_file() -> None:
    b = resolve_board("adb:127.0.0.1:7101", None)
    assert b is not None and b.transport == "adb" and b.serial == "127.0.0.1:7101"
    assert AdbTarget(b.name, "127.0.0.1:7101").is_tcp and not AdbTarget("x", "R5CT12").is_tcp
    # at another host's adb server: never `adb connect`-ed here, -H/-P on every call
    remote = AdbTarget("x", "127.0.0.1:7102", server_host="lab7", server_port=5038)
    assert not remote.is_tcp and remote.server_args == ["-H", "lab7", "-P", "5038"]
    assert AdbTarget("x", "R5CT12").server_args == []
    with pytest.raises(UsageError):
        resolve_board("adb:", None)
    with pytest.raises(UsageError):
        resolve_board("adb:a;b", None)


def test_adb_is_found_on_path_or_in_the_sdk(tmp_path: Path) -> None:
    sdk = tmp_path / "sdk"
    (sdk / "platform-tools").mkdir(parents=True)
    adb = sdk / "platform-tools" / "adb"
    adb.write_text("#!/bin/sh\n")
    adb.chmod(0o755)
    assert find_adb({"PATH": str(tmp_path / "none"), "ANDROID_HOME": str(sdk)}) == str(adb)
    assert find_adb({"PATH": "", "ANDROID_SDK_ROOT": str(sdk)}) == str(adb)
    assert find_adb({"PATH": str(sdk / "platform-tools")}) == str(adb)
    with pytest.raises(BoardSetupError) as info:
        find_adb({"PATH": str(tmp_path / "none")})
    assert "ANDROID_HOME" in str(info.value)


def test_a_workdir_outside_a_folder_of_its_own_is_refused() -> None:
    with pytest.raises(BoardSetupError):
        AdbDevice(AdbTarget("p", "127.0.0.1:1"), workdir="/data/local/tmp")
    with pytest.raises(BoardSetupError):
        AdbDevice(AdbTarget("p", "127.0.0.1:1"), workdir="/data/local/tmp/../../system")


def test_the_profile_affinity_pins_the_agent_to_a_cluster() -> None:
    f = parse_phone_probe(probe_output())
    assert pinned_cpus(f, "big") == (7,) and taskset_mask((7,)) == "80"
    assert pinned_cpus(f, "little") == (0, 1, 2, 3) and taskset_mask((0, 1, 2, 3)) == "f"
    assert pinned_cpus(f, "all") == ()
    alike = parse_phone_probe(probe_output().replace(PERCPU, "cpu0 cap=1024\ncpu1 cap=1024\n"))
    assert pinned_cpus(alike, "big") == () and taskset_mask((4, 5, 6, 7)) == "f0"
