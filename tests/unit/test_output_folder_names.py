"""An output path that names a folder by its form (``nodir/``, ``x/.``) is refused instead
of becoming a file named ``nodir``; a folder where no file can be made although the
permissions allow it (``/proc``, as root) is said as such, not as a missing folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgecal.errors import UsageError
from edgecal.files.outputs import Output, check_outputs, folder_outputs, write_outputs


def test_a_trailing_slash_names_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"--out nodir/ is a folder name \(ends in /\), and "):
        check_outputs([Output("--out", "nodir/")])
    (tmp_path / "f.table").write_text("x")
    with pytest.raises(UsageError, match=r"but f.table is a file"):
        check_outputs([Output("--out", "f.table/")])
    with pytest.raises(UsageError, match=r"is a folder name \(. or ..\)"):
        check_outputs([Output("--out", "nodir/.")])
    (tmp_path / "dir").mkdir()
    with pytest.raises(UsageError, match="is a folder, not a file"):
        check_outputs([Output("--out", "dir/")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "f.table"]
    check_outputs([Output("--out", "dir/t.table")])  # a file name in a folder: fine


def test_the_cli_writes_no_file_named_like_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgecal.cli.main import main

    sample = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
    monkeypatch.chdir(tmp_path)
    argv = ["-q", "calibrate", str(sample / "model.param"), str(sample / "model.bin")]
    argv += ["--images", str(sample / "calib.txt"), "--pixel", "RGB", "--out", "nodir/"]
    assert main(argv) == 2
    assert "is a folder name (ends in /)" in capsys.readouterr().err
    assert not os.path.lexists(tmp_path / "nodir")


@pytest.mark.skipif(not os.path.isfile("/proc/version"), reason="no /proc")
def test_a_folder_that_takes_no_files_is_not_called_missing() -> None:
    for path in ("/proc/version", "/proc/edgecal-no-such-file"):
        with pytest.raises(UsageError) as info:
            check_outputs([Output("--out", path)])
        msg = info.value.message
        assert "does not exist" not in msg, msg
        assert ("no file can be made in its folder /proc" in msg) or ("not writable" in msg)
    with pytest.raises(UsageError) as info:
        folder_outputs("--out-dir", "/proc/edgecal-run", ["run.json"])
    assert "no file can be made in /proc" in info.value.message or "not writable" in (
        info.value.message
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc")
def test_a_failed_write_in_an_existing_folder_is_not_called_missing() -> None:
    with pytest.raises(UsageError) as info:
        write_outputs([("/proc/self/edgecal-x", b"x")])
    assert "does not exist" not in info.value.message, info.value.message
