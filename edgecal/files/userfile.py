"""Reading the files a user names, with errors that say which file and what is wrong."""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path

from edgecal.errors import InputFileError, UsageError


def not_a_file(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it exists and is not a regular file (symlinks followed): "a
    folder", "a FIFO (named pipe)", "a socket", "a device", "a special file"; None: a regular
    file, or nothing there (or it cannot be looked at).  Asked with ``os.stat``: a FIFO is
    never opened (opening one waits for a writer)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path``; ``what`` names its role in messages ("param file", ...).  Only a
    regular file is read: anything else (a FIFO, a device) is refused before it is opened."""
    kind = not_a_file(path)
    if kind is not None and kind != "a folder":
        raise InputFileError(
            f"{what} {path} is {kind}, not a regular file",
            hint=f"save the {what} as a regular file and give that",
        )
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputFileError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise InputFileError(f"{what} {path} cannot be read: {exc.strerror}") from None


#: The byte-order marks of UTF-16 (what Windows tools call "Unicode"), little and big endian.
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_text(path: Path, what: str) -> str:
    """The text of ``path``: UTF-8 (undecodable bytes kept as surrogates), or UTF-16 when it
    starts with UTF-16's byte-order mark (a list or labels file saved as Windows' "Unicode");
    a UTF-8 byte-order mark is left for the caller to skip."""
    data = read_bytes(path, what)
    if data[:2] in UTF16_BOMS:
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise InputFileError(
                f"{what} {path} starts with a UTF-16 byte-order mark but is not UTF-16 text",
                hint="save it as UTF-8 text",
            ) from None
    return data.decode("utf-8", errors="surrogateescape")


def path_text(value: object, name: str) -> str:
    """``value`` (the argument ``name``) as a path's text: a ``str``, ``os.PathLike`` or
    ``bytes`` (decoded as the file system does), never holding a NUL byte; else a
    :class:`UsageError` naming ``name``."""
    text: object = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not isinstance(text, str):
        shown = f"{type(value).__name__} {reprlib.repr(value)}"
        raise UsageError(
            f"{name} takes a path (a str or os.PathLike), not {shown}",
            hint=f"give {name} a path as a str or a pathlib.Path",
        )
    if "\0" in text:
        raise UsageError(f"{name} {text!r}: a path cannot hold a NUL byte")
    return text
