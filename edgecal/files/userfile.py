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
