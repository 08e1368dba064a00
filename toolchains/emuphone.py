#!/usr/bin/env python3
"""emuphone.py - the device side of adb for edgecal's emulated phone (a TEST FIXTURE).

Written from AOSP's protocol documents (packages/modules/adb: protocol.txt, SERVICES.TXT,
SYNC.TXT, shell_protocol.h's packet ids); no adbd code. The REAL adb client (Debian's `adb`)
talks to it: `adb connect 127.0.0.1:PORT`. toolchains/emuphone.sh starts it as PID 1 of the
phone's own pid/mount/uts namespaces, with the phone's root (busybox aarch64 under qemu-user,
see toolchains/EMUPHONE.md) mounted; it chroots there and serves:

* transport: CNXN (no AUTH: like a phone with ro.adb.secure=0), OPEN, OKAY, WRTE, CLSE;
  version 0x01000001 (no checksums asked; ours are sent anyway), maxdata 256 KiB;
* services: ``shell:CMD`` (v1: stdout+stderr in one raw stream, no exit status),
  ``shell,v2,raw:CMD`` / ``shell,v2,pty:CMD`` (shell protocol v2: stdin/stdout/stderr/exit
  packets; advertised as feature shell_v2), ``shell:`` (interactive, a pty), ``exec:CMD``,
  ``sync:`` (STAT LIST SEND RECV QUIT, v1 formats), ``reboot:`` (like ``emuphone.sh reboot``);
* control (a unix socket, root only): ``ping``, ``cut`` (reset every adb connection now),
  ``hold`` (cut + refuse new connections), ``restore``, ``reboot`` (cut + kill every process
  of the phone but us; files stay).

Commands run as ``/system/bin/sh -c CMD`` with uid/gid 2000 (Android's ``shell``) and an
Android-like environment. Standard library only (runs on the host's python3).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import pty
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
import traceback
import uuid

# --------------------------------------------------------------------------- protocol constants

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453
A_VERSION = 0x01000001  # >= 0x01000001: the peer may skip data checksums
A_VERSION_MIN = 0x01000000
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
HEADER = struct.Struct("<6I")
NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
         A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}  # fmt: skip

# shell protocol v2 packet ids
SH_STDIN, SH_STDOUT, SH_STDERR, SH_EXIT, SH_CLOSE_STDIN, SH_WINSIZE = 0, 1, 2, 3, 4, 5

SHELL_UID = 2000
SHELL_GROUPS = [2000, 1004, 1007, 1011, 1015, 1028, 3001, 3002, 3003, 3006, 3009, 3011]


def log(msg: str) -> None:
    sys.stderr.write(f"[emuphone {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- child processes
# We are PID 1 of the phone's pid namespace: orphans are reparented to us. One reaper thread
# waits for every child; spawners get their own child's status from it.


class Reaper:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.exited: dict[int, tuple[int, float]] = {}
        threading.Thread(target=self._run, name="reaper", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            except InterruptedError:
                continue
            now = time.monotonic()
            with self.cond:
                self.exited[pid] = (status, now)
                for p in [p for p, (_, t) in self.exited.items() if now - t > 120]:
                    del self.exited[p]
                self.cond.notify_all()

    def wait(self, pid: int) -> int:
        """The exit code of our child ``pid``, as adbd reports it (128+signal when killed)."""
        with self.cond:
            while pid not in self.exited:
                self.cond.wait()
            status, _ = self.exited.pop(pid)
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return 255


class Phone:
    """What every connection shares: the environment, the reaper, the live connections."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.reaper = Reaper()
        self.lock = threading.Lock()
        self.conns: set[Connection] = set()
        self.listener: socket.socket | None = None
        self.held = False
        self.env = {
            "PATH": "/product/bin:/apex/com.android.runtime/bin:/system/bin:/system/xbin:/vendor/bin",
            "HOME": "/",
            "TMPDIR": "/data/local/tmp",
            "ANDROID_ROOT": "/system",
            "ANDROID_DATA": "/data",
            "EXTERNAL_STORAGE": "/sdcard",
            "HOSTNAME": args.name,
            "USER": "shell",
            "LOGNAME": "shell",
            "SHELL": "/system/bin/sh",
            "QEMU_CPU": args.cpu,
        }
        self.banner = (
            f"device::ro.product.name={args.product};ro.product.model={args.model};"
            f"ro.product.device={args.device};features={','.join(FEATURES)}"
        ).encode()

    def spawn(
        self,
        argv: list[str],
        *,
        pty_slave: int | None = None,
        env_extra: dict | None = None,
        merge: bool = False,
    ) -> subprocess.Popen:
        env = dict(self.env)
        env.update(env_extra or {})
        kw: dict = dict(cwd="/", env=env, close_fds=True, start_new_session=True)
        if pty_slave is not None:
            kw.update(stdin=pty_slave, stdout=pty_slave, stderr=pty_slave)

            def ctty() -> None:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            kw["preexec_fn"] = ctty
            return subprocess.Popen(argv, **kw)
        err = subprocess.STDOUT if merge else subprocess.PIPE
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=0, **kw
        )

    def wait(self, proc: subprocess.Popen) -> int:
        code = self.reaper.wait(proc.pid)
        proc.emuphone_done = True  # type: ignore[attr-defined]
        proc.returncode = code  # Popen never waits for it itself (the reaper did)
        return code

    # -------------------------------------------------------------- control

    def cut(self) -> int:
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.abort()
        return len(conns)

    def set_hold(self, hold: bool) -> None:
        with self.lock:
            self.held = hold
        if hold:
            self.cut()

    def reboot(self) -> int:
        """Kill every process of the phone but us (PID 1); files stay."""
        self.cut()
        killed = 0
        for _ in range(2):
            for d in os.listdir("/proc"):
                if d.isdigit() and int(d) != os.getpid():
                    try:
                        os.kill(int(d), signal.SIGKILL)
                        killed += 1
                    except ProcessLookupError:
                        pass
            time.sleep(0.1)
        log(f"reboot: {killed} processes killed")
        return killed


