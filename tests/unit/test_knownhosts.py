"""known_hosts parsing and host matching as OpenSSH does it (edgecal.device.ssh.knownhosts), checked
against the rules of sshd(8) and, for the pattern matching, against ``ssh-keygen -F`` itself."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecal.device.ssh.config import alias_matches, host_patterns, is_ssh_alias
from edgecal.device.ssh.knownhosts import (
    check_host_key,
    hash_name,
    host_matches,
    known_hosts_name,
    known_key_types,
    parse_known_hosts,
)


def blob(keytype: str, payload: bytes) -> bytes:
    name = keytype.encode()
    return struct.pack(">I", len(name)) + name + struct.pack(">I", len(payload)) + payload


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


KEY_A = blob("ssh-ed25519", b"A" * 32)
KEY_B = blob("ssh-ed25519", b"B" * 32)
KEY_R = blob("ssh-rsa", b"R" * 64)


def line(hosts: str, key: bytes = KEY_A, marker: str = "", keytype: str = "ssh-ed25519") -> str:
    return f"{marker + ' ' if marker else ''}{hosts} {keytype} {b64(key)} a comment"


# -- parsing -------------------------------------------------------------------------------------
def test_markers_are_parsed_not_crashed_on() -> None:
    text = "\n".join(
        [
            "# comment",
            "",
            "   ",
            line("*", KEY_B, "@revoked"),
            line("*.example.org", KEY_B, "@cert-authority"),
            line("board", KEY_A),
            line("odd", KEY_A, "@unknown-marker"),  # ssh skips it
            "bad ssh-ed25519 !!!notbase64!!!",  # ssh skips it
            f"mismatch ssh-rsa {b64(KEY_A)}",  # blob type is not the line's type
            "short ssh-ed25519",
        ]
    )
    lines = parse_known_hosts(text, "/kh")
    assert [(ln.lineno, ln.marker, ln.hosts) for ln in lines] == [
        (4, "revoked", "*"),
        (5, "cert-authority", "*.example.org"),
        (6, None, "board"),
    ]
    assert lines[0].where == "/kh line 4"


# -- matching ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hosts", "name", "want"),
    [
        ("board", "board", True),
        ("BOARD", "board", True),  # case-insensitive
        ("board", "Board", True),
        ("other,board", "board", True),
        ("boar", "board", False),
        ("*", "anything", True),
        ("*.lan", "pi.lan", True),
        ("*.lan", "pi.lan.evil", False),
        ("pi?.lan", "pi4.lan", True),
        ("pi?.lan", "pi.lan", False),
        ("*.lan,!evil.lan", "evil.lan", False),  # a negated match wins
        ("!evil.lan,*.lan", "evil.lan", False),
        ("!evil.lan", "good.lan", False),  # only negations: never a match
        ("[127.0.0.1]:2222", "[127.0.0.1]:2222", True),
        ("127.0.0.1", "[127.0.0.1]:2222", False),  # a port other than 22 is part of the name
        ("[127.0.0.1]:2222", "127.0.0.1", False),
        ("[127.0.0.1]:*", "[127.0.0.1]:2222", True),
        ("[127.0.0.?]:22*", "[127.0.0.5]:2299", True),
        ("*", "[127.0.0.1]:2222", True),
    ],
)
def test_host_patterns(hosts: str, name: str, want: bool) -> None:
    assert host_matches(hosts, name) is want


def test_known_hosts_name() -> None:
    assert known_hosts_name("h", 22) == "h"
    assert known_hosts_name("h", None) == "h"
    assert known_hosts_name("h", 2222) == "[h]:2222"


NAMES = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True)
PORTS = st.one_of(st.none(), st.integers(1, 65535))


@given(
    host=NAMES, port=PORTS, other=NAMES, other_port=PORTS, salt=st.binary(min_size=20, max_size=20)
)
def test_hashed_entry_matches_exactly_when_the_plain_entry_does(
    host: str, port: int | None, other: str, other_port: int | None, salt: bytes
) -> None:
    plain = known_hosts_name(host, port)
    hashed = hash_name(plain, salt)
    for query in (
        plain,
        plain.upper(),
        known_hosts_name(other, other_port),
        known_hosts_name(host, other_port),
        known_hosts_name(other, port),
    ):
        assert host_matches(hashed, query) == host_matches(plain, query)
    assert host_matches(hashed, plain)


def test_hash_name_is_what_ssh_keygen_writes(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    kh = tmp_path / "kh"
    kh.write_text(line("[board.lan]:2222") + "\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    (hashed,) = parse_known_hosts(kh.read_text(), str(kh))
    assert hashed.hosts.startswith("|1|")
    assert host_matches(hashed.hosts, "[board.lan]:2222")
    assert host_matches(hashed.hosts, "[BOARD.lan]:2222")
    assert not host_matches(hashed.hosts, "board.lan")
    salt = base64.b64decode(hashed.hosts.split("|")[2])
    assert hash_name("[board.lan]:2222", salt) == hashed.hosts


PATTERN = st.from_regex(r"!?[ab*?.]{1,5}", fullmatch=True)


@given(
    patterns=st.lists(PATTERN, min_size=1, max_size=3),
    name=st.from_regex(r"[ab][ab.]{0,5}", fullmatch=True),
)
def test_patterns_match_as_ssh_keygen_finds_them(
    tmp_path_factory: pytest.TempPathFactory, patterns: list[str], name: str
) -> None:
    """The real OpenSSH: ``ssh-keygen -F NAME`` prints the lines that match NAME."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    kh = tmp_path_factory.mktemp("kh") / "known_hosts"
    hosts = ",".join(patterns)
    kh.write_text(line(hosts) + "\n")
    res = subprocess.run(["ssh-keygen", "-F", name, "-f", str(kh)], capture_output=True, text=True)
    found = b64(KEY_A) in res.stdout
    assert host_matches(hosts, name) == found, (hosts, name, res.stdout, res.stderr)


