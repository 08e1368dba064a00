"""``SshLink``: one SSH connection to a board (fabric ``Connection`` over paramiko).

Knows bytes and processes, nothing about calibration or the agent protocol:

* host keys are checked strictly, as ``ssh`` does: the system, user and board ``known_hosts``
  files (and any ``UserKnownHostsFile`` of ``~/.ssh/config``) are read by
  :mod:`edgecal.device.ssh.knownhosts` (``@revoked``, ``@cert-authority``, wildcard and hashed
  host patterns; paramiko's own reader crashes on markers and knows no wildcards) and every
  offered key is judged there (fabric's default ``AutoAddPolicy`` is replaced).  With
  ``accept_new_host_key`` a key of a host that *no* line matches is accepted and recorded; a
  host with any known key (of any type, through any pattern) is never given a new one, and a
  revoked key is always refused;
* ``identity_file`` is the only key tried (as OpenSSH's ``IdentitiesOnly``): no ssh-agent key,
  no ``~/.ssh/id_*``, no ``IdentityFile`` of ``~/.ssh/config`` or fabric's config; an encrypted
  one is used through ssh-agent's copy of that same key (edgecal never asks for passphrases);
* ``~/.ssh/config`` aliases, users, ports and keys are honoured (fabric's ``Config``);
* connect, banner, auth and channel timeouts are always set, and every command has one;
* every remote command is an argv list joined with :func:`shlex.join`: names are data;
* paramiko/invoke exceptions become :class:`~edgecal.errors.TransportError` subclasses that
  name the board and the fix.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from edgecal.device.session import describe_shell_exit
from edgecal.device.ssh.config import SshAddress
from edgecal.device.ssh.knownhosts import (
    KnownHostLine,
    Verdict,
    check_host_key,
    fingerprint_blob,
    hash_name,
    known_key_types,
    parse_known_hosts,
)
from edgecal.device.ssh.knownhosts import known_hosts_name as _kh_name
from edgecal.errors import HostKeyError, TransportError

log = logging.getLogger(__name__)

SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
#: ssh's defaults besides those (ssh_config(5) GlobalKnownHostsFile / UserKnownHostsFile)
OTHER_DEFAULT_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts2", "~/.ssh/known_hosts2")
KEEPALIVE_S = 5.0


@dataclass(frozen=True)
class SshTarget(SshAddress):
    """Where and how to connect."""

    accept_new_host_key: bool = False
    #: an ssh_config file to read instead of ``/etc/ssh/ssh_config`` + ``~/.ssh/config``
    ssh_config: str | None = None


#: What a connection that never reached the board's sshd raises.
_UNREACHABLE = (
    paramiko.ssh_exception.NoValidConnectionsError,
    ConnectionError,
    socket.gaierror,
    OSError,
)
#: What a board that stopped answering raises.
_NO_ANSWER = (socket.timeout, TimeoutError)


@dataclass(frozen=True)
class RunResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def fingerprint(key: paramiko.PKey) -> str:
    """``SSH-ED25519 SHA256:...``, as ``ssh-keygen -l`` prints it."""
    return fingerprint_blob(key.get_name(), key.asbytes())


def known_hosts_name(host: str, port: int) -> str:
    return _kh_name(host, port)


class _HostKeyRefused(paramiko.SSHException):
    """The offered key is not accepted: ``verdict`` says why (unknown, changed, revoked,
    only a certificate authority)."""

    def __init__(self, hostname: str, key: paramiko.PKey, verdict: Verdict) -> None:
        super().__init__(f"host key of {hostname}: {verdict.status}")
        self.hostname = hostname
        self.key = key
        self.verdict = verdict


class _CheckKnownHosts(paramiko.MissingHostKeyPolicy):
    """Every offered key comes here (paramiko's own host-key store stays empty): the
    known_hosts lines decide (:func:`check_host_key`).  ``record_to``: where a key of a host
    that no line matches is accepted and recorded (``--accept-new-host-key``), else None."""

    def __init__(
        self,
        lines: list[KnownHostLine],
        record_to: Path | None,
        board: str,
        hash_names: bool = False,
    ) -> None:
        self.lines = lines
        self.record_to = record_to
        self.board = board
        #: ``HashKnownHosts yes`` in ssh_config: record ``|1|salt|hash`` names
        self.hash_names = hash_names

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        verdict = check_host_key(self.lines, hostname, key.get_name(), key.asbytes())
        if verdict.status == "ok":
            return
        if verdict.status in ("unknown", "ca-only") and self.record_to is not None:
            self._record(hostname, key)
            return
        raise _HostKeyRefused(hostname, key, verdict)

    def _record(self, hostname: str, key: paramiko.PKey) -> None:
        assert self.record_to is not None
        self.record_to.parent.mkdir(parents=True, exist_ok=True)
        name = hash_name(hostname, os.urandom(20)) if self.hash_names else hostname
        text = f"{name} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(self.record_to, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as fh:
            fh.write(text)
        self.lines.extend(parse_known_hosts(text, str(self.record_to)))
        log.warning(
            "%s: accepted the new host key %s of %s and recorded it in %s",
            self.board,
            fingerprint(key),
            hostname,
            self.record_to,
        )


class _ChannelText:
    """One stream of an exec channel: text lines read from stdout/stderr, or text written to
    stdin (unbuffered).  Used instead of paramiko's ``BufferedFile``, whose ``__del__`` flushes
    and, once the channel is gone (a cut link), prints "Exception ignored ... I/O operation on
    closed file" tracebacks at exit."""

    def __init__(self, chan: paramiko.Channel, which: str) -> None:
        self._chan = chan
        self._which = which
        self._recv = chan.recv_stderr if which == "stderr" else chan.recv
        self._buf = b""
        self._eof = False
        self._lock = threading.Lock()

    def readline(self) -> str:
        """The next line with its newline; ``""`` once the stream has ended."""
        with self._lock:
            while b"\n" not in self._buf and not self._eof:
                data = self._recv(32768)
                if data:
                    self._buf += data
                else:
                    self._eof = True
            line, nl, self._buf = self._buf.partition(b"\n")
            return (line + nl).decode("utf-8", "replace")

    def __iter__(self) -> _ChannelText:
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def write(self, text: str) -> int:
        self._chan.sendall(text.encode("utf-8"))
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._which == "stdin":
            with contextlib.suppress(Exception):
                self._chan.shutdown_write()


class ChannelProcess:
    """:class:`edgecal.device.session.AgentProcess` over one SSH exec channel.

    The command runs under two ``sh``: the inner one prints its pid and ``exec``-s ARGV (so the
    pid is the agent's, for :meth:`kill`), the outer one waits and exits with the inner status
    (128 + N when a signal N killed it; SSH itself does not carry that to paramiko).  ARGV is
    passed as ``"$@"``: data, never shell.
    """

    def __init__(self, link: SshLink, argv: Sequence[str], *, startup_timeout_s: float) -> None:
        self._link = link
        self.argv = list(argv)
        inner = 'echo "EDGECAL-PID $$"; exec "$@"'
        outer = f'sh -c {shlex.quote(inner)} edgecal-agent "$@"; exit $?'
        wrapped = ["sh", "-c", outer, "edgecal-wrap", *argv]
        transport = link.transport()
        try:
            self._chan = transport.open_session(timeout=link.target.connect_timeout_s)
            self._chan.exec_command(shlex.join(wrapped))
            self.stdin: IO[str] = _ChannelText(self._chan, "stdin")  # type: ignore[assignment]
            self.stdout: IO[str] = _ChannelText(self._chan, "stdout")  # type: ignore[assignment]
            self.stderr: IO[str] = _ChannelText(self._chan, "stderr")  # type: ignore[assignment]
        except (paramiko.SSHException, OSError, EOFError) as e:
            link.fail(e, "starting the agent")
        self._pid = 0
        first: list[str] = []

        def read_pid() -> None:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                first.append(self.stdout.readline())

        reader = threading.Thread(target=read_pid, daemon=True)
        reader.start()
        reader.join(startup_timeout_s)
        line = first[0].strip() if first else ""
        if line.startswith("EDGECAL-PID "):
            self._pid = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self._pid

    def poll(self) -> int | None:
        if self._chan.exit_status_ready():
            return self._chan.recv_exit_status()
        if self._chan.closed or not self._link.is_active():
            return -1
        return None

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                return code
            time.sleep(0.02)
        raise TimeoutError

    def kill(self) -> None:
        if self._pid and self._link.is_active():
            with contextlib.suppress(TransportError):
                self._link.run(["kill", "-9", str(self._pid)], timeout_s=10.0)
        with contextlib.suppress(Exception):
            self._chan.close()

    @staticmethod
    def describe_exit(code: int) -> str:
        return describe_shell_exit(code, "the SSH channel")


class SshLink:
    """One SSH connection.  Opens on :meth:`connect`; reconnects when the transport is gone."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.name = target.name
        cfg = Config(runtime_ssh_path=target.ssh_config) if target.ssh_config else Config()
        connect_kwargs: dict[str, Any] = {
            "banner_timeout": target.connect_timeout_s,
            "auth_timeout": target.connect_timeout_s,
            "channel_timeout": target.connect_timeout_s,
        }
        self.conn = Connection(
            target.host,
            user=target.user,
            port=target.port,
            config=cfg,
            connect_timeout=max(1, round(target.connect_timeout_s)),
            connect_kwargs=connect_kwargs,
        )
        if target.identity_file:
            # IdentitiesOnly: exactly the board's key.  Set after fabric merged its config's
            # and ~/.ssh/config's IdentityFile keys into key_filename.
            self.conn.connect_kwargs.update(
                key_filename=[os.path.expanduser(target.identity_file)],
                look_for_keys=False,
                allow_agent=False,
            )
            self.conn.connect_kwargs.pop("pkey", None)
        elif str(self.conn.ssh_config.get("identitiesonly", "")).lower() == "yes":
            self.conn.connect_kwargs.update(look_for_keys=False, allow_agent=False)
        self.conn.connect_kwargs["transport_factory"] = self._new_transport
        self._identity_checked = False
        self._sftp: paramiko.SFTPClient | None = None
        #: set when the watchdog closed a silent connection
        self.lost = False
        self._setup_host_keys()

    # -- identity --------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.conn.user}@{self.conn.host}:{self.conn.port}"

    def _setup_host_keys(self) -> None:
        ssh_cfg = self.conn.ssh_config
        system = [SYSTEM_KNOWN_HOSTS, *str(ssh_cfg.get("globalknownhostsfile", "")).split()]
        user = [USER_KNOWN_HOSTS, *str(ssh_cfg.get("userknownhostsfile", "")).split()]
        board_file = os.path.expanduser(self.target.known_hosts or "") or None
        lines: list[KnownHostLine] = []
        files = dict.fromkeys(
            os.path.expanduser(p)
            for p in [*system, *user, *OTHER_DEFAULT_KNOWN_HOSTS, board_file or ""]
            if p
        )
        for path in files:
            if not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as fh:
                    text = fh.read().decode("utf-8", "replace")
            except OSError as e:
                log.warning("%s: cannot read %s: %s", self.name, path, e.strerror or e)
                continue
            lines.extend(parse_known_hosts(text, path))
        self.known_hosts_files = [p for p in files if os.path.isfile(p)]
        self.known_hosts_lines = lines
        record = (
            Path(board_file or os.path.expanduser(USER_KNOWN_HOSTS))
            if self.target.accept_new_host_key
            else None
        )
        # paramiko's own host-key store stays empty: every offered key goes to the policy
        hash_names = str(ssh_cfg.get("hashknownhosts", "")).lower() == "yes"
        self.conn.client.set_missing_host_key_policy(
            _CheckKnownHosts(lines, record, self.name, hash_names)
        )

    def _new_transport(self, sock: Any, disabled_algorithms: Any = None) -> paramiko.Transport:
        """paramiko's Transport, asking the server first for a key type known_hosts has for
        it (as ssh does), so a board with several host keys offers the one we know."""
        t = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
        known = known_key_types(
            self.known_hosts_lines, known_hosts_name(self.conn.host, self.conn.port)
        )
        opts = t.get_security_options()
        have = list(opts.key_types)
        first: list[str] = []
        for kt in known:
            names = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if kt == "ssh-rsa" else (kt,)
            first += [n for n in names if n in have and n not in first]
        if first:
            opts.key_types = first + [n for n in have if n not in first]
        return t

    def _encrypted_key(self) -> str | None:
        """The first encrypted key paramiko tried: an IdentityFile, else ~/.ssh/id_*."""
        given = self.conn.connect_kwargs.get("key_filename") or []
        defaults = [f"~/.ssh/id_{t}" for t in ("rsa", "ecdsa", "ed25519")]
        for path in [*given, *defaults]:
            full = os.path.expanduser(path)
            if os.path.isfile(full) and _key_state(full) == "encrypted":
                return full
        return None

    def _check_identity(self) -> None:
        """The boards file's ``identity_file``: it exists; an encrypted one (edgecal never asks
        for a passphrase) is used through ssh-agent's copy of that same key.  Without one, an
        ``IdentityFile`` of ssh_config that does not exist is skipped, as ssh does (paramiko
        would stop at it with ``FileNotFoundError``)."""
        if self._identity_checked:
            return
        if not self.target.identity_file:
            given = self.conn.connect_kwargs.get("key_filename") or []
            present = [k for k in given if os.path.isfile(os.path.expanduser(k))]
            for k in given:
                if k not in present:
                    log.info("%s: IdentityFile %s does not exist; skipped", self.name, k)
            self.conn.connect_kwargs["key_filename"] = present
            self._identity_checked = True
            return
        path = os.path.expanduser(self.target.identity_file)
        where = "identity_file"
        if not os.path.isfile(path):
            raise TransportError(
                f"{self.name}: the SSH key {path} ({where}) does not exist",
                hint="fix identity_file in the boards file, or create the key with "
                f"`ssh-keygen -t ed25519 -f {path}` and install it on the board with "
                f"`ssh-copy-id -i {path} -p {self.conn.port} "
                f"{self.conn.user}@{self.conn.host}`",
            )
        state = _key_state(path)
        if state == "encrypted":
            agent_key = _agent_copy(path)
            if agent_key is None:
                raise TransportError(
                    f"{self.name}: the SSH key {path} ({where}) is encrypted (it needs its "
                    "passphrase) and ssh-agent holds no copy of it; edgecal does not ask for "
                    "passphrases",
                    hint=_encrypted_fix(path),
                )
            self.conn.connect_kwargs.update(pkey=agent_key, key_filename=[])
        elif state != "ok":
            raise TransportError(
                f"{self.name}: the SSH key {path} ({where}) cannot be read: {state}",
                hint="identity_file must name a private key (OpenSSH or PEM format: RSA, "
                "ECDSA or Ed25519), not its .pub",
            )
        self._identity_checked = True

    # -- connection ------------------------------------------------------------------------------
    def is_active(self) -> bool:
        t = self.conn.client.get_transport()
        return t is not None and t.is_active()

    def connect(self) -> None:
        if self.is_active():
            return
        if self.conn.is_connected or self.conn.transport is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self._sftp = None
        self._check_identity()
        try:
            self.conn.open()
        except Exception as e:
            with contextlib.suppress(Exception):
                self.conn.client.close()  # see close()
            self.fail(e, "connecting")
        t = self.conn.client.get_transport()
        if t is not None:
            threading.Thread(
                target=self._watchdog,
                args=(t,),
                daemon=True,
                name=f"edgecal-ssh-watchdog-{self.name}",
            ).start()

    def _watchdog(self, t: paramiko.Transport) -> None:
        """Every KEEPALIVE_S, a global request the server must answer; no answer within the
        connect timeout (a silently dropped link: TCP would retry for many minutes) closes the
        transport, so a waiting job sees a dead channel at once instead of hanging."""
        limit = max(2.0 * self.target.connect_timeout_s, 5.0)
        while t.is_active():
            time.sleep(KEEPALIVE_S)
            if not t.is_active():
                return
            answered = threading.Event()
            threading.Thread(target=_ask_server, args=(t, answered), daemon=True).start()
            if not answered.wait(limit) and t.is_active():
                log.warning(
                    "%s: no answer from %s for %.0f s; closing the connection",
                    self.name,
                    self.address,
                    limit,
                )
                self.lost = True
                with contextlib.suppress(Exception):
                    t.close()
                return

    def transport(self) -> paramiko.Transport:
        self.connect()
        t = self.conn.client.get_transport()
        assert t is not None
        return t

    def fail(self, e: BaseException, what: str) -> NoReturn:
        """Raise the TransportError that says what ``e`` means for this board."""
        name, addr, port = self.name, self.address, self.conn.port
        kh = known_hosts_name(self.conn.host, port)
        kh_file = self.target.known_hosts or USER_KNOWN_HOSTS
        if isinstance(e, TransportError):
            raise e
        if isinstance(e, paramiko.BadHostKeyException):
            raise HostKeyError(
                f"{name}: the SSH host key of {addr} has CHANGED: the board offers "
                f"{fingerprint(e.key)}, known_hosts has {fingerprint(e.expected_key)}; refused "
                "(someone may be intercepting the connection, or the board was reinstalled)",
                hint=f"if the board was reinstalled, verify its new key and remove the old one "
                f"with `ssh-keygen -R '{kh}' -f {kh_file}`; --accept-new-host-key never "
                "replaces a changed key",
            ) from e
        if isinstance(e, _HostKeyRefused):
            raise _host_key_error(name, addr, kh, kh_file, e) from e
        message, hint = self._meaning(e, what)
        raise TransportError(message, hint=hint) from e

    def _meaning(self, e: BaseException, what: str) -> tuple[str, str | None]:
        """What ``e`` (not a host-key problem) means for this board, and the fix."""
        name, addr, port = self.name, self.address, self.conn.port
        if isinstance(e, paramiko.PasswordRequiredException):
            key = self.target.identity_file or self._encrypted_key() or "KEY"
            return (
                f"{name}: the SSH key {key} is encrypted (it needs its passphrase) and ssh-agent "
                "holds no copy of it; edgecal does not ask for passphrases",
                _encrypted_fix(key),
            )
        if isinstance(e, paramiko.AuthenticationException):
            key = self.target.identity_file or "your SSH keys / ssh-agent"
            return (
                f"{name}: authentication refused by {addr} ({e})",
                f"check the user and key ({key}); `ssh-copy-id -p {port} "
                f"{self.conn.user}@{self.conn.host}` installs your key",
            )
        if isinstance(e, CommandTimedOut):
            return (
                f"{name}: {what} on {addr} did not finish within {e.timeout:g} s",
                "raise command_timeout_s in the boards file, or check the board's load",
            )
        if isinstance(e, _NO_ANSWER):
            return (
                f"{name}: {what}: {addr} did not answer within {self.target.connect_timeout_s:g} s",
                "check that the board is powered and on the network, and the host/port "
                "in the boards file; raise connect_timeout_s for a slow link",
            )
        if isinstance(e, _UNREACHABLE):
            return (
                f"{name}: cannot reach {addr} while {what}: {e}",
                "check that the board is on and sshd runs there, and the host/port in "
                "the boards file (`ssh -p PORT USER@HOST` should work)",
            )
        text = str(e)
        # paramiko: the banner wait ran out, or the handshake wait (as long) ran out first
        # and the next step finds no session
        if isinstance(e, paramiko.SSHException) and (
            "protocol banner" in text or (what == "connecting" and "No existing session" in text)
        ):
            return (
                f"{name}: {addr} accepted the connection but sent no SSH banner (or did not "
                f"finish the SSH handshake) within {self.target.connect_timeout_s:g} s",
                f"check that port {port} is the board's sshd and not another service; a "
                "busy sshd (MaxStartups) or a slow reverse-DNS lookup on the board (set "
                "`UseDNS no` in its /etc/ssh/sshd_config) delays the banner: raise "
                "connect_timeout_s in the boards file",
            )
        if isinstance(e, paramiko.SSHException) and "No authentication methods" in text:
            return (
                f"{name}: no SSH key to log in to {addr} with: no identity_file for this board, "
                "no IdentityFile in ~/.ssh/config, no ~/.ssh/id_ed25519|id_ecdsa|id_rsa and no "
                "key in ssh-agent",
                f"create a key (`ssh-keygen -t ed25519`) and install it on the board "
                f"(`ssh-copy-id -p {port} {self.conn.user}@{self.conn.host}`), or set "
                "`identity_file = ...` for the board in the boards file",
            )
        if isinstance(e, (paramiko.SSHException, EOFError)):
            return (
                f"{name}: SSH failure with {addr} while {what}: {str(e) or type(e).__name__}",
                "the connection dropped or the server refused it; check the board and its "
                "sshd log, then retry",
            )
        return f"{name}: {what} on {addr} failed: {type(e).__name__}: {e}", None

    def reconnect(self) -> None:
        """A new connection, whatever state the old one is in (a cut link can look alive)."""
        self.close()
        self.lost = False
        self.connect()

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        with contextlib.suppress(Exception):
            self.conn.close()
        # fabric closes only a connection it saw open: a connect that failed after the SSH
        # handshake (a refused host key, failed auth) leaves paramiko's transport running, an
        # unauthenticated connection the board's sshd counts against MaxStartups
        with contextlib.suppress(Exception):
            self.conn.client.close()

    # -- commands --------------------------------------------------------------------------------
    def run(
        self, argv: Sequence[str], *, timeout_s: float | None = None, stdin: bytes | None = None
    ) -> RunResult:
        """Run ``argv`` (joined with :func:`shlex.join`) and return its result; a non-zero
        exit is a result, not an error.  Timeouts and SSH failures raise TransportError."""
        self.connect()
        cmd = shlex.join(list(argv))
        timeout = self.target.command_timeout_s if timeout_s is None else timeout_s
        t0 = time.perf_counter()
        try:
            if stdin is not None:
                return self._run_with_stdin(argv, cmd, timeout, stdin, t0)
            res = self.conn.run(
                cmd, hide=True, warn=True, in_stream=False, timeout=timeout, pty=False
            )
        except Exception as e:
            self.fail(e, f"running `{_short(argv)}`")
        return RunResult(
            tuple(argv), int(res.exited), res.stdout, res.stderr, time.perf_counter() - t0
        )

    def _run_with_stdin(
        self, argv: Sequence[str], cmd: str, timeout: float, data: bytes, t0: float
    ) -> RunResult:
        chan = self.transport().open_session(timeout=self.target.connect_timeout_s)
        chan.settimeout(timeout)
        try:
            chan.exec_command(cmd)
            chan.sendall(data)
            chan.shutdown_write()
            out = chan.makefile("rb").read()
            err = chan.makefile_stderr("rb").read()
            code = chan.recv_exit_status()
        finally:
            chan.close()
        return RunResult(
            tuple(argv),
            code,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.perf_counter() - t0,
        )

    def start(self, argv: Sequence[str], *, startup_timeout_s: float) -> ChannelProcess:
        """Start ``argv`` on one channel, its stdin/stdout/stderr as text streams."""
        self.connect()
        return ChannelProcess(self, argv, startup_timeout_s=startup_timeout_s)

    # -- files -----------------------------------------------------------------------------------
    def sftp(self) -> paramiko.SFTPClient:
        self.connect()
        if self._sftp is None:
            try:
                self._sftp = self.conn.client.open_sftp()
                # paramiko types the channel Optional; open_sftp's client always has it
                self._sftp.get_channel().settimeout(  # type: ignore[union-attr]
                    self.target.command_timeout_s
                )
            except Exception as e:
                self.fail(e, "opening SFTP")
        return self._sftp

    @contextlib.contextmanager
    def sftp_op(self, what: str) -> Iterator[paramiko.SFTPClient]:
        """An SFTP client; transport failures inside become TransportError (``OSError`` from
        the server, e.g. permission denied, passes through for the caller to explain)."""
        sftp = self.sftp()
        try:
            yield sftp
        except (paramiko.SSHException, EOFError, TimeoutError) as e:
            self._sftp = None
            self.fail(e, what)


def _key_state(path: str) -> str:
    """``ok``, ``encrypted`` or why the private key file cannot be used, found as paramiko's
    ``SSHClient`` loads a ``key_filename`` (each key class in turn)."""
    why = "not a private key"
    for cls in (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key):
        try:
            cls.from_private_key_file(path)
            return "ok"
        except paramiko.PasswordRequiredException:
            return "encrypted"
        except paramiko.SSHException as e:
            why = str(e) or why
        except TypeError as e:  # cryptography: "password-protected, but no password"
            return "encrypted" if "password" in str(e).lower() else str(e)
        except (OSError, ValueError) as e:
            return str(e)
    return why


def _agent_copy(path: str) -> paramiko.PKey | None:
    """ssh-agent's copy of the key ``path`` (matched by its ``.pub`` file), if it has one."""
    try:
        with open(path + ".pub", encoding="ascii", errors="replace") as fh:
            blob = base64.b64decode(fh.read().split()[1], validate=True)
    except (OSError, IndexError, ValueError):
        return None
    try:
        for key in paramiko.Agent().get_keys():
            if key.asbytes() == blob:
                return key
    except paramiko.SSHException:
        return None
    return None