FEATURES = ["shell_v2", "fixed_push_mkdir"]


# --------------------------------------------------------------------------- connection


class Closed(Exception):
    pass


class Stream:
    """One adb stream (a service) on a connection: ids, flow control, inbound data queue."""

    def __init__(self, conn: Connection, local: int, remote: int) -> None:
        self.conn, self.local, self.remote = conn, local, remote
        self.cond = threading.Condition()
        self.inbox: list[bytes] = []
        self.closed = False  # the host closed it (CLSE) or the connection died
        self.sent_close = False
        self.can_write = True  # adb: one WRTE in flight per stream until the peer's OKAY

    # host -> device
    def deliver(self, data: bytes) -> None:
        with self.cond:
            self.inbox.append(data)
            self.cond.notify_all()

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next chunk from the host; None when the stream is closed. Taking a chunk sends
        its OKAY: adb's flow control, the host sends its next WRTE only then."""
        with self.cond:
            while not self.inbox and not self.closed:
                if not self.cond.wait(timeout):
                    return b""
            if not self.inbox:
                return None
            data = self.inbox.pop(0)
        if not self.closed:
            try:
                self.conn.send(A_OKAY, self.local, self.remote)
            except (OSError, Closed):
                pass
        return data

    def on_okay(self) -> None:
        with self.cond:
            self.can_write = True
            self.cond.notify_all()

    def on_close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # device -> host
    def write(self, data: bytes) -> None:
        mv = memoryview(data)
        while len(mv):
            n = min(len(mv), self.conn.max_payload)
            with self.cond:
                while not self.can_write and not self.closed:
                    self.cond.wait()
                if self.closed:
                    raise Closed()
                self.can_write = False
            self.conn.send(A_WRTE, self.local, self.remote, bytes(mv[:n]))
            mv = mv[n:]

    def close(self) -> None:
        with self.cond:
            if self.sent_close:
                return
            self.sent_close = True
            # wait (briefly) for the OKAY of our last WRTE: the host drops data after a CLSE
            deadline = time.monotonic() + 5
            while not self.can_write and not self.closed and time.monotonic() < deadline:
                self.cond.wait(0.1)
        try:
            self.conn.send(A_CLSE, self.local, self.remote)
        except (OSError, Closed):
            pass
        self.conn.forget(self)
        self.on_close()


