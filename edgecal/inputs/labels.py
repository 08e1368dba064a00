"""Image labels for accuracy: a CSV with a ``file,label`` header.

Which image a row labels (its ``file``):

* the image's path as the image list gives it (``cls/a/x.png``), or a tail of it down to the
  bare file name (``a/x.png``, ``x.png``): a row names every image whose path (made absolute)
  ends with the row's path, whole folder names compared.  So paths relative to
  the current directory, to the list file's folder or to the labels file's folder (when it
  holds the images) all work, and so do absolute paths;
* a path starting with ``..`` is read relative to the labels file's folder;
* each image takes the row that names it most exactly (the longest path); a row that would so
  label two or more different images (a bare ``x.png`` with ``cls/a/x.png`` and
  ``cls/b/x.png`` in the list) is an error naming the images: write the paths as the list
  gives them;
* every image must have a label.

A UTF-8 byte-order mark at the start of the file (Excel's "CSV UTF-8") is skipped.  Parsing
(:func:`parse_labels`) is pure; :func:`labels_for` makes the image paths absolute against the
current directory.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TypeVar

from edgecal.errors import InputFileError

T = TypeVar("T")

#: How a row names its image, said in messages and in ``--labels``'s help.
RULE = (
    "a row's 'file' is the image's path as the image list gives it, or a shorter tail of it "
    "down to the bare file name when that names one image"
)


def parse_labels(text: str, source: str = "<labels>") -> dict[str, int]:
    out: dict[str, int] = {}
    for lineno, name, label in _label_rows(text, source):
        try:
            value = int(label)
        except ValueError:
            raise InputFileError(
                f"{source}:{lineno}: label {label!r} of {name!r} is not a class index"
            ) from None
        if value < 0:
            raise InputFileError(f"{source}:{lineno}: label {value} of {name!r} is negative")
        _once(out, name, source, lineno)
        out[name] = value
    return out


def parse_text_labels(text: str, source: str = "<labels>") -> dict[str, str]:
    """A ``file,label`` CSV whose labels are text (e.g. what a text recogniser should read)."""
    out: dict[str, str] = {}
    for lineno, name, label in _label_rows(text, source):
        _once(out, name, source, lineno)
        out[name] = label
    return out


def _once(seen: Mapping[str, object], name: str, source: str, lineno: int) -> None:
    if name in seen:
        raise InputFileError(f"{source}:{lineno}: {name!r} is labelled twice")


def _label_rows(text: str, source: str) -> Iterator[tuple[int, str, str]]:
    """``(line number, file, label)`` of every row after the header, one by one."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    rows: list[tuple[int, list[str]]] = []  # (line number, row), blank rows left out
    try:
        for r in reader:
            if r and any(c.strip() for c in r):
                rows.append((reader.line_num, r))
    except csv.Error as exc:
        raise InputFileError(f"{source}:{reader.line_num}: not valid CSV ({exc})") from None
    if not rows or [c.strip().lower() for c in rows[0][1][:2]] != ["file", "label"]:
        raise InputFileError(
            f"{source}: the first line must be the header 'file,label'",
            hint="one row per image: <image path as the list gives it>,<label>",
        )
    for lineno, row in rows[1:]:
        if len(row) < 2:
            raise InputFileError(f"{source}:{lineno}: expected 'file,label', got {row!r}")
        yield lineno, row[0].strip(), row[1].strip()


def _key_parts(name: str, base: str) -> tuple[str, ...]:
    """The path components a row's ``file`` stands for: normalised, and relative to ``base``
    (the labels file's folder, absolute) when it climbs out with ``..``."""
    norm = posixpath.normpath(name.replace(os.sep, "/")) if name else ""
    if norm == "." or not norm:
        return ()
    if norm == ".." or norm.startswith("../"):
        norm = os.path.normpath(os.path.join(base, norm))
    return PurePath(norm).parts


def _row_keys(
    mapping: Mapping[str, object], source: str, base: str
) -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """Every row's ``(components, file as written)``, by the file name it ends with."""
    by_name: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    seen: dict[tuple[str, ...], str] = {}
    for name in mapping:
        parts = _key_parts(name, base)
        if not parts:
            continue
        if parts in seen:
            raise InputFileError(
                f"{source}: {seen[parts]!r} and {name!r} name the same image",
                hint="label each image once",
            )
        seen[parts] = name
        by_name.setdefault(parts[-1], []).append((parts, name))
    return by_name


def match_labels(
    names: Sequence[str], images: Sequence[Path], source: str, *, cwd: Path | None = None
) -> list[str | None]:
    """The row (its ``file`` as written, one of ``names``) labelling each image, None where no
    row names it; the rule is the module doc's.  ``source`` is the labels file (``..`` rows are
    relative to its folder), ``cwd`` the folder relative image paths are relative to (default:
    the current directory).  A row that would label two different images is an error."""
    here = os.fspath(cwd) if cwd is not None else os.getcwd()
    base = os.path.dirname(os.path.normpath(os.path.join(here, source)))
    by_name = _row_keys(dict.fromkeys(names), source, base)
    chosen: list[str | None] = []
    users: dict[str, dict[str, Path]] = {}  # row -> absolute image path -> the image as given
    for image in images:
        full = PurePath(os.path.normpath(os.path.join(here, os.fspath(image)))).parts
        best: tuple[tuple[str, ...], str] | None = None
        for parts, name in by_name.get(full[-1], []) if full else []:
            if full[len(full) - len(parts) :] == parts and (
                best is None or len(parts) > len(best[0])
            ):
                best = (parts, name)
        chosen.append(None if best is None else best[1])
        if best is not None:
            users.setdefault(best[1], {}).setdefault("/".join(full), image)
    for name, named in users.items():
        if len(named) > 1:
            shown = ", ".join(str(p) for p in list(named.values())[:5])
            more = " ..." if len(named) > 5 else ""
            raise InputFileError(
                f"{source}: {name!r} names {len(named)} different images: {shown}{more}; "
                "a row must name one image",
                hint="write each image's path as the image list gives it (e.g. "
                f"'{next(iter(named.values()))}'), not a name several images share",
            )
    return chosen


def labels_for(
    mapping: Mapping[str, T],
    images: Sequence[Path],
    source: str,
    n_classes: int | None = None,
    *,
    cwd: Path | None = None,
) -> list[T]:
    """The label of every image (which row is an image's: the module doc); every image must
    have one, and no row may label two different images."""
    rows = match_labels(list(mapping), images, source, cwd=cwd)
    missing = [str(p) for p, row in zip(images, rows, strict=True) if row is None]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputFileError(
            f"{source} has no label for {len(missing)} image(s): {shown}",
            hint=RULE,
        )
    labels = [mapping[row] for row in rows if row is not None]
    if n_classes is not None:
        bad = sorted({v for v in labels if isinstance(v, int) and v >= n_classes})
        if bad:
            raise InputFileError(
                f"{source} has labels {bad} but the model has only {n_classes} classes",
                hint="labels are class indices 0..N-1 of the model's output",
            )
    return labels
