"""``board clean``'s pure parts: which pushed files stay within a budget, and the listing's
parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgecal.boards.clean import CleanReport, choose_removals
from edgecal.device.remote import StoredFile, parse_stored

D1, D2 = "a" * 64, "0123456789abcdef" * 4

stored = st.lists(
    st.builds(
        StoredFile,
        rel=st.from_regex(r"files/[0-9a-f]{64}", fullmatch=True),
        size=st.integers(0, 10_000),
        stored_at=st.integers(0, 50),
    ),
    max_size=20,
    unique_by=lambda f: f.rel,
)


@given(stored, st.integers(0, 60_000))
def test_the_newest_stay_within_the_budget_and_the_rest_go(
    files: list[StoredFile], budget: int
) -> None:
    remove, keep = choose_removals(files, budget)
    assert sorted(remove + keep, key=lambda f: f.rel) == sorted(files, key=lambda f: f.rel)
    assert sum(f.size for f in keep) <= budget
    if keep and remove:  # nothing removed is newer than anything kept
        assert max(f.stored_at for f in remove) <= min(f.stored_at for f in keep)
    if remove:  # the newest removed one did not fit
        assert sum(f.size for f in keep) + remove[0].size > budget


def test_no_budget_removes_everything_and_a_large_one_nothing() -> None:
    files = [StoredFile(f"files/{D1}", 4096, 10), StoredFile(f"files/{D2}", 0, 5)]
    assert choose_removals(files, 0) == (files, [])  # even an empty folder goes
    assert choose_removals(files, 1 << 30) == ([], files)


def test_the_listing_keeps_only_pushed_file_folders() -> None:
    text = (
        f"8 1733500000 {D1}\n"
        f"4 1733400000 {D2}\n"
        "4 1733400000 not-a-digest\n"
        f"x 1733400000 {D1}\n"
        f"4 1733400000 {D1} with space\n"
        "garbage\n"
    )
    assert parse_stored(text) == [
        StoredFile(f"files/{D1}", 8192, 1733500000),
        StoredFile(f"files/{D2}", 4096, 1733400000),
    ]


def test_the_report_line_and_document() -> None:
    r = CleanReport("pi4", "/home/pi/.cache/edgecal", [StoredFile(f"files/{D1}", 1 << 20, 1)])
    assert r.line() == (
        "pi4: removed 1 pushed file folder(s), 1.0 MiB; kept 0, 0.0 MiB (/home/pi/.cache/edgecal)"
    )
    assert r.to_dict()["removed"] == {"files": 1, "bytes": 1 << 20}