class Connection:
    def __init__(self, phone: Phone, sock: socket.socket, peer: str) -> None:
        self.phone, self.sock, self.peer = phone, sock, peer
        self.wlock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.slock = threading.Lock()
        self.next_id = 1
        self.max_payload = 4096
        self.checksums = False  # until a CNXN says the peer is older than 0x01000001
        self.online = False
        self.dead = False

    def abort(self) -> None:
        """Cut: a TCP reset now (SO_LINGER 0), as when the cable or Wi-Fi goes."""
        self.dead = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send(self, cmd: int, a0: int, a1: int, data: bytes = b"") -> None:
        check = sum(data) & 0xFFFFFFFF if (data and self.checksums) else 0
        head = HEADER.pack(cmd, a0, a1, len(data), check, cmd ^ 0xFFFFFFFF)
        with self.wlock:
            if self.dead:
                raise Closed()
            self.sock.sendall(head + data if len(data) < 65536 else head)
            if len(data) >= 65536:
                self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed()
            buf += chunk
        return bytes(buf)

    def forget(self, s: Stream) -> None:
        with self.slock:
            self.streams.pop(s.local, None)

    def run(self) -> None:
        try:
            while True:
                cmd, a0, a1, n, check, magic = HEADER.unpack(self.recv_exact(24))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise ValueError(f"bad magic in {cmd:#x}")
                data = self.recv_exact(n) if n else b""
                # checked only with an old peer (version < 0x01000001), never on CNXN itself: a
                # host that reconnects remembers the version and sends its CNXN unchecked
                if (
                    self.checksums
                    and self.online
                    and n
                    and cmd != A_CNXN
                    and check != (sum(data) & 0xFFFFFFFF)
                ):
                    raise ValueError("bad data checksum")
                self.dispatch(cmd, a0, a1, data)
        except (Closed, OSError) as e:
            if not self.dead:
                log(f"{self.peer}: connection closed ({e or 'eof'})")
        except Exception as e:  # a protocol error: drop the connection, as adbd does
            log(f"{self.peer}: protocol error: {e}")
        finally:
            self.dead = True
            try:
                self.sock.close()
            except OSError:
                pass
            with self.slock:
                streams = list(self.streams.values())
                self.streams.clear()
            for s in streams:
                s.on_close()
            with self.phone.lock:
                self.phone.conns.discard(self)

    def dispatch(self, cmd: int, a0: int, a1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            version, maxdata = a0, a1
            self.max_payload = max(256, min(maxdata, MAX_PAYLOAD))
            self.checksums = min(version, A_VERSION) < A_VERSION
            ident = data.rstrip(b"\0")[:200]
            log(f"{self.peer}: CNXN v{version:#x} maxdata {maxdata} {ident!r}")
            # a new CNXN resets the transport: every stream of the old one is gone
            with self.slock:
                old = list(self.streams.values())
                self.streams.clear()
            for s in old:
                s.on_close()
            self.send(A_CNXN, min(version, A_VERSION), MAX_PAYLOAD, self.phone.banner)
            self.online = True
            return
        if not self.online:
            if cmd == A_AUTH:
                return
            raise ValueError(f"{NAMES.get(cmd, hex(cmd))} before CNXN")
        if cmd == A_OPEN:
            with self.slock:
                local = self.next_id
                self.next_id += 1
                s = Stream(self, local, a0)
                self.streams[local] = s
            name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            threading.Thread(target=self.serve_stream, args=(s, name), daemon=True).start()
            return
        with self.slock:
            s = self.streams.get(a1)
        if cmd == A_WRTE:
            if s is None:
                self.send(A_CLSE, 0, a0)  # unknown stream: tell the host it is gone
                return
            s.deliver(data)  # acknowledged when the service takes it (Stream.read)
        elif cmd == A_OKAY:
            if s is not None:
                s.on_okay()
        elif cmd == A_CLSE:
            if s is not None:
                s.on_close()
                self.forget(s)
        else:
            log(f"{self.peer}: ignoring {NAMES.get(cmd, hex(cmd))}")

    def serve_stream(self, s: Stream, name: str) -> None:
        handler = service_for(name)
        if handler is None:
            log(f"{self.peer}: OPEN {name!r}: no such service")
            try:
                self.send(A_CLSE, 0, s.remote)
            except OSError:
                pass
            self.forget(s)
            return
        try:
            self.send(A_OKAY, s.local, s.remote)
            handler(self.phone, s, name)
        except Closed:
            pass
        except Exception:
            log(f"{self.peer}: service {name[:80]!r} failed:\n{traceback.format_exc()}")
        finally:
            s.close()


# --------------------------------------------------------------------------- services


def service_for(name: str):
    if name.startswith("shell:") or name.startswith("shell,"):
        return svc_shell
    if name.startswith("exec:"):
        return svc_exec
    if name == "sync:":
        return svc_sync
    if name.startswith("reboot:"):
        return svc_reboot
    if name in ("root:", "unroot:", "remount:"):
        return svc_user_build
    return None


def svc_user_build(phone: Phone, s: Stream, name: str) -> None:
    """What adbd on a user build answers (a phone as shipped: no root)."""
    msg = {
        "root:": "adbd cannot run as root in production builds\n",
        "unroot:": "adbd not running as root\n",
    }.get(name, "remount is not available on a user build\n")
    s.write(msg.encode())


def pump_out(fd: int, write, chunk: int = 65536) -> None:
    """Copy a pipe/pty to the stream until EOF."""
    while True:
        try:
            data = os.read(fd, chunk)
        except OSError as e:  # a pty's master reads EIO once the slave side is gone
            if e.errno == errno.EIO:
                return
            raise
        if not data:
            return
        write(data)


def hangup(proc: subprocess.Popen) -> None:
    """The host went away: SIGHUP to the command's session, as a closed terminal does."""
    if getattr(proc, "emuphone_done", False):
        return  # exited: its pgid may live on in background jobs, which keep running
    try:
        os.killpg(proc.pid, signal.SIGHUP)
    except (ProcessLookupError, PermissionError):
        pass


def sh_argv(cmd: str) -> list[str]:
    """`sh -c CMD`; no command: a shell reading its commands from stdin (adb shell -T)."""
    return ["/system/bin/sh", "-c", cmd] if cmd else ["/system/bin/sh"]


def svc_exec(phone: Phone, s: Stream, name: str) -> None:
    run_raw(phone, s, name[len("exec:") :])


def run_raw(phone: Phone, s: Stream, cmd: str) -> None:
    """v1 shell / exec: one raw byte stream, stderr into it too; the exit status is lost."""
    proc = phone.spawn(sh_argv(cmd), merge=True)
    threading.Thread(target=feed_stdin, args=(s, proc), daemon=True).start()
    _pump_safe(proc.stdout.fileno(), s.write, proc)
    phone.wait(proc)
    proc.stdout.close()


def _pump_safe(fd: int, write, proc: subprocess.Popen) -> None:
    try:
        pump_out(fd, write)
    except Closed:
        hangup(proc)


def feed_stdin(s: Stream, proc: subprocess.Popen) -> None:
    """Host -> the command's stdin (v1: never closed before the stream is)."""
    while True:
        data = s.read()
        if data is None:
            hangup(proc)
            break
        try:
            proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            pass
    try:
        proc.stdin.close()
    except OSError:
        pass


def parse_shell(name: str) -> tuple[list[str], str]:
    head, _, cmd = name.partition(":")
    args = head.split(",")[1:]
    return args, cmd


def svc_shell(phone: Phone, s: Stream, name: str) -> None:
    args, cmd = parse_shell(name)
    v2 = "v2" in args
    use_pty = "pty" in args or ("raw" not in args and cmd == "")
    term = next((a[5:] for a in args if a.startswith("TERM=")), "dumb")
    if not v2:
        if use_pty:
            run_pty(phone, s, cmd, None, term)
        else:
            run_raw(phone, s, cmd)
        return
    if use_pty:
        run_pty(phone, s, cmd, ShellV2(s), term)
    else:
        run_v2_raw(phone, s, cmd)


class ShellV2:
    """Shell protocol v2 framing: [id u8][length u32 LE][data]."""

    def __init__(self, s: Stream) -> None:
        self.s = s
        self.buf = bytearray()
        self.wlock = threading.Lock()

    def send(self, pid: int, data: bytes) -> None:
        with self.wlock:
            # keep each packet within one WRTE where it fits
            step = max(1, self.s.conn.max_payload - 5)
            mv = memoryview(data)
            while True:
                part = bytes(mv[:step])
                self.s.write(struct.pack("<BI", pid, len(part)) + part)
                mv = mv[step:]
                if not len(mv):
                    break

    def packets(self):
        """Yield (id, data) from the host until the stream closes."""
        while True:
            while len(self.buf) >= 5:
                pid, n = struct.unpack_from("<BI", self.buf)
                if len(self.buf) < 5 + n:
                    break
                data = bytes(self.buf[5 : 5 + n])
                del self.buf[: 5 + n]
                yield pid, data
            chunk = self.s.read()
            if chunk is None:
                return
            self.buf += chunk


def run_v2_raw(phone: Phone, s: Stream, cmd: str) -> None:
    proc = phone.spawn(sh_argv(cmd))
    sh = ShellV2(s)

    def host_in() -> None:
        for pid, data in sh.packets():
            if pid == SH_STDIN:
                try:
                    proc.stdin.write(data)
                except OSError:
                    pass
            elif pid == SH_CLOSE_STDIN:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        hangup(proc)  # the host closed the stream before the command ended

    threading.Thread(target=host_in, daemon=True).start()
    pumps = [
        threading.Thread(
            target=_pump_safe,
            args=(proc.stdout.fileno(), lambda d: sh.send(SH_STDOUT, d), proc),
            daemon=True,
        ),
        threading.Thread(
            target=_pump_safe,
            args=(proc.stderr.fileno(), lambda d: sh.send(SH_STDERR, d), proc),
            daemon=True,
        ),
    ]
    for t in pumps:
        t.start()
    for t in pumps:
        t.join()
    code = phone.wait(proc)
    for f in (proc.stdout, proc.stderr):
        f.close()
    try:
        proc.stdin.close()
    except OSError:
        pass
    sh.send(SH_EXIT, bytes([code & 0xFF]))


def run_pty(phone: Phone, s: Stream, cmd: str, sh: ShellV2 | None, term: str) -> None:
    master, slave = pty.openpty()
    argv = ["/system/bin/sh", "-c", cmd] if cmd else ["/system/bin/sh", "-i"]
    proc = phone.spawn(argv, pty_slave=slave, env_extra={"TERM": term})
    os.close(slave)

    def host_in() -> None:
        if sh is None:
            while (data := s.read()) is not None:
                os.write(master, data)
        else:
            for pid, data in sh.packets():
                if pid == SH_STDIN:
                    os.write(master, data)
                elif pid == SH_CLOSE_STDIN:
                    os.write(master, b"\x04")
                elif pid == SH_WINSIZE and len(data) >= 4:
                    try:
                        rows, cols, xp, yp = (
                            int(x) for x in data.rstrip(b"\0").decode().split("x", 3)[:4]
                        )
                        fcntl.ioctl(
                            master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xp, yp)
                        )
                    except (ValueError, OSError):
                        pass
        hangup(proc)

    threading.Thread(target=host_in, daemon=True).start()
    out = (lambda d: s.write(d)) if sh is None else (lambda d: sh.send(SH_STDOUT, d))
    try:
        _pump_safe(master, out, proc)
    finally:
        code = phone.wait(proc)
        os.close(master)
    if sh is not None:
        sh.send(SH_EXIT, bytes([code & 0xFF]))


