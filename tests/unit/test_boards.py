"""Boards files and board profiles: parsing, validation, errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.boards.config import PROFILES_DIR, load_boards, load_profile, resolve_board
from edgecal.errors import ConfigError, UsageError

PROFILES = [
    "generic-aarch64",
    "raspberry-pi-3",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "jetson-nano",
    "jetson-orin",
    "rk3588",
    "emulated-pi4",
    "emulated-pi5",
    "emulated-phone-a76",
    "phone-big-a76",
    "phone-little-a55",
]
PHONE_PROFILES = ["emulated-phone-a76", "phone-big-a76", "phone-little-a55"]
ARMV7_PROFILES = [
    "emulated-armv7",
    "raspberry-pi-2",
    "raspberry-pi-3-armv7",
    "raspberry-pi-4-armv7",
]

EXAMPLE = """schema = 1
[boards.emu1]
host = "127.0.0.1"
port = 2222
user = "pi"
identity_file = "/srv/edgecal-boards/ssh/id_ed25519"
known_hosts = "ssh/known_hosts"
profile = "emulated-pi4"
workdir = ".cache/edgecal"
connect_timeout_s = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "boards.toml"
    p.write_text(text)
    return p


def test_example_boards_file(tmp_path: Path) -> None:
    boards = load_boards(write(tmp_path, EXAMPLE))
    b = boards["emu1"]
    assert (b.host, b.port, b.user, b.profile, b.workdir) == (
        "127.0.0.1",
        2222,
        "pi",
        "emulated-pi4",
        ".cache/edgecal",
    )
    assert b.identity_file == "/srv/edgecal-boards/ssh/id_ed25519"
    assert b.known_hosts == str(tmp_path / "ssh" / "known_hosts")  # relative to the file
    assert b.connect_timeout_s == 3.0 and b.command_timeout_s == 3600.0
    assert b.python == "python3"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("schema = 2\n", "'schema' is 2"),
        ("[boards.x]\nhost='h'\n", "'schema' is None"),
        ("schema = 1\n[boards.x]\nport = 22\n", "[boards.x]: key 'host' is missing"),
        ("schema = 1\n[boards.x]\nhost = 'h'\nport = '22'\n", "key 'port' must be a int"),
        ("schema = 1\n[boards.x]\nhost = 'h'\nport = 70000\n", "key 'port' must be 1..65535"),
        ("schema = 1\n[boards.x]\nhost = 'h'\nhots = 'h'\n", "unknown key 'hots'"),
        ("schema = 1\n[boards.x]\nhost = 'h'\nworkdir = '../up'\n", "key 'workdir'"),
        ("schema = 1\n[boards.local]\nhost = 'h'\n", "'local' is not allowed"),
        ("schema = 1\nboard = 1\n", "unknown top-level key 'board'"),
        ("schema = 1\n[boards.x\n", "not valid TOML"),
    ],
)
def test_boards_file_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_boards(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_missing_boards_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_boards(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_loads(name: str) -> None:
    p = load_profile(name)
    assert p.name == name and p.arch == "aarch64" and p.threads >= 1
    assert p.source == PROFILES_DIR / f"{name}.toml"
    fp16 = "asimdhp" in p.cpu_features
    assert p.runtime.fp16_arithmetic == fp16 and p.runtime.fp16_storage == fp16
    assert "i8mm" not in p.cpu_features


@pytest.mark.parametrize("name", PHONE_PROFILES)
def test_phone_profiles(name: str) -> None:
    """Phones: no Python (the native agent), ARMv8.2 cores with fp16 arithmetic and dot
    product; pinned to the big cluster (the little one for phone-little-a55)."""
    p = load_profile(name)
    assert p.python is None and p.agent == "native"
    assert {"asimdhp", "asimddp"} <= set(p.cpu_features)
    assert p.affinity == ("little" if name == "phone-little-a55" else "big")


def test_a_profile_with_an_unknown_affinity_is_refused(tmp_path: Path) -> None:
    text = (PROFILES_DIR / "phone-big-a76.toml").read_text().replace('"big"', '"fast"')
    (tmp_path / "phone-big-a76.toml").write_text(text)
    with pytest.raises(ConfigError, match="'affinity' must be one of all, big, little"):
        load_profile("phone-big-a76", tmp_path)


@pytest.mark.parametrize("name", ARMV7_PROFILES)
def test_armv7_profiles(name: str) -> None:
    p = load_profile(name)
    assert p.name == name and p.arch == "armv7" and p.threads >= 1
    assert {"neon", "vfpv4"} <= set(p.cpu_features)
    assert "asimdhp" in p.cpu_features_absent
    # ncnn on armv7: fp16 storage through vfpv4's conversions, never fp16 arithmetic
    assert p.runtime.fp16_storage and not p.runtime.fp16_arithmetic
    assert not p.runtime.bf16_storage
    # no armv7 ncnn wheel: these boards get the native agent (auto picks it without python3)
    assert (p.agent, p.python) in {("native", "3.11"), ("auto", None)}


def test_agent_kind_defaults_and_overrides(tmp_path: Path) -> None:
    assert load_profile("emulated-pi4").agent == "auto"  # no `agent` key: auto
    assert load_profile("emulated-pi4").python == "3.11"
    assert load_profile("emulated-armv7").python is None  # python = "none"
    boards = load_boards(write(tmp_path, EXAMPLE + 'agent = "native"\n'))
    assert boards["emu1"].agent == "native"
    assert load_boards(write(tmp_path, EXAMPLE))["emu1"].agent is None  # the profile's


@pytest.mark.parametrize("where", ["boards", "profile"])
def test_agent_kind_is_validated(tmp_path: Path, where: str) -> None:
    if where == "boards":
        path = write(tmp_path, EXAMPLE + 'agent = "java"\n')
        with pytest.raises(ConfigError) as info:
            load_boards(path)
    else:
        path = tmp_path / "x.toml"
        path.write_text(
            'schema = 1\nname = "x"\narch = "armv7"\nthreads = 1\npython = "none"\nagent = 1\n'
        )
        with pytest.raises(ConfigError) as info:
            load_profile("x", tmp_path)
    assert str(path) in str(info.value) and "key 'agent'" in str(info.value)
    assert where == "profile" or "python, native, auto" in str(info.value)


def test_profile_errors(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text('schema = 1\nname = "x"\narch = "aarch64"\n')
    with pytest.raises(ConfigError, match=r"x\.toml: key 'threads' is missing"):
        load_profile("x", tmp_path)
    (tmp_path / "y.toml").write_text(
        'schema = 1\nname = "y"\narch = "aarch64"\nthreads = 1\n'
        'python = "3.11"\n[runtime]\nfp16 = true\n'
    )
    with pytest.raises(ConfigError, match=r"y\.toml: \[runtime\]: unknown key 'fp16'"):
        load_profile("y", tmp_path)
    with pytest.raises(ConfigError, match="known profiles: x, y"):
        load_profile("z", tmp_path)


def test_resolve_board(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    assert resolve_board(None, path) is None and resolve_board("local", path) is None
    assert resolve_board("emu1", path).port == 2222  # type: ignore[union-attr]
    b = resolve_board("pi@192.0.2.7:2200", None)
    assert b is not None and (b.user, b.host, b.port) == ("pi", "192.0.2.7", 2200)
    b = resolve_board("root@[::1]:22", None)
    assert b is not None and b.host == "::1"
    with pytest.raises(UsageError, match="unknown device 'emu9'"):
        resolve_board("emu9", path)
    with pytest.raises(UsageError, match="no boards file"):
        resolve_board("emu1", None)
