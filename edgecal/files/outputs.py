"""The files a command writes: checked against its inputs before any work, then written all
or nothing.

Every command that writes files names its inputs and outputs to :func:`check_outputs` before
it starts working:

* an output that is the same file as an input (same path once symlinks are resolved, or the
  same inode: a hard link) is refused -- an input is never overwritten;
* two outputs that are the same file are refused (one would silently replace the other);
* an output's folder must exist and be writable, an output must not be a folder;
* a folder a run fills (a run directory) is not a folder of its inputs' data (an images
  folder given, the folder of the samples a list names: :func:`_check_apart` says why);
* ``-`` is standard output, for the outputs that are text or JSON.

:func:`write_outputs` then writes them: every regular file goes to a temporary file beside
it first (mode ``0o666 & ~umask`` for a new file, the old mode for a replaced one), and only
when all are written are they renamed into place; if one rename fails, the ones already
renamed are put back (the old files are kept as hard-linked backups until every rename
succeeded).  An output that exists and is not a regular file (``/dev/null``, a FIFO) is
opened and written into, never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from edgecal.errors import UsageError

STDOUT = "-"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Output:
    """One file a command will write: ``role`` names it in messages (``--out``, ...);
    ``text``: ``-`` (standard output) is allowed."""

    role: str
    path: str
    text: bool = False
    #: its folder is made by the command (a run directory): the nearest existing ancestor
    #: must be a writable folder
    new_folder: bool = False


@dataclass(frozen=True)
class Input:
    """One file a command reads (``role`` names it in messages)."""

    role: str
    path: str
    #: a sample (an image, a tensor): its folder is a data set no run directory goes into
    sample: bool = False


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _identity(path: str) -> tuple[str, tuple[int, int] | None]:
    """The resolved path and, when the file exists, its (device, inode)."""
    st = _stat(path)
    return os.path.realpath(path), (st.st_dev, st.st_ino) if st is not None else None


def _special(st: os.stat_result | None) -> bool:
    """An existing file that is not a regular file (a device, a FIFO): written into."""
    return st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def _check_one(out: Output) -> None:
    path = out.path
    if path == STDOUT:
        if not out.text:
            raise UsageError(
                f"{out.role} -: standard output is only for text or JSON outputs",
                hint=f"give {out.role} a file name",
            )
        return
    if not path:
        raise UsageError(f"{out.role}: an empty file name", hint=f"give {out.role} a file name")
    if "\0" in path:
        raise UsageError(f"{out.role} {path!r}: a file name cannot hold a NUL byte")
    st = _stat(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(
            f"{out.role} {path} is a folder, not a file",
            hint=f"give {out.role} a file name inside it",
        )
    if _folder_name(path):
        raise UsageError(
            f"{out.role} {path} is a folder name "
            + ("(ends in /)" if path.endswith(("/", os.sep)) else "(. or ..)")
            + (
                f", but {path.rstrip('/' + os.sep)} is a file"
                if os.path.isfile(path.rstrip("/" + os.sep))
                else ", and there is no such folder"
                if st is None
                else ""
            )
            + ": give a file name",
            hint=f"give {out.role} a file name: NAME, or FOLDER/NAME with FOLDER an existing "
            "folder",
        )
    if st is not None and stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"{out.role} {path} is a socket", hint="write to a file")
    if _special(st):
        if not os.access(path, os.W_OK):
            raise UsageError(
                f"{out.role} {path} is not writable", hint="choose another output path"
            )
        return
    folder = os.path.dirname(os.path.realpath(path)) or "."
    if out.new_folder:
        check_folder(out.role, folder)
        return
    _writable_folder(
        folder,
        UsageError(
            f"cannot write {out.role} {path}: its folder {folder} does not exist",
            hint=f"create {folder} first, or choose another {out.role}",
        ),
        UsageError(
            f"cannot write {out.role} {path}: its folder {folder} is not writable",
            hint=f"choose a writable folder for {out.role}",
        ),
    )
    why = _cannot_make_files(folder)
    if why is not None:  # permissions allow it, the file system does not (/proc, read-only)
        raise UsageError(
            f"cannot write {out.role} {path}: no file can be made in its folder {folder} ({why})",
            hint=f"choose an output path in a writable folder for {out.role}",
        )


def _folder_name(path: str) -> bool:
    """``path`` names a folder by its form: it ends in a slash, or in ``.``/``..``."""
    return path.endswith(("/", os.sep)) or os.path.basename(path) in (".", "..")


def _cannot_make_files(folder: str) -> str | None:
    """Why no file can be made in ``folder`` although its permissions allow it (a kernel file
    system such as /proc or /sys, a read-only mount; root passes every permission check),
    found by making and removing an empty hidden file there; None: files can be made."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgecal-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def check_folder(role: str, path: PathLike) -> None:
    """A folder the command writes into (and makes, with its parents, when missing): an
    existing folder must be writable; a missing one needs a writable existing ancestor (an
    empty name is refused: it would be the current directory)."""
    name = os.fspath(path)
    if not name:
        raise UsageError(
            f"{role}: an empty folder name", hint=f"give {role} a folder (new or existing)"
        )
    if "\0" in name:
        raise UsageError(f"{role} {name!r}: a folder name cannot hold a NUL byte")
    folder = os.path.realpath(name)
    st = _stat(folder)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(
            f"{role} {path} is a file, not a folder", hint=f"give {role} a folder (new or existing)"
        )
    probe = folder
    while _stat(probe) is None:
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    _writable_folder(
        probe,
        UsageError(
            f"{role} {path} cannot be made: {probe} is not a folder", hint=f"choose another {role}"
        ),
        UsageError(
            f"{role} {path}: {probe} is not writable", hint=f"choose a writable place for {role}"
        ),
    )
    why = _cannot_make_files(probe)
    if why is not None:  # permissions allow it, the file system does not (/proc, read-only)
        raise UsageError(
            f"{role} {path}: no file can be made in {probe} ({why})",
            hint=f"choose a writable place for {role}",
        )