def svc_reboot(phone: Phone, s: Stream, name: str) -> None:
    threading.Thread(target=lambda: (time.sleep(0.2), phone.reboot()), daemon=True).start()


# ------------------------------------------------------------------ sync


class SyncReader:
    def __init__(self, s: Stream) -> None:
        self.s = s
        self.buf = bytearray()

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.s.read()
            if chunk is None:
                raise Closed()
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def request(self) -> tuple[bytes, int]:
        head = self.take(8)
        return head[:4], struct.unpack("<I", head[4:])[0]


def _fail(s: Stream, msg: str) -> None:
    b = msg.encode("utf-8", "replace")
    s.write(b"FAIL" + struct.pack("<I", len(b)) + b)


def _u32(x: int) -> int:
    return int(x) & 0xFFFFFFFF


def svc_sync(phone: Phone, s: Stream, name: str) -> None:
    r = SyncReader(s)
    while True:
        try:
            rid, n = r.request()
        except Closed:
            return
        if rid == b"QUIT":
            return
        if n > 1024:
            _fail(s, f"path too long ({n} bytes)")
            return
        path = r.take(n).decode("utf-8", "surrogateescape")
        if rid == b"STAT":
            try:
                st = os.lstat(path)
                s.write(
                    b"STAT"
                    + struct.pack("<III", _u32(st.st_mode), _u32(st.st_size), _u32(st.st_mtime))
                )
            except OSError:
                s.write(b"STAT" + bytes(12))
        elif rid == b"LIST":
            sync_list(s, path)
        elif rid == b"RECV":
            sync_recv(s, path)
        elif rid == b"SEND":
            if not sync_send(s, r, path):
                return
        else:
            _fail(s, f"unknown sync request {rid!r}")
            return


