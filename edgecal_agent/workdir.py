"""The work directory, and the only ways the agent touches files in it.

The agent runs on somebody's phone or board.  Whatever a request names and whatever is already
in the work directory, it reads, writes, renames and deletes nothing outside it:

* the work directory is opened once (:class:`Workdir`); every other file is reached from that
  descriptor one real folder at a time (``O_NOFOLLOW | O_DIRECTORY`` with ``dir_fd``), so a
  symlink anywhere on the way is refused, and a check cannot be raced by a swap after it;
* files are opened with ``O_NOFOLLOW`` and must be regular files (a FIFO cannot block it);
* new files are created under a fresh random name with ``O_CREAT | O_EXCL`` (a planted name is
  never written through), then renamed into place inside the same folder descriptor;
* removals are ``unlink``/``rmdir`` of a name in a folder descriptor (a link is removed, never
  what it points to).

:func:`check_workdir` is the start-up check of the work directory itself.  Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import IO

from edgecal_agent.errors import BadRequest, WorkdirRefused

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIR_FLAGS = os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
#: The agent's work directory on a board when the boards file names none (relative: under the
#: login's home).
DEFAULT_WORKDIR = ".cache/edgecal"
#: A request may name at most this many path components (deeper is not an agent's layout).
MAX_DEPTH = 16


def split_relpath(rel: object, what: str = "path") -> tuple[str, ...]:
    """The components of a work-directory-relative path, or ``BadRequest``: not a string,
    empty, absolute, with ``..``, ``\\``, NUL, a surrogate, or too deep."""
    if not isinstance(rel, str) or not rel:
        raise BadRequest(f"{what} {rel!r} must be a non-empty relative path")
    bad = (
        "\x00" in rel
        or "\\" in rel
        or rel.startswith("/")
        or any("\ud800" <= c <= "\udfff" for c in rel)
    )
    parts = PurePosixPath(rel).parts if not bad else ()
    if bad or not parts or ".." in parts or len(parts) > MAX_DEPTH:
        raise BadRequest(
            f"{what} {rel!r} must be a relative path inside the work directory "
            "(no '..', no absolute path, no NUL)"
        )
    return parts


def _oserror(e: OSError, rel: str, what: str) -> BadRequest:
    reason = e.strerror or str(e)
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        reason = "a symlink or a file is in the way (only real folders are followed)"
    elif e.errno == errno.ENOENT:
        reason = "it does not exist"
    return BadRequest(f"{what} {rel} cannot be used inside the work directory: {reason}")


class Workdir:
    """The agent's work directory, held open by a descriptor; see the module doc."""

    def __init__(self, path: str, real: bool = False) -> None:
        """``real``: ``path`` is a real path (from :func:`check_workdir`); it is opened one
        component at a time without following a link, so what was checked is what is used."""
        self.path = path
        self.fd = -1
        try:
            if real and os.path.isabs(path):
                self.fd = os.open("/", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                for part in path.split("/"):
                    if part:
                        nfd = os.open(part, DIR_FLAGS, dir_fd=self.fd)
                        os.close(self.fd)
                        self.fd = nfd
            else:
                self.fd = os.open(path, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        except OSError as e:
            self.close()
            raise WorkdirRefused(
                f"cannot open the work directory {path}: {e.strerror or e}"
            ) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- folders ---------------------------------------------------------------------------------
    def open_dir_parts(self, parts: Sequence[str], create: bool = False) -> int:
        """A new descriptor of the real folder ``parts`` below the work directory (created
        with ``create``); ``OSError`` when a component is missing, a symlink or not a folder."""
        fd = os.open(".", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC, dir_fd=self.fd)
        try:
            for name in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def parent(
        self, rel: str, what: str = "file", create: bool = False
    ) -> Iterator[tuple[int, str]]:
        """``(folder descriptor, name)`` of file ``rel``."""
        parts = split_relpath(rel, what)
        try:
            fd = self.open_dir_parts(parts[:-1], create)
        except (OSError, ValueError) as e:
            raise (
                _oserror(e, rel, what)
                if isinstance(e, OSError)
                else BadRequest(f"{what} {rel!r}: {e}")
            ) from None
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)


def open_file_at(dfd: int, name: str, rel: str = "", what: str = "file") -> IO[bytes]:
    """Regular file ``name`` in folder ``dfd``, for reading, never through a symlink."""
    try:
        fd = os.open(name, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, dir_fd=dfd)
    except OSError as e:
        raise _oserror(e, rel or name, what) from None
    except ValueError as e:
        raise BadRequest(f"{what} {rel or name!r}: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadRequest(f"{what} {rel or name} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(fh: IO[bytes], limit: int, rel: str, what: str = "file") -> bytes:
    """All of ``fh`` if it holds at most ``limit`` bytes, else ``BadRequest``."""
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise BadRequest(f"{what} {rel} is larger than {limit} bytes")
    return data


def create_temp_at(dfd: int, name: str) -> tuple[int, str]:
    """A new, empty file beside ``name`` in folder ``dfd``: a fresh random name created with
    ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted file or symlink is never written through)."""
    for _ in range(100):
        tmp = f".{name[:80]}.tmp{os.getpid()}-{secrets.token_hex(6)}"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0o644,
                dir_fd=dfd,
            )
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(f"no free temporary name beside {name}")  # pragma: no cover


def sync_unless_asked_not_to(fd: int) -> None:
    """``os.fsync(fd)`` unless ``EDGECAL_AGENT_FSYNC=0``: a host that removes the work folder
    when the run ends (a local device's temporary one) asks for no durability, so the agent's
    answers do not wait for the disk."""
    if os.environ.get("EDGECAL_AGENT_FSYNC", "") != "0":
        os.fsync(fd)


def write_atomic_at(dfd: int, name: str, data: bytes) -> None:
    """``name`` in folder ``dfd`` holds ``data``, all or nothing (temp, fsync, rename)."""
    fd, tmp = create_temp_at(dfd, name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            sync_unless_asked_not_to(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def fd_path(fd: int) -> str | None:
    """A path naming the already-open file ``fd`` (for libraries that only take paths), or
    None where the system has no such path."""
    for base in ("/proc/self/fd", "/dev/fd"):
        path = f"{base}/{fd}"
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                return path
    return None


# -- the work directory itself -------------------------------------------------------------------
def home_dir() -> str:
    home = os.environ.get("HOME")
    if not home:
        with contextlib.suppress(ImportError, KeyError):
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
    return home or ""


def _inside(path: str, root: str, strictly: bool) -> bool:
    if path == root:
        return not strictly
    return path.startswith(root.rstrip("/") + "/")


def check_workdir(workdir: str, root: str | None = None) -> str:
    """The real path of ``workdir`` if the agent may work there, else ``WorkdirRefused``.

    Refused: ``/``, and a folder whose real path (symlinks resolved) is not inside the user's
    home (``$HOME`` itself is refused too) or, when ``root`` is given, not ``root`` or inside
    its real path.  A ``root`` of ``/`` is no root."""
    if not workdir or "\x00" in workdir:
        raise WorkdirRefused(f"work directory {workdir!r} is empty or not a path")
    real = os.path.realpath(os.path.abspath(workdir))
    hint = (
        "set `workdir` in the boards file to a folder of its own inside the user's home "
        "(e.g. .cache/edgecal), or configure its root"
    )
    if real == "/" or real == os.path.realpath("/"):
        raise WorkdirRefused(f"work directory {workdir} is the file system root; {hint}")
    home = home_dir()
    real_home = os.path.realpath(home) if home else ""
    if real_home and real == real_home:
        raise WorkdirRefused(f"work directory {workdir} is the home folder itself; {hint}")
    if root is not None:
        real_root = os.path.realpath(os.path.abspath(root))
        if real_root == "/":
            raise WorkdirRefused(f"work directory root {root} is the file system root; {hint}")
        if not _inside(real, real_root, strictly=False):
            raise WorkdirRefused(
                f"work directory {workdir} resolves to {real}, outside its root {real_root}; {hint}"
            )
        return real
    if not real_home or real_home == "/":
        raise WorkdirRefused(
            f"work directory {workdir}: the user has no home folder to keep it in; {hint}"
        )
    if not _inside(real, real_home, strictly=True):
        raise WorkdirRefused(
            f"work directory {workdir} resolves to {real}, which is not inside "
            f"the home folder {real_home}; {hint}"
        )
    return real