def _writable_folder(folder: str, not_a_folder: UsageError, not_writable: UsageError) -> None:
    """Raise ``not_a_folder`` unless ``folder`` is an existing folder, ``not_writable`` unless
    this user may make files in it."""
    st = _stat(folder)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise not_a_folder
    if not os.access(folder, os.W_OK | os.X_OK):
        raise not_writable


def folder_outputs(role: str, folder: PathLike, names: Iterable[str]) -> list[Output]:
    """The files ``names`` a command writes into ``folder`` (made when missing; checked by
    :func:`check_folder` first)."""
    check_folder(role, folder)
    return [Output(role, os.path.join(os.fspath(folder), n), new_folder=True) for n in names]


def check_outputs(outputs: Sequence[Output], inputs: Iterable[Input] = ()) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other, or that
    cannot be written (folder missing or not writable, a folder named as a file)."""
    outs = [o for o in outputs if o.path is not None]
    for o in outs:
        _check_one(o)
    files = [o for o in outs if o.path != STDOUT]
    ids = [_identity(o.path) for o in files]
    stdout = [o for o in outs if o.path == STDOUT]
    if len(stdout) > 1:
        raise UsageError(
            f"{stdout[0].role} and {stdout[1].role} both name standard output (-)",
            hint="write one of them to a file",
        )
    for i, (a, (ra, ia)) in enumerate(zip(files, ids, strict=True)):
        for b, (rb, ib) in zip(files[i + 1 :], ids[i + 1 :], strict=True):
            if ra == rb or (ia is not None and ia == ib):
                if _special(_stat(a.path)):
                    continue  # e.g. both to /dev/null: both discarded
                raise UsageError(
                    f"{a.role} {a.path} and {b.role} {b.path} are the same file",
                    hint=f"give {a.role} and {b.role} different files",
                )
    by_real = {r: o for o, (r, _) in zip(files, ids, strict=True)}
    by_inode = {i: o for o, (_, i) in zip(files, ids, strict=True) if i is not None}
    ins = [i for i in inputs if i.path and i.path != STDOUT]
    for inp in ins:
        real, ident = _identity(str(inp.path))
        hit = by_real.get(real) or (by_inode.get(ident) if ident is not None else None)
        if hit is not None and not _special(_stat(hit.path)):
            raise UsageError(
                f"{hit.role} {hit.path} is the {inp.role} {inp.path}: refusing to overwrite "
                "an input",
                hint=f"give {hit.role} another file name",
            )
    _check_apart([o for o in files if o.new_folder], ins)


def _check_apart(folders: Sequence[Output], inputs: Sequence[Input]) -> None:
    """A folder a run makes or fills with its files (``run_dir``, ``out_dir``) is never a
    folder of its inputs' data: not a folder given as an input (an images folder: the run's
    files would land in the data set; nor a folder inside it), and not the folder holding the
    samples a list names (the calibration images).  The folder of the model, a table or a
    list file is not refused: that is the project folder, where a run directory beside the
    inputs (``tuned/``, ``.``) is the common case, and nothing there is read by listing it."""
    given: dict[str, str] = {}  # the folder as the user named it -> its role
    for o in folders:
        given.setdefault(os.path.dirname(o.path) or ".", o.role)
    if not given:
        return
    real_out = {name: os.path.realpath(name) for name in given}
    seen: set[str] = set()
    for inp in inputs:
        inside = False
        if inp.sample:
            where = os.path.dirname(inp.path) or "."
            if where in seen:
                continue
            seen.add(where)
            real, what = os.path.realpath(where), f"the folder of the {inp.role} {inp.path}"
        elif os.path.isdir(inp.path):
            real, what, inside = os.path.realpath(inp.path), f"the {inp.role} {inp.path}", True
        else:
            continue
        for name, out in real_out.items():
            within = inside and out.startswith(real.rstrip(os.sep) + os.sep)
            if out == real or within:
                role = given[name]
                raise UsageError(
                    f"{role} {name} is {'inside ' if within else ''}{what}, a folder the run "
                    "reads its inputs from: refusing to write the run's files among them",
                    hint=f"give {role} a folder of its own (e.g. beside the inputs)",
                )


# ----------------------------------------------------------------------------- writing


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as fh,
    ):
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_into(path: str, data: bytes) -> None:
    """Write into an existing non-regular file (a device, a FIFO), never replacing it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO without a reader
            raise OSError(exc.errno, "a FIFO with no reader", path) from None
        raise
    try:
        os.set_blocking(fd, True)
        _write_fd(fd, data)
    finally:
        os.close(fd)