def sync_list(s: Stream, path: str) -> None:
    out = bytearray()
    try:
        names = os.listdir(path)
    except OSError:
        names = []
    for nm in [".", ".."] + names:
        try:
            st = os.lstat(os.path.join(path, nm))
        except OSError:
            continue
        b = nm.encode("utf-8", "surrogateescape")
        out += (
            b"DENT"
            + struct.pack("<IIII", _u32(st.st_mode), _u32(st.st_size), _u32(st.st_mtime), len(b))
            + b
        )
        if len(out) > SYNC_DATA_MAX:
            s.write(bytes(out))
            out.clear()
    out += b"DONE" + bytes(16)
    s.write(bytes(out))


def sync_recv(s: Stream, path: str) -> None:
    try:
        f = open(path, "rb")
    except OSError as e:
        _fail(s, f"open failed: {e.strerror}")
        return
    with f:
        if stat.S_ISDIR(os.fstat(f.fileno()).st_mode):
            _fail(s, "open failed: Is a directory")
            return
        while True:
            try:
                data = f.read(SYNC_DATA_MAX)
            except OSError as e:
                _fail(s, f"read failed: {e.strerror}")
                return
            if not data:
                break
            s.write(b"DATA" + struct.pack("<I", len(data)) + data)
    s.write(b"DONE" + bytes(4))


