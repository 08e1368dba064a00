"""SSH as OpenSSH users expect it, against the real loopback sshd (tests/integration/sshd.py):
known_hosts markers and patterns, identity_file as IdentitiesOnly, the fixes printed for key and
banner problems, a ``~/.ssh/config`` alias as ``--device``, and no secret in ``--debug``.

Every CLI test runs with ``HOME`` pointing at an empty folder and no ssh-agent, as in
test_ssh_loopback.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.sshd import LoopbackSshd, keygen
from tests.integration.test_ssh_loopback import (
    BOARD,
    assert_one_line_error,
    run_cli,
    write_boards,
)

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("EDGECAL_BOARDS", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return h


def other_pub(tmp_path: Path, name: str = "impostor") -> str:
    """``ssh-ed25519 AAAA...`` of a fresh key that is not the server's."""
    return " ".join(keygen(tmp_path / name, name).split()[:2])


def cli_process(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m edgecal ARGV`` in a process of its own (its logging as the CLI sets it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGECAL_BOARDS", "SSH_AUTH_SOCK")}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "edgecal", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def hello(capsys: pytest.CaptureFixture[str], boards: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "hello", "--device", BOARD, "--boards", str(boards), *extra)


# -- known_hosts ---------------------------------------------------------------------------------
def test_marker_lines_do_not_crash(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """@revoked / @cert-authority lines for other keys and hosts, in the board's and the user's
    known_hosts: the connection works (paramiko's reader raised InvalidHostKey on them)."""
    kh = tmp_path / "kh"
    kh.write_text(
        f"@revoked * {other_pub(tmp_path, 'old')}\n"
        f"@cert-authority *.example.org {other_pub(tmp_path, 'ca')}\n"
        + loopback_sshd.known_hosts.read_text()
    )
    (home / ".ssh" / "known_hosts").write_text(f"@revoked * {other_pub(tmp_path, 'old2')}\n")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = hello(capsys, boards, "--json")
    assert code == 0, err
    assert "Traceback" not in err


def test_known_hosts2_is_read(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """~/.ssh/known_hosts2 is one of ssh's default UserKnownHostsFile files."""
    (home / ".ssh" / "known_hosts2").write_text(loopback_sshd.known_hosts.read_text())
    empty = tmp_path / "kh"
    empty.write_text("")
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(empty)
    )
    code, _, err = hello(capsys, boards)
    assert code == 0, err


@pytest.fixture(scope="module")
def two_key_sshd(
    tmp_path_factory: pytest.TempPathFactory, loopback_sshd: LoopbackSshd
) -> Iterator[LoopbackSshd]:
    """A second loopback sshd with an ed25519 and an RSA host key."""
    server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd2"), rsa_host_key=True)
    yield server
    server.stop()


def test_the_known_key_type_is_asked_for(
    two_key_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """known_hosts has only the board's RSA key (through a wildcard): the server is asked
    for RSA first, as ssh does, and the connection works; its ed25519 key is never offered
    as a "changed" key."""
    kh = tmp_path / "kh"
    kh.write_text(f"[127.0.0.1]:* {two_key_sshd.rsa_host_pub}\n")
    boards = write_boards(tmp_path / "b.toml", two_key_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = hello(capsys, boards)
    assert code == 0, err


def test_revoked_key_is_refused(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kh = tmp_path / "kh"
    kh.write_text(loopback_sshd.known_hosts.read_text() + f"@revoked * {loopback_sshd.host_pub}\n")
    before = kh.read_text()
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    for extra in ([], ["--accept-new-host-key"]):
        code, _, err = hello(capsys, boards, *extra)
        assert_one_line_error(code, err, "REVOKED", f"{kh} line 2", "ssh-keygen -A")
    assert kh.read_text() == before


def test_cert_authority_only_says_certificates_are_not_supported(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kh = tmp_path / "kh"
    kh.write_text(f"@cert-authority [127.0.0.1]:* {other_pub(tmp_path, 'ca')}\n")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = hello(capsys, boards)
    assert_one_line_error(
        code,
        err,
        "@cert-authority",
        f"{kh} line 1",
        "does not support host certificates",
        "--accept-new-host-key",
    )


@pytest.mark.parametrize("pattern", ["[127.0.0.1]:*", "*", "[127.0.0.?]:*,!other", "hashed"])
def test_wildcard_and_hashed_entries_match(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    pattern: str,
) -> None:
    kh = tmp_path / "kh"
    if pattern == "hashed":
        kh.write_text(loopback_sshd.known_hosts.read_text())
        subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
        assert kh.read_text().startswith("|1|")
    else:
        kh.write_text(f"{pattern} {loopback_sshd.host_pub}\n")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = hello(capsys, boards)
    assert code == 0, err


@pytest.mark.parametrize("pattern", ["[127.0.0.1]:*", "*", "[127.0.0.?]:*", "hashed"])
def test_accept_new_cannot_override_a_wildcard_or_hashed_entry(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    pattern: str,
) -> None:
    """A pattern or hashed line gives the host another key: the offered key is a CHANGED key,
    refused with or without --accept-new-host-key, and nothing is recorded."""
    kh = tmp_path / "kh"
    kh.write_text(
        f"{'[127.0.0.1]:' + str(loopback_sshd.port) if pattern == 'hashed' else pattern}"
        f" {other_pub(tmp_path)}\n"
    )
    if pattern == "hashed":
        subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    before = kh.read_text()
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    for extra in ([], ["--accept-new-host-key"]):
        code, _, err = hello(capsys, boards, *extra)
        assert_one_line_error(code, err, "CHANGED", f"{kh} line 1")
    assert kh.read_text() == before
    assert not (home / ".ssh" / "known_hosts").exists()


def test_accept_new_records_past_a_negated_pattern(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``*,![127.0.0.1]:PORT`` does not name this host: it is new, and is recorded."""
    kh = tmp_path / "kh"
    kh.write_text(f"*,![127.0.0.1]:{loopback_sshd.port} {other_pub(tmp_path)}\n")
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = hello(capsys, boards)
    assert_one_line_error(code, err, "unknown")
    code, _, err = hello(capsys, boards, "--accept-new-host-key")
    assert code == 0, err
    recorded = kh.read_text().splitlines()[1]  # hashed where ssh_config says HashKnownHosts
    assert recorded.endswith(f" {loopback_sshd.host_pub}")
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{loopback_sshd.port}", "-f", str(kh)],
        capture_output=True,
        text=True,
    )
    assert loopback_sshd.host_pub in found.stdout  # OpenSSH finds it for this host
    assert hello(capsys, boards)[0] == 0


def test_accept_new_hashes_the_name_with_hash_known_hosts(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``HashKnownHosts yes`` in ~/.ssh/config: the recorded name is hashed, as ssh does."""
    (home / ".ssh" / "config").write_text("Host *\n  HashKnownHosts yes\n")
    kh = tmp_path / "kh"
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", known_hosts=str(kh))
    code, _, err = hello(capsys, boards, "--accept-new-host-key")
    assert code == 0, err
    (recorded,) = kh.read_text().splitlines()
    assert recorded.startswith("|1|") and recorded.endswith(loopback_sshd.host_pub)
    assert "127.0.0.1" not in recorded
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{loopback_sshd.port}", "-f", str(kh)],
        capture_output=True,
        text=True,
    )
    assert loopback_sshd.host_pub in found.stdout  # OpenSSH finds it
    assert hello(capsys, boards)[0] == 0


def test_a_refused_connect_leaves_no_connection_open(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path
) -> None:
    """A refused host key or a refused login closes the SSH connection (fabric closes only
    one it saw open): leaked ones are unauthenticated connections the board's sshd counts
    against MaxStartups, and then drops new ones."""
    import paramiko

    from edgecal.device.ssh.device import SshDevice
    from edgecal.device.ssh.link import SshTarget
    from edgecal.errors import TransportError

    def transports() -> set[paramiko.Transport]:
        return {t for t in threading.enumerate() if isinstance(t, paramiko.Transport)}

    before = transports()
    kh = tmp_path / "kh"
    kh.write_text(f"* {other_pub(tmp_path)}\n")
    stranger = tmp_path / "stranger"
    keygen(stranger, "not-authorized")
    base = dict(
        name=BOARD,
        host=loopback_sshd.host,
        port=loopback_sshd.port,
        user=loopback_sshd.user,
        ssh_config=str(loopback_sshd.ssh_config),
        connect_timeout_s=5,
    )
    for over in (
        {"known_hosts": str(kh), "identity_file": str(loopback_sshd.client_key)},
        {"known_hosts": str(loopback_sshd.known_hosts), "identity_file": str(stranger)},
    ):
        with pytest.raises(TransportError):
            SshDevice(SshTarget(**base, **over), workdir=str(tmp_path / "wd"))  # type: ignore[arg-type]
    left = transports() - before
    for t in left:
        t.join(10)
    assert [t for t in left if t.is_alive()] == []


# -- identity_file is the only key ---------------------------------------------------------------
@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent (foreground, stopped after the test); SSH_AUTH_SOCK points at it."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent not installed")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if sock.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.01)
        assert sock.exists(), "ssh-agent did not start"
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        proc.terminate()
        proc.wait()


def ssh_add(key: Path) -> None:
    subprocess.run(
        ["ssh-add", "-q", str(key)], check=True, capture_output=True, env=dict(os.environ)
    )


def test_identity_file_is_the_only_key_tried(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    agent: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The authorized key is in ssh-agent, is ~/.ssh/id_ed25519 and is an IdentityFile of
    ``Host *`` in ~/.ssh/config; the boards file names another key: login is refused."""
    good = loopback_sshd.client_key
    ssh_add(good)
    shutil.copy(good, home / ".ssh" / "id_ed25519")
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    (home / ".ssh" / "config").write_text(f"Host *\n  IdentityFile {good}\n")
    stranger = tmp_path / "stranger"
    keygen(stranger, "not-authorized")
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", identity_file=str(stranger)
    )
    code, _, err = hello(capsys, boards)
    assert_one_line_error(code, err, "authentication refused", str(stranger))
    # the same set-up naming the authorized key works
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd")
    code, _, err = hello(capsys, boards)
    assert code == 0, err


def encrypted_copy(loopback_sshd: LoopbackSshd, tmp_path: Path) -> Path:
    """The authorized key, saved with a passphrase (its .pub beside it)."""
    key = tmp_path / "enc_ed25519"
    shutil.copy(loopback_sshd.client_key, key)
    shutil.copy(f"{loopback_sshd.client_key}.pub", f"{key}.pub")
    os.chmod(key, 0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", "correct horse", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key


def test_encrypted_key_says_use_ssh_agent(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = encrypted_copy(loopback_sshd, tmp_path)
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", identity_file=str(key)
    )
    code, _, err = hello(capsys, boards)
    line = assert_one_line_error(
        code, err, "encrypted", "passphrase", f"ssh-add {key}", f"ssh-keygen -p -f {key}"
    )
    assert "ssh-copy-id" not in line  # the key is installed; installing it is not the fix


def test_encrypted_key_works_through_the_agents_copy(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    agent: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As IdentitiesOnly: ssh-agent's copy of the named key is used (and only that one)."""
    key = encrypted_copy(loopback_sshd, tmp_path)
    ssh_add(loopback_sshd.client_key)  # the same key, unencrypted: what `ssh-add KEY` loads
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", identity_file=str(key)
    )
    code, _, err = hello(capsys, boards)
    assert code == 0, err


def test_encrypted_default_key_names_it(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No identity_file: the authorized key is ~/.ssh/id_ed25519, with a passphrase, and no
    agent runs: the fix names that key and ssh-add (it is installed: not ssh-copy-id)."""
    key = encrypted_copy(loopback_sshd, tmp_path)
    shutil.copy(key, home / ".ssh" / "id_ed25519")
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    (home / ".ssh" / "config").write_text(
        f"Host 127.0.0.1\n  UserKnownHostsFile {loopback_sshd.known_hosts}\n"
    )
    spec = f"{loopback_sshd.user}@127.0.0.1:{loopback_sshd.port}"
    code, _, err = run_cli(capsys, "hello", "--device", spec)
    assert code != 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("edgecal: error:")]
    assert "encrypted" in line and f"ssh-add {home}/.ssh/id_ed25519" in line, line
    assert "ssh-copy-id" not in line, line


def test_missing_identity_file(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boards = write_boards(
        tmp_path / "b.toml",
        loopback_sshd,
        tmp_path / "wd",
        identity_file=str(tmp_path / "no_such_key"),
    )
    code, _, err = hello(capsys, boards)
    assert_one_line_error(code, err, "does not exist", "identity_file", "ssh-keygen")


def test_missing_identity_file_of_ssh_config_is_skipped(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As ssh: an IdentityFile that does not exist is skipped, the next one is used."""
    (home / ".ssh" / "config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {tmp_path / 'gone'}\n"
        f"  IdentityFile {loopback_sshd.client_key}\n"
        f"  UserKnownHostsFile {loopback_sshd.known_hosts}\n"
    )
    spec = f"{loopback_sshd.user}@127.0.0.1:{loopback_sshd.port}"
    _, out, err = run_cli(capsys, "board", "check", spec)
    assert "Traceback" not in err and "cannot reach" not in out + err, out + err
    assert "python " in out  # it connected and probed


def test_no_key_at_all(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No identity_file, no ~/.ssh/id_*, no agent: say so and how to make and install a key."""
    (home / ".ssh" / "config").write_text(
        f"Host 127.0.0.1\n  UserKnownHostsFile {loopback_sshd.known_hosts}\n"
    )
    spec = f"{loopback_sshd.user}@127.0.0.1:{loopback_sshd.port}"
    code, _, err = run_cli(capsys, "hello", "--device", spec)
    assert code != 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("edgecal: error:")]
    for needle in (
        "no SSH key",
        "ssh-keygen -t ed25519",
        f"ssh-copy-id -p {loopback_sshd.port}",
        "identity_file",
    ):
        assert needle in line, line


# -- a silent port -------------------------------------------------------------------------------
@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says anything (not an sshd banner)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(srv.getsockname()[1])
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def test_banner_timeout_names_the_causes(
    loopback_sshd: LoopbackSshd,
    tmp_path: Path,
    home: Path,
    silent_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boards = write_boards(
        tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", port=silent_port, connect_timeout_s=1
    )
    code, _, err = hello(capsys, boards)
    assert_one_line_error(
        code, err, "no SSH banner", f":{silent_port}", "UseDNS", "connect_timeout_s"
    )
    # a real process (the CLI's logging): paramiko's thread adds no traceback of its own
    res = cli_process(home, "hello", "--device", BOARD, "--boards", str(boards))
    assert res.returncode != 0
    assert_one_line_error(res.returncode, res.stderr, "no SSH banner")
    assert res.stderr.count("\n") == 1, res.stderr


# -- ~/.ssh/config alias -------------------------------------------------------------------------
def write_alias(home: Path, sshd: LoopbackSshd, alias: str = "myboard") -> None:
    (home / ".ssh" / "config").write_text(
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n  UserKnownHostsFile {sshd.known_hosts}\n"
    )


def test_ssh_config_alias_as_device(
    loopback_sshd: LoopbackSshd, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--device myboard`` with ``Host myboard`` in ~/.ssh/config and no boards file (the
    board's python3 lacks numpy here, so `board check` says provision: it connected)."""
    write_alias(home, loopback_sshd)
    _, out, err = run_cli(capsys, "board", "check", "myboard")
    assert "Traceback" not in err and "unknown device" not in err, err
    assert f"{loopback_sshd.user}@127.0.0.1:{loopback_sshd.port}" in out
    assert "python " in out


def test_boards_file_name_comes_before_the_alias(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_alias(home, loopback_sshd, alias=BOARD)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", port=closed)
    code, _, err = hello(capsys, boards)
    assert_one_line_error(code, err, "cannot reach", f":{closed}")  # the boards file's port


def test_unknown_name_names_both_places(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / ".ssh" / "config").write_text("Host *\n  User nobody\nHost other\n  Port 2\n")
    boards = tmp_path / "b.toml"
    boards.write_text("schema = 1\n")
    code, _, err = run_cli(capsys, "hello", "--device", "nosuch", "--boards", str(boards))
    assert code != 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("edgecal: error:")]
    assert "'nosuch'" in line and str(boards) in line and "~/.ssh/config" in line, line


# -- --debug keeps secrets -----------------------------------------------------------------------
SECRETS = ("PW-edgecal-secret-1", "PP-edgecal-secret-2", "SUDO-edgecal-secret-3")


@pytest.mark.parametrize("reachable", [True, False], ids=["loopback", "unreachable"])
def test_debug_never_prints_secrets(
    loopback_sshd: LoopbackSshd, tmp_path: Path, home: Path, reachable: bool
) -> None:
    """A ~/.fabric.yaml with a password, a key passphrase and a sudo password: ``--debug``
    output (a real process, logging as configured by the CLI) never contains them."""
    (home / ".fabric.yaml").write_text(
        f"connect_kwargs:\n  password: {SECRETS[0]}\n  passphrase: {SECRETS[1]}\n"
        f"sudo:\n  password: {SECRETS[2]}\n"
    )
    over: dict[str, object] = {}
    if not reachable:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            over["port"] = s.getsockname()[1]
    boards = write_boards(tmp_path / "b.toml", loopback_sshd, tmp_path / "wd", **over)
    res = cli_process(home, "--debug", "hello", "--device", BOARD, "--boards", str(boards))
    assert (res.returncode == 0) is reachable, res.stderr
    assert "edgecal:" in res.stderr or res.stdout  # it did log / answer
    for secret in SECRETS:
        assert secret not in res.stdout + res.stderr
