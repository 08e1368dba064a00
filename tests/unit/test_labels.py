from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.errors import InputFileError
from edgecal.inputs.labels import labels_for, parse_labels


def test_parse_and_lookup_by_file_name() -> None:
    m = parse_labels("file,label\na.png,3\nb.png, 7\n")
    assert labels_for(m, [Path("x/b.png"), Path("a.png")], "l.csv") == [7, 3]


@pytest.mark.parametrize(
    "text,match",
    [
        ("name,class\na.png,1\n", "header"),
        ("file,label\na.png,cat\n", "not a class index"),
        ("file,label\na.png,1\na.png,2\n", "twice"),
        ("file,label\na.png\n", "expected"),
    ],
)
def test_bad_label_files(text: str, match: str) -> None:
    with pytest.raises(InputFileError, match=match):
        parse_labels(text, "l.csv")


def test_unknown_images_and_class_count() -> None:
    m = parse_labels("file,label\na.png,12\n")
    with pytest.raises(InputFileError, match="no label for 1 image"):
        labels_for(m, [Path("b.png")], "l.csv")
    with pytest.raises(InputFileError, match="only 10 classes"):
        labels_for(m, [Path("a.png")], "l.csv", n_classes=10)