def _encrypted_fix(path: str) -> str:
    return (
        f"load it into ssh-agent once per session (`eval $(ssh-agent)` if none runs, then "
        f"`ssh-add {path}`): edgecal then uses the agent's copy of exactly this key; or "
        f"remove its passphrase (`ssh-keygen -p -f {path}`)"
    )


def _host_key_error(
    name: str, addr: str, kh: str, kh_file: str, e: _HostKeyRefused
) -> HostKeyError:
    """The error for a key the known_hosts lines refuse (see :func:`check_host_key`)."""
    offered = fingerprint(e.key)
    line = e.verdict.line
    status = e.verdict.status
    check = (
        "check the fingerprint on the board (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)"
    )
    if status == "revoked" and line is not None:
        return HostKeyError(
            f"{name}: the SSH host key of {addr} ({offered}) is REVOKED by {line.where} "
            "(@revoked); refused",
            hint="the board must get a new host key (on the board: "
            "remove /etc/ssh/ssh_host_* and run `ssh-keygen -A`); "
            f"{check}, then add it to {kh_file}",
        )
    if status == "changed" and line is not None:
        known = fingerprint_blob(line.keytype, line.blob)
        return HostKeyError(
            f"{name}: the SSH host key of {addr} has CHANGED: the board offers {offered}, "
            f"{line.where} has {known} for it (host pattern {line.hosts!r}); refused "
            "(someone may be intercepting the connection, or the board was reinstalled)",
            hint=f"if the board was reinstalled, {check} and remove the old key: "
            f"`ssh-keygen -R '{kh}' -f {line.path}`, or edit {line.where} when it is a "
            "pattern for several hosts; --accept-new-host-key never replaces a known key",
        )
    if status == "ca-only" and line is not None:
        return HostKeyError(
            f"{name}: the SSH host key of {addr} ({offered}) is unknown: only the "
            f"@cert-authority line {line.where} matches the host, and edgecal does not support "
            "host certificates; refused",
            hint=f"{check}, then add the plain key to {kh_file} or rerun once with "
            "--accept-new-host-key",
        )
    return HostKeyError(
        f"{name}: the SSH host key of {addr} ({offered}) is unknown; refused",
        hint=f"{check}, then add it to {kh_file} or rerun once with --accept-new-host-key",
    )


def _ask_server(t: paramiko.Transport, answered: threading.Event) -> None:
    """A global request the server must answer (OpenSSH replies "failure" to this one)."""
    with contextlib.suppress(Exception):
        t.global_request("keepalive@openssh.com", wait=True)
    answered.set()


def _short(argv: Sequence[str], limit: int = 60) -> str:
    text = shlex.join(list(argv))
    return text if len(text) <= limit else text[: limit - 3] + "..."