# -- verdicts ------------------------------------------------------------------------------------
def lines_of(*text: str) -> list:  # type: ignore[type-arg]
    return parse_known_hosts("\n".join(text), "/kh")


def test_verdicts() -> None:
    name = "[10.0.0.7]:2222"
    ok = lines_of(line("[10.0.0.*]:*", KEY_A))
    assert check_host_key(ok, name, "ssh-ed25519", KEY_A).status == "ok"
    v = check_host_key(ok, name, "ssh-ed25519", KEY_B)
    assert v.status == "changed" and v.line is not None and v.line.lineno == 1
    # a revoked key is refused even where a plain line has it
    rev = lines_of(line(name, KEY_A), line("*", KEY_A, "@revoked"))
    v = check_host_key(rev, name, "ssh-ed25519", KEY_A)
    assert v.status == "revoked" and v.line is not None and v.line.lineno == 2
    # a revocation of another host's key does not matter here
    other = lines_of(line("elsewhere", KEY_A, "@revoked"), line(name, KEY_A))
    assert check_host_key(other, name, "ssh-ed25519", KEY_A).status == "ok"
    # only a CA: the plain key is not known through it
    ca = lines_of(line("*", KEY_A, "@cert-authority"))
    assert check_host_key(ca, name, "ssh-ed25519", KEY_A).status == "ca-only"
    assert check_host_key(ca, "x", "ssh-ed25519", KEY_B).status == "ca-only"
    # a host with a key of another type only: not unknown (never accepted as new)
    rsa = lines_of(line(name, KEY_R, keytype="ssh-rsa"))
    v = check_host_key(rsa, name, "ssh-ed25519", KEY_A)
    assert v.status == "changed" and v.line is not None and v.line.keytype == "ssh-rsa"
    # a negated pattern leaves the host unknown
    neg = lines_of(line("*,![10.0.0.7]:2222", KEY_B))
    assert check_host_key(neg, name, "ssh-ed25519", KEY_A).status == "unknown"
    assert check_host_key([], name, "ssh-ed25519", KEY_A).status == "unknown"


def test_known_key_types_skip_revoked_and_ca() -> None:
    lines = lines_of(
        line("h", KEY_R, keytype="ssh-rsa"),
        line("*", KEY_R, "@revoked", keytype="ssh-rsa"),
        line("h", KEY_A),
        line("*", KEY_B, "@cert-authority"),
    )
    assert known_key_types(lines, "h") == ["ssh-ed25519"]


# -- ssh_config aliases --------------------------------------------------------------------------
def test_ssh_config_alias(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text(
        "# Host commented\nHost *\n  User me\nHost myboard pi-*.lan !pi-x.lan\n"
        '  HostName 10.0.0.7\nhost="quoted"\n'
    )
    assert host_patterns(cfg.read_text()) == [
        ["*"],
        ["myboard", "pi-*.lan", "!pi-x.lan"],
        ["quoted"],
    ]
    files = [str(cfg), str(tmp_path / "missing")]
    assert is_ssh_alias("myboard", files)
    assert is_ssh_alias("MyBoard", files)
    assert is_ssh_alias("pi-4.lan", files)
    assert is_ssh_alias("quoted", files)
    assert not is_ssh_alias("pi-x.lan", files)
    assert not is_ssh_alias("commented", files)
    assert not is_ssh_alias("typo", files)  # `Host *` alone matches every typo
    assert not alias_matches("x", ["*"])
