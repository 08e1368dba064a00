"""Image labels for accuracy: a CSV with a ``file,label`` header (``file`` = image file name)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from edgecal.errors import InputFileError

T = TypeVar("T")


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
    reader = csv.reader(io.StringIO(text))
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
            hint="one row per image: <image file name>,<class index>",
        )
    for lineno, row in rows[1:]:
        if len(row) < 2:
            raise InputFileError(f"{source}:{lineno}: expected 'file,label', got {row!r}")
        yield lineno, row[0].strip(), row[1].strip()


def labels_for(
    mapping: Mapping[str, T], images: Sequence[Path], source: str, n_classes: int | None = None
) -> list[T]:
    """The label of every image, by file name; every image must have one."""
    missing = [p.name for p in images if p.name not in mapping]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputFileError(
            f"{source} has no label for {len(missing)} image(s): {shown}",
            hint="the 'file' column holds image file names as they appear in the image list",
        )
    labels = [mapping[p.name] for p in images]
    if n_classes is not None:
        bad = sorted({v for v in labels if isinstance(v, int) and v >= n_classes})
        if bad:
            raise InputFileError(
                f"{source} has labels {bad} but the model has only {n_classes} classes",
                hint="labels are class indices 0..N-1 of the model's output",
            )
    return labels
