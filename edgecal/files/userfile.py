"""Reading the files a user names, with errors that say which file and what is wrong."""

from __future__ import annotations

from pathlib import Path

from edgecal.errors import InputFileError


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path``; ``what`` names its role in messages ("param file", ...)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputFileError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise InputFileError(f"{what} {path} cannot be read: {exc.strerror}") from None


def read_text(path: Path, what: str) -> str:
    """UTF-8 text of ``path`` (undecodable bytes kept as surrogates, never an exception)."""
    return read_bytes(path, what).decode("utf-8", errors="surrogateescape")