def sync_send(s: Stream, r: SyncReader, spec: str) -> bool:
    """SEND "path,mode" DATA... DONE(mtime) -> OKAY | FAIL. False: the stream is unusable."""
    path, comma, mode_s = spec.rpartition(",")
    if not comma:
        path, mode_s = spec, "33188"
    try:
        mode = int(mode_s)
    except ValueError:
        mode = 0o100644
    err = None
    f = None
    tmp = None
    if stat.S_ISLNK(mode):
        target = bytearray()
    else:
        target = None
        try:
            d = os.path.dirname(path) or "/"
            os.makedirs(d, exist_ok=True)  # fixed_push_mkdir
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, "Is a directory")
            tmp = os.path.join(d, f".adb_push.{uuid.uuid4().hex[:12]}")
            f = open(tmp, "wb")
        except OSError as e:
            err = f"couldn't create file: {e.strerror}"
    try:
        while True:
            rid, n = r.request()
            if rid == b"DATA":
                if n > SYNC_DATA_MAX:
                    err = err or f"DATA chunk of {n} bytes (max {SYNC_DATA_MAX})"
                    _fail(s, err)
                    return False
                data = r.take(n)
                if err:
                    continue
                try:
                    if target is not None:
                        target += data
                    else:
                        f.write(data)
                except OSError as e:
                    err = f"write failed: {e.strerror}"
            elif rid == b"DONE":
                mtime = n
                if err is None:
                    try:
                        if target is not None:
                            if os.path.lexists(path):
                                os.unlink(path)
                            os.symlink(bytes(target).decode("utf-8", "surrogateescape"), path)
                        else:
                            f.close()
                            os.chmod(tmp, stat.S_IMODE(mode) or 0o644)
                            os.utime(tmp, (mtime, mtime))
                            os.replace(tmp, path)
                            tmp = None
                    except OSError as e:
                        err = f"{e.strerror}"
                if f is not None and not f.closed:
                    f.close()
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                if err:
                    _fail(s, err)
                else:
                    s.write(b"OKAY" + bytes(4))
                return True
            else:
                if f is not None:
                    f.close()
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                _fail(s, f"invalid data message {rid!r}")
                return False
    except BaseException:  # the stream or the connection died mid-transfer: no partial file
        if f is not None and not f.closed:
            f.close()
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- control socket


