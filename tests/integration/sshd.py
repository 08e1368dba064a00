"""A disposable OpenSSH server on 127.0.0.1 for the SSH tests (the "board" is this host).

``LoopbackSshd.start(dir)``: fresh ed25519 host and client keys (``ssh-keygen``), its own
sshd_config (``ListenAddress 127.0.0.1``, a free port, ``Subsystem sftp internal-sftp``,
``UsePAM no``, ``PasswordAuthentication no``, ``StrictModes no``), validated with ``sshd -t``,
started in the foreground (``-D``) and waited for until it sends its banner.  Logs in as the
current user with the client key.  Installs openssh-server with apt-get when sshd is missing
and the tests run as root (CI); otherwise :func:`sshd_unavailable` says why it cannot run.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_openssh() -> str | None:
    """None when sshd and ssh-keygen are there (installed if root and missing), else why not."""
    if os.path.exists(SSHD) and shutil.which("ssh-keygen"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "sshd is not installed (apt-get install openssh-server openssh-client)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client"],
        check=False,
        env=env,
        timeout=900,
    )
    return None if os.path.exists(SSHD) else "apt-get could not install openssh-server"


def keygen(path: Path, comment: str, kind: str = "ed25519") -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    return Path(f"{path}.pub").read_text()


@dataclass
class LoopbackSshd:
    dir: Path
    port: int
    user: str
    host_pub: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    known_hosts: Path  # holds this server's key
    ssh_config: Path  # an empty ssh_config: tests do not depend on ~/.ssh/config
    proc: subprocess.Popen[bytes]

    host = "127.0.0.1"

    #: "ssh-rsa AAAA..." when started with ``rsa_host_key=True`` (a second host key)
    rsa_host_pub: str = ""

    @classmethod
    def start(cls, dir: Path, *, rsa_host_key: bool = False) -> LoopbackSshd:
        dir.mkdir(parents=True, exist_ok=True)
        os.chmod(dir, 0o755)
        for f in (
            "host_ed25519",
            "host_ed25519.pub",
            "id_ed25519",
            "id_ed25519.pub",
            "host_rsa",
            "host_rsa.pub",
        ):
            with contextlib.suppress(FileNotFoundError):
                (dir / f).unlink()
        host_pub = " ".join(keygen(dir / "host_ed25519", "edgecal-test-host").split()[:2])
        client_pub = keygen(dir / "id_ed25519", "edgecal-test-client")
        rsa_pub = (
            " ".join(keygen(dir / "host_rsa", "edgecal-test-host", "rsa").split()[:2])
            if rsa_host_key
            else ""
        )
        (dir / "authorized_keys").write_text(client_pub)
        os.chmod(dir / "authorized_keys", 0o600)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        user = getpass.getuser()
        port = _free_port()
        conf = dir / "sshd_config"
        conf.write_text(
            f"ListenAddress 127.0.0.1:{port}\n"
            f"HostKey {dir / 'host_ed25519'}\n"
            + (f"HostKey {dir / 'host_rsa'}\n" if rsa_host_key else "")
            + f"PidFile {dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {dir / 'authorized_keys'}\n"
            "AuthenticationMethods publickey\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {user}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "ClientAliveInterval 5\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
        )
        subprocess.run([SSHD, "-t", "-f", str(conf)], check=True, capture_output=True)
        proc = subprocess.Popen([SSHD, "-D", "-f", str(conf), "-E", str(dir / "sshd.log")])
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (dir / "sshd.log").read_text() if (dir / "sshd.log").exists() else ""
                raise RuntimeError(f"sshd did not start: {log[-2000:]}")
            time.sleep(0.05)
        known = dir / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
        ssh_config = dir / "ssh_config"
        ssh_config.write_text("")
        server = cls(dir, port, user, host_pub, dir / "id_ed25519", known, ssh_config, proc)
        server.rsa_host_pub = rsa_pub
        return server

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
