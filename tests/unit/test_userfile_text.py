"""The text of the files a user names: UTF-8, and UTF-16 with its byte-order mark (Windows'
"Unicode" text), read alike; a list file saved either way names the same images."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.errors import InputFileError
from edgecal.files.userfile import read_text
from edgecal.inputs.samples import read_list


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-16-be"])
def test_a_list_file_in_utf16_names_the_same_images(tmp_path: Path, encoding: str) -> None:
    for name in ("a.png", "b é.png"):
        (tmp_path / name).write_bytes(b"")
    text = "a.png\r\nb é.png\r\n"
    data = text.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):  # with the mark Windows writes
        data = ("\ufeff" + text).encode(encoding)
    (tmp_path / "list.txt").write_bytes(data)
    got = read_list(tmp_path / "list.txt")
    assert [p.name for p in got] == ["a.png", "b é.png"]


def test_a_file_that_only_starts_like_utf16_is_named(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xff\xfe" + b"a\x00b")  # an odd byte count: no UTF-16 text
    with pytest.raises(InputFileError, match=r"labels\.csv starts with a UTF-16 byte-order mark"):
        read_text(path, "labels file")
