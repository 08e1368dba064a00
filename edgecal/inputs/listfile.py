"""Sample list files: which file each line names.

ncnn2table reads the first white-space-delimited word of each line, relative to the current
directory; edgecal's own lists take the whole line (paths may hold spaces) and were read
relative to the list file's folder.  So that a list written for either works with every
command, a relative line is looked up in both places:

* relative to the list file's folder and relative to the current directory; if exactly one
  of them exists it is the sample; if both exist and are the same file, that file; if both
  exist and are different files, it is an error naming both (the list is ambiguous: move it,
  or write absolute paths);
* a line that names no file that way and holds white space is read as ncnn2table reads it:
  its first word, looked up the same way (``img.png 3`` names ``img.png``);
* ``ncnn2table`` (the drop-in, ``cwd_first``) keeps ncnn's rule first: the first word,
  relative to the current directory when that exists, else relative to the list's folder.

Parsing is pure (:func:`list_lines`); :func:`resolve_line` asks the file system.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecal.errors import InputFileError
from edgecal.files.userfile import not_a_file

RULE = (
    "a relative line is looked up relative to the list file's folder and relative to the "
    "current directory"
)
RULE_NCNN = (
    "a relative line is looked up relative to the current directory, as ncnn2table "
    "does, then relative to the list file's folder"
)


@dataclass(frozen=True)
class ListLine:
    """One sample line: its number (from 1) and the path strings it may name, in order."""

    number: int
    candidates: tuple[str, ...]


def list_lines(text: str, *, ncnn_compat: bool = False) -> list[ListLine]:
    """The sample lines of a list file's text.

    Line ends may be ``\\n``, ``\\r\\n`` or ``\\r``; a UTF-8 byte-order mark at the start is
    dropped; blank lines are skipped.  Our own form (``ncnn_compat=False``): the line with its
    leading and trailing white space stripped, then (if it holds white space) its first word;
    a line starting with ``#`` is a comment.  ``ncnn_compat=True``: only the first word, as
    ncnn2table (``sscanf("%255s")``) reads it, and no comments.
    """
    text = text.removeprefix("\ufeff")
    out: list[ListLine] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if ncnn_compat:
            out.append(ListLine(number, (words[0],)))
            continue
        entry = line.strip()
        if entry.startswith("#"):
            continue
        out.append(ListLine(number, (entry,) if len(words) == 1 else (entry, words[0])))
    return out


def _exists(path: Path) -> bool:
    return os.path.exists(path)  # False (never an exception) for NUL bytes, too-long names


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _places(list_path: Path, name: str, cwd_first: bool) -> list[Path]:
    """Where ``name`` may be: itself when absolute, else the list's folder and the cwd."""
    p = Path(name)
    if p.is_absolute():
        return [p]
    places = [Path(name), list_path.parent / p] if cwd_first else [list_path.parent / p, Path(name)]
    return places if places[0] != places[1] else places[:1]


def resolve_line(list_path: Path, line: ListLine, *, cwd_first: bool = False) -> Path:
    """The sample file ``line`` of ``list_path`` names (see the module doc for the rule)."""
    tried: list[Path] = []
    for name in line.candidates:
        places = _places(list_path, name, cwd_first)
        found = [p for p in places if _exists(p)]
        tried += [p for p in places if p not in tried]
        if not found:
            continue
        if len(found) == 2 and not cwd_first and not _same(found[0], found[1]):
            raise InputFileError(
                f"line {line.number} of list file {list_path} ({name!r}) names two different "
                f"files: {found[0]} (relative to the list's folder) and {found[1]} (relative "
                f"to the current directory); {RULE}, and must name one file",
                hint="write absolute paths in the list, or run from a directory where the line "
                "names one file",
            )
        kind = not_a_file(found[0])  # never opened: a FIFO would block the reading
        if kind is not None:
            raise InputFileError(
                f"line {line.number} of list file {list_path} names {kind}, not an image or "
                f".npy file: {found[0]}",
                hint="give one sample file per line"
                + (
                    "; a folder of images is given itself, in place of the list file"
                    if kind == "a folder"
                    else ""
                ),
            )
        return found[0]
    raise InputFileError(
        f"line {line.number} of list file {list_path} names no file: tried "
        + ", ".join(str(p) for p in tried)
        + (
            ""
            if all(Path(c).is_absolute() for c in line.candidates)
            else f"; {RULE_NCNN if cwd_first else RULE}"
        ),
        hint="fix the line, or run from the directory the list's paths are relative to",
    )


def resolve_list(
    list_path: Path, lines: Sequence[ListLine], *, cwd_first: bool = False
) -> list[Path]:
    return [resolve_line(list_path, line, cwd_first=cwd_first) for line in lines]
