"""``.npz`` files on the wire, never pickle: the atomic streaming writer and the guarded reader.

Both ends use it: the agent writes its artifacts and reads the pushed inputs with it, the host
reads the artifacts and writes the job inputs.  Stdlib + numpy only; Python 3.9.

Rules: arrays are loaded with ``allow_pickle=False``; a damaged archive or member is a
:class:`~edgecal_agent.messages.ProtocolViolation`; blob names travel as ``<U`` arrays (data),
never as zip member names.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

from edgecal_agent.messages import ProtocolViolation
from edgecal_agent.workdir import (
    O_CLOEXEC,
    O_DIRECTORY,
    create_temp_at,
    sync_unless_asked_not_to,
)

#: Schema of the artifacts the agent writes (the ``schema`` member of each).
ARTIFACT_SCHEMA = 1


class NpzWriter:
    """Stream arrays into an ``.npz`` one at a time (bounded memory), atomically.

    The file appears under its final name only on :meth:`close` (tmp + ``os.replace``).
    Arrays of dtype object are refused: nothing on the wire needs pickle.
    """

    def __init__(self, path: str | os.PathLike[str], dir_fd: int | None = None) -> None:
        """``path``, or with ``dir_fd`` a name in that folder.  The temp file beside it gets a
        fresh random name, created exclusively (a planted file or link is never written)."""
        self.path = os.fspath(path)
        if dir_fd is None:
            head, self._name = os.path.split(self.path)
            self._dfd = os.open(head or ".", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            self._own_dfd = True
        else:
            self._dfd, self._name, self._own_dfd = dir_fd, self.path, False
        try:
            fd, self._tmp = create_temp_at(self._dfd, self._name)
            self._fh = os.fdopen(fd, "w+b")
            self._zip = zipfile.ZipFile(
                self._fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True
            )
        except BaseException:
            self._release()
            raise
        self._names: set[str] = set()
        self._headers: dict[tuple[np.dtype, tuple[int, ...]], bytes | None] = {}

    def _release(self) -> None:
        if self._own_dfd and self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

    def add(self, name: str, array: Any) -> None:
        arr = np.asanyarray(array)
        if arr.dtype.hasobject:
            raise ProtocolViolation(f"npz member {name!r}: object arrays are never sent")
        if name in self._names:
            raise ProtocolViolation(f"npz member {name!r} written twice")
        self._names.add(name)
        info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        arr = _c_order(arr)
        header = self._header(arr)
        with self._zip.open(info, "w", force_zip64=arr.nbytes > 2**30) as fh:
            if header is None:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
            else:  # what write_array writes, the header made once per dtype and shape
                fh.write(header)
                if arr.size:
                    fh.write(arr.reshape(-1).view(np.uint8).data)

    def _header(self, arr: np.ndarray) -> bytes | None:
        """The .npy 1.0 header of a C-ordered ``arr`` (None: numpy's own writer is needed --
        a header too long for 1.0, a dtype that is not plain data)."""
        key = (arr.dtype, arr.shape)
        if key not in self._headers:
            header = None
            if getattr(type(arr.dtype), "_legacy", True) and not arr.dtype.hasobject:
                buf = io.BytesIO()
                with contextlib.suppress(ValueError):
                    fields = np.lib.format.header_data_from_array_1_0(arr)
                    np.lib.format.write_array_header_1_0(buf, fields)
                    header = buf.getvalue()
            self._headers[key] = header
        return self._headers[key]

    def close(self) -> None:
        try:
            self._zip.close()
            self._fh.flush()
            sync_unless_asked_not_to(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, self._name, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
        except BaseException:
            self.abort()
            raise
        self._release()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._zip.close()
        self._fh.close()
        if self._dfd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp, dir_fd=self._dfd)
        self._release()

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _c_order(arr: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (``np.ascontiguousarray`` makes them 1-d)."""
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """An in-memory ``.npz`` (small files: job inputs such as EQ candidates)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            arr = np.asanyarray(arrays[name])
            if arr.dtype.hasobject:
                raise ProtocolViolation(f"npz member {name!r}: object arrays are never sent")
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w") as fh:
                np.lib.format.write_array(fh, _c_order(arr), allow_pickle=False)
    return buf.getvalue()


#: What numpy and zipfile raise on a damaged archive or member (zlib.error: bad deflate data,
#: NotImplementedError: unknown compression, RuntimeError: encrypted member, OSError: bad seek,
#: SyntaxError / TokenError: a garbled .npy header dict).
_NPZ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    MemoryError,
    TypeError,
    IndexError,
    struct.error,
    zlib.error,
    SyntaxError,
    tokenize.TokenError,
)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: A compressed member that unpacks to more than this many bytes, at more than this ratio, is
#: refused as a zip bomb (deflate tops out near 1032:1; real arrays this large are far below).
_BOMB_BYTES, _BOMB_RATIO = 64 << 20, 200


def describe(path: Any) -> str:
    """How messages name an npz source: its path, or ``<npz stream>``."""
    return os.fspath(path) if isinstance(path, (str, os.PathLike)) else "<npz stream>"


class NpzArchive:
    """An ``.npz`` read without pickle, whose defects all raise :class:`ProtocolViolation`.

    Behaves like numpy's ``NpzFile`` (``files``, ``in``, ``[name]``, context manager), except
    that every member must be a ``.npy`` array whose header fits the member's size (a forged
    shape never makes numpy allocate more than the file holds), and a damaged archive or member
    raises ``ProtocolViolation`` naming the file and member.  A missing member is a ``KeyError``
    as with ``NpzFile``.
    """

    def __init__(self, npz: Any, name: str) -> None:
        self._npz = npz
        self.name = name
        self.files: list[str] = list(npz.files)
        # sets: a run's outputs are read member by member (tens of thousands of them)
        self._files = set(self.files)
        self._members = set(npz.zip.namelist())

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._files:
            raise KeyError(f"{key} is not a file in the archive")
        zf = self._npz.zip
        member = key if key in self._members else key + ".npy"
        where = f"{self.name}: member {key!r}"
        try:
            info = zf.getinfo(member)
            if (
                info.compress_type != zipfile.ZIP_STORED
                and info.file_size > _BOMB_BYTES
                and info.file_size > _BOMB_RATIO * max(1, info.compress_size)
            ):
                raise ProtocolViolation(
                    f"{where} unpacks {info.compress_size} bytes into {info.file_size}: refused "
                    "as a zip bomb"
                )
            with zf.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                except ValueError:
                    raise ProtocolViolation(f"{where} is not a .npy array") from None
                shape, fortran, dtype, header_size = _read_header(fh, version, where)
                count = 1
                for n in shape:
                    count *= n
                need, have = count * dtype.itemsize, info.file_size - header_size
                if dtype.hasobject:  # numpy refuses it (no pickle), with its own message
                    arr = self._npz[key]
                elif need > have:
                    raise ProtocolViolation(
                        f"{where}: its header claims {dtype.str} {tuple(shape)} ({need} bytes) "
                        f"but it holds {have} bytes"
                    )
                else:  # the data read once, straight after the header read once
                    arr = _read_data(fh, shape, fortran, dtype, count, where)
        except ProtocolViolation:
            raise
        except _NPZ_ERRORS as e:
            raise ProtocolViolation(f"{where} is damaged ({type(e).__name__}: {e})") from None
        if not isinstance(arr, np.ndarray):
            raise ProtocolViolation(f"{where} is not a .npy array")
        return arr

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()


#: Parsed .npy headers by their bytes: a run's outputs repeat a few shapes thousands of times,
#: and numpy parses each header with ``ast.literal_eval``.  Only headers numpy accepted.
_HEADERS: dict[tuple[tuple[int, int], bytes], tuple[tuple[int, ...], bool, np.dtype]] = {}
_HEADERS_MAX = 4096


def _read_header(
    fh: IO[bytes], version: tuple[int, int], where: str
) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """After the magic: the header's shape, Fortran order and dtype (numpy's checks) and
    where the data starts."""
    if version not in ((1, 0), (2, 0)):
        raise ProtocolViolation(f"{where}: unsupported .npy version {version}")
    size = fh.read(2 if version == (1, 0) else 4)
    (n,) = struct.unpack("<H" if version == (1, 0) else "<I", size)
    text = fh.read(n)
    got = _HEADERS.get((version, text))
    if got is None:
        again = io.BytesIO(size + text)
        if version == (1, 0):
            got = np.lib.format.read_array_header_1_0(again)
        else:
            got = np.lib.format.read_array_header_2_0(again)
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[(version, text)] = got
    shape, fortran, dtype = got
    return shape, fortran, dtype, np.lib.format.MAGIC_LEN + len(size) + len(text)


def _read_data(
    fh: IO[bytes], shape: tuple[int, ...], fortran: bool, dtype: np.dtype, count: int, where: str
) -> np.ndarray:
    """The ``count`` elements after a .npy header, as numpy's ``read_array`` gives them: a
    writable array of ``shape`` in C or Fortran order."""
    arr = np.empty(count, dtype=dtype)
    if count:
        view = arr.view(np.uint8).data
        got = 0
        while got < len(view):
            n = fh.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise ProtocolViolation(f"{where} ends {len(view) - got} bytes early")
            got += n
    if fortran:
        return arr.reshape(shape[::-1]).transpose()
    return arr.reshape(shape)


def load_npz(path: str | os.PathLike[str] | IO[bytes], name: str | None = None) -> NpzArchive:
    """An ``.npz`` loaded with ``allow_pickle=False``, always (lazy, like numpy's ``NpzFile``).

    Raises ``ProtocolViolation`` for anything that is not a readable zip archive (a missing
    file stays ``FileNotFoundError``).  ``path`` may be an open, seekable binary file
    (``name`` then names it in messages).
    """
    name = name or describe(path)
    try:
        if isinstance(path, (str, os.PathLike)):
            with open(path, "rb") as fh:
                magic = fh.read(4)
        else:
            magic = path.read(4)
            path.seek(-len(magic), 1)
        if magic not in _ZIP_MAGICS:
            raise ProtocolViolation(f"{name} is not an .npz (zip) archive")
        npz = np.load(path, allow_pickle=False)
    except (ProtocolViolation, FileNotFoundError):
        raise
    except _NPZ_ERRORS as e:
        raise ProtocolViolation(
            f"{name} is not a readable .npz archive ({type(e).__name__}: {e})"
        ) from None
    return NpzArchive(npz, name)


def names_array(names: Sequence[str]) -> np.ndarray:
    """Blob names as data: a ``<U`` array (loads without pickle)."""
    return np.array(list(names), dtype=str) if names else np.zeros((0,), dtype="<U1")