def write_stdout(data: bytes) -> None:
    """Write ``data`` (text: a table, a page, JSON; UTF-8) to whatever ``sys.stdout`` is now:
    its bytes to its ``buffer`` when it has one (a terminal, a pipe, a file), else decoded as
    text (``contextlib.redirect_stdout`` into a ``StringIO``, a notebook's stream); an
    ``OSError`` naming ``-`` when there is no standard output (``pythonw``)."""
    out = sys.stdout
    if out is None:
        raise OSError(errno.EBADF, "there is no standard output", STDOUT)
    buffer = getattr(out, "buffer", None)
    out.flush()
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        out.write(data.decode("utf-8", errors="replace"))
        out.flush()


@dataclass
class _Pending:
    target: str  # where the bytes go (symlinks resolved: a symlinked output stays a link)
    tmp: str
    backup: str | None = None
    renamed: bool = False


def _prepare(path: str, data: bytes, umask: int, durable: bool) -> _Pending:
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    st = _stat(target)
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".edgecal-tmp", dir=folder or ".")
    try:
        os.fchmod(fd, mode)
        _write_fd(fd, data)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return _Pending(target, tmp)


def _backup(p: _Pending) -> None:
    """Keep the old file (a hard link beside it) until every output is in place."""
    if not os.path.lexists(p.target):
        return
    folder, name = os.path.split(p.target)
    for _ in range(8):
        cand = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.edgecal-old")
        try:
            os.link(p.target, cand)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links (FAT): a copy serves as well
            if os.path.lexists(cand):
                continue
            shutil.copyfile(p.target, cand)
        p.backup = cand
        return
    raise FileExistsError(f"no free backup name beside {p.target}")


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """An ``OSError`` inside names ``path`` (the user's name, not a temporary file's)."""
    try:
        yield
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror or str(exc), path) from None


def write_files(files: Sequence[tuple[PathLike, bytes]], *, durable: bool = True) -> None:
    """Write every ``(path, data)``, all or nothing (raises ``OSError`` as it comes).
    ``durable=False``: no fsync (files in a temporary folder that nothing reads after a crash)."""
    umask = current_umask()
    regular: list[tuple[str, bytes]] = []
    special: list[tuple[str, bytes]] = []
    for path, data in files:
        p = os.fspath(path)
        if p == STDOUT or _special(_stat(p)):
            special.append((p, data))
        else:
            regular.append((p, data))
    pending: list[_Pending] = []
    try:
        for p, data in regular:
            with _naming(p):
                pending.append(_prepare(p, data, umask, durable))
        for p, data in special:  # cannot be undone: after every temp file is written
            with _naming(p):
                if p == STDOUT:
                    write_stdout(data)
                else:
                    _write_into(p, data)
        for item, (p, _) in zip(pending, regular, strict=True):
            with _naming(p):
                _backup(item)
                os.replace(item.tmp, item.target)
            item.renamed = True
    except BaseException:
        for item in reversed(pending):
            with contextlib.suppress(OSError):
                if item.renamed:
                    if item.backup is not None:
                        os.replace(item.backup, item.target)
                        item.backup = None
                    else:
                        os.unlink(item.target)
                else:
                    os.unlink(item.tmp)
        raise
    finally:
        for item in pending:
            if item.backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(item.backup)


def write_outputs(files: Sequence[tuple[PathLike, bytes]]) -> None:
    """:func:`write_files`, its failures as errors naming the file."""
    try:
        write_files(files)
    except OSError as exc:
        name = exc.filename or (os.fspath(files[0][0]) if files else "")
        folder = os.path.dirname(os.path.realpath(name)) or "."
        if isinstance(exc, FileNotFoundError) and not os.path.isdir(folder):
            raise UsageError(
                f"cannot write {name}: its folder {folder} does not exist",
                hint="create the folder, or choose another output path",
            ) from None
        if isinstance(exc, FileNotFoundError):  # the folder is there: it takes no new files
            raise UsageError(
                f"cannot write {name}: no file can be made in its folder {folder} "
                f"({exc.strerror or exc})",
                hint="nothing was changed; choose an output path in a writable folder",
            ) from None
        raise UsageError(
            f"cannot write {name}: {exc.strerror or exc}",
            hint="nothing was changed; free disk space or choose another output path",
        ) from None


def input_paths(role: str, paths: Iterable[PathLike | None]) -> list[Input]:
    """``Input`` entries for the paths given (``None`` and empty names left out)."""
    return [Input(role, os.fspath(p)) for p in paths if p]


def sample_inputs(paths: Iterable[Iterable[PathLike]]) -> list[Input]:
    """The samples of a ``SampleSource`` (``source.paths``) as inputs."""
    return [Input("sample", os.fspath(p), sample=True) for per_input in paths for p in per_input]
