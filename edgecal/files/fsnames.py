"""File names that are not UTF-8 text.

POSIX file names are bytes; Python hands undecodable bytes to us as lone surrogates
(``surrogateescape``), which cannot be encoded into UTF-8 -- JSON requests, SFTP paths, ncnn's
path arguments and a strict stdout all fail on them.  These helpers turn such names into text
that goes anywhere.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every undecodable byte shown as ``\\xNN`` (what the user's shell shows as
    the raw byte); other text unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def device_file_name(name: str) -> str:
    """The name a pushed file gets on a device (under its sha256 folder, so it needs to be
    unique only in meaning, not in content): ``name`` when it is UTF-8 text (any characters:
    names are data), else the name with each undecodable byte replaced by ``_``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogateescape")
        name = raw.decode("utf-8", "replace").replace("\ufffd", "_")
    return name