def serve_control(phone: Phone, ctl: socket.socket) -> None:
    while True:
        c, _ = ctl.accept()
        try:
            c.settimeout(10)
            req = c.recv(256).decode().strip()
            if req == "ping":
                ans = f"pong {phone.args.name} pid1={os.getpid() == 1} conns={len(phone.conns)} held={phone.held}"
            elif req == "cut":
                ans = f"cut {phone.cut()} connections"
            elif req == "hold":
                phone.set_hold(True)
                ans = "held: connections are refused until restore"
            elif req == "restore":
                phone.set_hold(False)
                ans = "restored"
            elif req == "reboot":
                ans = f"rebooted: {phone.reboot()} processes killed"
            else:
                ans = f"unknown control request {req!r}"
            c.sendall(ans.encode() + b"\n")
        except OSError as e:
            log(f"control: {e}")
        finally:
            c.close()


def cmd_serve(args: argparse.Namespace) -> int:
    phone = Phone(args)
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((args.host, args.port))
    lst.listen(16)
    phone.listener = lst
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(args.ctl)
    except FileNotFoundError:
        pass
    ctl.bind(args.ctl)
    os.chmod(args.ctl, 0o600)
    ctl.listen(4)
    # the phone's world: everything below runs inside its root
    os.chroot(args.root)
    os.chdir("/")
    if args.uid:  # from here on we are Android's shell user, as adbd on a user build
        os.setgroups(SHELL_GROUPS)
        os.setgid(SHELL_UID)
        os.setuid(SHELL_UID)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    threading.Thread(target=serve_control, args=(phone, ctl), daemon=True).start()
    log(
        f"{args.name}: adb on {args.host}:{args.port} (root {args.root}, pid {os.getpid()}, banner {phone.banner.decode()})"
    )
    while True:
        c, addr = lst.accept()
        if phone.held:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            continue
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(phone, c, f"{addr[0]}:{addr[1]}")
        with phone.lock:
            phone.conns.add(conn)
        threading.Thread(target=conn.run, daemon=True).start()


def cmd_ctl(args: argparse.Namespace) -> int:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(args.timeout)
    try:
        c.connect(args.ctl)
        c.sendall(args.request.encode() + b"\n")
        ans = b""
        while chunk := c.recv(4096):
            ans += chunk
    except OSError as e:
        print(f"emuphone: control socket {args.ctl}: {e}", file=sys.stderr)
        return 1
    print(ans.decode().strip())
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Connect like an adb host, print the device's CNXN banner (a health check)."""
    try:
        with socket.create_connection((args.host, args.port), timeout=args.timeout) as c:
            c.settimeout(args.timeout)
            data = b"host::\0"
            c.sendall(
                HEADER.pack(
                    A_CNXN, A_VERSION, MAX_PAYLOAD, len(data), sum(data), A_CNXN ^ 0xFFFFFFFF
                )
                + data
            )
            buf = b""
            while len(buf) < 24:
                chunk = c.recv(24 - len(buf))
                if not chunk:
                    raise OSError("closed")
                buf += chunk
            cmd, _, _, n, _, _ = HEADER.unpack(buf)
            body = b""
            while len(body) < n:
                chunk = c.recv(n - len(body))
                if not chunk:
                    raise OSError("closed")
                body += chunk
            if cmd != A_CNXN:
                raise OSError(f"answer {NAMES.get(cmd, hex(cmd))}, not CNXN")
    except OSError as e:
        print(f"emuphone: no adb device on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    print(body.decode(errors="replace"))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="emuphone.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--root", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--ctl", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--cpu", default="cortex-a76")
    s.add_argument("--product", default="edgecal_emuphone")
    s.add_argument("--model", default="EdgecalPhone_A76")
    s.add_argument("--device", default="emuphone")
    s.add_argument(
        "--uid", type=int, default=1, help="1: commands run as uid 2000 (shell); 0: as root"
    )
    c = sub.add_parser("ctl")
    c.add_argument("ctl")
    c.add_argument("request", choices=["ping", "cut", "hold", "restore", "reboot"])
    c.add_argument("--timeout", type=float, default=10)
    p = sub.add_parser("probe")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=5)
    a = ap.parse_args(argv)
    return {"serve": cmd_serve, "ctl": cmd_ctl, "probe": cmd_probe}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
