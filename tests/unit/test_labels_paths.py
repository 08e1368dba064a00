"""Which image a labels CSV row names: its path as the list gives it, or a tail of it down to
the bare file name when that names one image (class-folder datasets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgecal.errors import InputFileError
from edgecal.inputs.labels import labels_for, parse_labels, parse_text_labels

CLASS_FOLDERS = [Path("cls/a/x.png"), Path("cls/b/x.png")]


def test_rows_name_images_by_their_path_as_listed() -> None:
    m = parse_labels("file,label\ncls/a/x.png,9\ncls/b/x.png,8\n")
    assert labels_for(m, CLASS_FOLDERS, "cls/lab.csv") == [9, 8]


def test_rows_may_be_relative_to_the_list_or_labels_folder() -> None:
    # the labels file in cls/ writes paths relative to it; the list's own tail works the same
    m = parse_labels("file,label\na/x.png,9\nb/x.png,8\n")
    assert labels_for(m, CLASS_FOLDERS, "cls/lab.csv") == [9, 8]


def test_a_bare_name_shared_by_two_images_is_an_error() -> None:
    m = parse_labels("file,label\nx.png,9\n")
    with pytest.raises(InputFileError) as info:
        labels_for(m, CLASS_FOLDERS, "cls/lab1.csv")
    message = str(info.value)
    assert "cls/lab1.csv" in message and "'x.png'" in message
    assert "cls/a/x.png" in message and "cls/b/x.png" in message
    assert "as the image list gives it" in message
    # the same image listed twice (by two paths to it) is one image: its bare name is fine
    assert labels_for(m, [Path("cls/a/x.png"), Path("cls/a/x.png").absolute()], "l.csv") == [9, 9]


def test_the_most_exact_row_wins_and_a_bare_name_still_works_when_unambiguous() -> None:
    m = parse_labels("file,label\nx.png,9\nb/x.png,8\ny.png,1\n")
    images = [*CLASS_FOLDERS, Path("cls/c/y.png")]
    assert labels_for(m, images, "lab.csv") == [9, 8, 1]


def test_absolute_and_dot_dot_rows() -> None:
    here = Path.cwd()
    m = parse_labels(f"file,label\n{here / 'cls/a/x.png'},9\n../cls/b/x.png,8\n")
    assert labels_for(m, CLASS_FOLDERS, "labels/l.csv") == [9, 8]
    # relative paths are made absolute against the given folder
    m = parse_labels("file,label\n/w/cls/a/x.png,9\n../cls/b/x.png,8\n")
    assert labels_for(m, CLASS_FOLDERS, "labels/l.csv", cwd=Path("/w")) == [9, 8]


def test_a_folder_part_must_match_whole_names() -> None:
    m = parse_labels("file,label\nb/x.png,8\n")  # not a tail of .../ab/x.png
    with pytest.raises(InputFileError, match=r"no label for 1 image\(s\): cls/ab/x.png"):
        labels_for(m, [Path("cls/ab/x.png")], "l.csv")


def test_two_rows_for_one_image_are_refused() -> None:
    m = parse_text_labels("file,label\nx.png,a\n./x.png,b\n")
    with pytest.raises(
        InputFileError, match=re.escape("'x.png' and './x.png' name the same image")
    ):
        labels_for(m, [Path("x.png")], "l.csv")


def test_a_byte_order_mark_and_crlf_are_read() -> None:
    # Excel's "CSV UTF-8"
    assert parse_labels("\ufefffile,label\r\ntest_000.png,9\r\n", "lab_bom.csv") == {
        "test_000.png": 9
    }
