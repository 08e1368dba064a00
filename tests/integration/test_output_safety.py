"""The user's files are never lost or damaged by what a command writes (issue 10, part 3).

Every command here runs for real (``edgecal.cli.main.main``) on a copy of the sample model; the
inputs it must not touch are compared byte for byte (and by mtime) afterwards."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from edgecal.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
PRE = [
    "--pixel",
    "RGB",
    "--mean",
    "127.5,127.5,127.5",
    "--norm",
    "0.00784314,0.00784314,0.00784314",
    "--shape",
    "48,48",
]


def _state(path: Path) -> tuple[bytes, int, int]:
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


@pytest.fixture()
def model(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the sample model and a 6-image list (absolute paths) in ``tmp_path``."""
    param, binf = tmp_path / "model.param", tmp_path / "model.bin"
    shutil.copy(SAMPLE / "model.param", param)
    shutil.copy(SAMPLE / "model.bin", binf)
    lines = (SAMPLE / "calib.txt").read_text().split()[:6]
    lst = tmp_path / "calib.txt"
    lst.write_text("".join(f"{SAMPLE / line}\n" for line in lines))
    return param, binf, lst


@pytest.fixture(scope="module")
def table_and_hist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("made")
    lines = (SAMPLE / "calib.txt").read_text().split()[:6]
    lst = d / "calib.txt"
    lst.write_text("".join(f"{SAMPLE / line}\n" for line in lines))
    table, hist = d / "t.table", d / "h.npz"
    assert (
        main(
            [
                "-q",
                "calibrate",
                str(SAMPLE / "model.param"),
                str(SAMPLE / "model.bin"),
                "--images",
                str(lst),
                *PRE,
                "--out",
                str(table),
                "--histograms-out",
                str(hist),
            ]
        )
        == 0
    )
    return table, hist


# ----------------------------------------------------------------------------- inputs kept


def test_ncnn2table_refuses_to_write_over_the_param(
    model: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    param, binf, _ = model
    before = _state(param), _state(binf)
    for target in (param, binf):
        assert main(["ncnn2table", str(param), str(binf), str(target)]) == 2
        err = capsys.readouterr().err
        assert "refusing to overwrite an input" in err and str(target) in err
    assert (_state(param), _state(binf)) == before


def test_quantize_in_place_and_through_links_is_refused(
    model: tuple[Path, Path, Path],
    table_and_hist: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    param, binf, _ = model
    table, _ = table_and_hist
    tmp = param.parent
    os.symlink(param, tmp / "via-symlink.param")
    os.link(binf, tmp / "hardlink.bin")
    before = [_state(p) for p in (param, binf, table)]
    cases = [
        (param, binf),  # in place
        (tmp / "via-symlink.param", tmp / "new.bin"),
        (tmp / "new.param", tmp / "hardlink.bin"),
        (tmp / "new.param", table),  # over the table it reads
        (tmp / "same.out", tmp / "same.out"),  # .param and .bin into one file
    ]
    for out_param, out_bin in cases:
        rc = main(
            ["quantize", str(param), str(binf), str(out_param), str(out_bin), "--table", str(table)]
        )
        err = capsys.readouterr().err
        assert rc == 2, (out_param, out_bin, err)
        assert "Traceback" not in err
    assert [_state(p) for p in (param, binf, table)] == before
    assert not (tmp / "new.param").exists() and not (tmp / "new.bin").exists()
    assert not (tmp / "same.out").exists()
    # ncnn2int8's drop-in too
    assert main(["ncnn2int8", str(param), str(binf), str(param), str(binf), str(table)]) == 2
    assert [_state(p) for p in (param, binf, table)] == before


def test_calibrate_refuses_outputs_over_its_inputs(
    model: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    param, binf, lst = model
    sample = Path(lst.read_text().split()[0])
    mine = tmp_path / "sample.png"  # a sample of our own, so a failure damages nothing
    shutil.copy(sample, mine)
    lst2 = tmp_path / "calib2.txt"
    lst2.write_text(lst.read_text() + f"{mine}\n")
    before = [_state(p) for p in (param, binf, lst2, mine)]
    base = ["-q", "calibrate", str(param), str(binf), "--images", str(lst2), *PRE]
    for extra in (
        ["--out", str(lst2)],
        ["--out", str(mine)],
        ["--out", str(param)],
        ["--out", str(tmp_path / "t.table"), "--histograms-out", str(binf)],
        ["--out", str(tmp_path / "t.table"), "--histograms-out", str(tmp_path / "t.table")],
    ):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert "edgecal: error:" in err and "--resume" not in err
    assert [_state(p) for p in (param, binf, lst2, mine)] == before
    assert not (tmp_path / "t.table").exists()


def test_table_refuses_to_write_over_its_histograms(
    table_and_hist: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, hist = table_and_hist
    mine = tmp_path / "h.npz"
    shutil.copy(hist, mine)
    before = _state(mine)
    assert main(["table", "--histograms", str(mine), "--out", str(mine)]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert _state(mine) == before


# ----------------------------------------------------------------------------- before the run


def test_an_unwritable_output_is_refused_before_the_run(
    model: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    param, binf, lst = model
    run = tmp_path / "run"
    for out in (tmp_path / "missing" / "t.table", tmp_path):
        rc = main(
            [
                "-q",
                "calibrate",
                str(param),
                str(binf),
                "--images",
                str(lst),
                *PRE,
                "--out",
                str(out),
                "--run-dir",
                str(run),
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2, err
        assert str(out) in err
        assert "--resume" not in err  # resume cannot help: it says what to do instead
        assert not run.exists()  # refused before any work


# ----------------------------------------------------------------------------- how it writes


def test_outputs_honour_the_umask_and_keep_a_replaced_files_mode(
    table_and_hist: tuple[Path, Path], tmp_path: Path
) -> None:
    _, hist = table_and_hist
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.table"
        assert main(["table", "--histograms", str(hist), "--out", str(new)]) == 0
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.table"
        kept.write_text("old\n")
        kept.chmod(0o640)
        assert main(["table", "--histograms", str(hist), "--out", str(kept)]) == 0
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
        assert kept.read_text() != "old\n"
        os.umask(0o077)
        private = tmp_path / "private.table"
        assert main(["table", "--histograms", str(hist), "--out", str(private)]) == 0
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_a_character_device_is_written_into_not_replaced(
    model: tuple[Path, Path, Path], table_and_hist: tuple[Path, Path], tmp_path: Path
) -> None:
    param, binf, _ = model
    null = tmp_path / "mynull"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert main(["ncnn2table", str(param), str(binf), str(null)]) == 0
    st = os.stat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert (
        main(
            [
                "quantize",
                str(param),
                str(binf),
                str(null),
                str(null),  # both discarded
                "--table",
                str(table_and_hist[0]),
            ]
        )
        == 0
    )
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_a_fifo_is_written_into_not_replaced(
    table_and_hist: tuple[Path, Path], tmp_path: Path
) -> None:
    table, hist = table_and_hist
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting (no thread)
    try:
        assert main(["table", "--histograms", str(hist), "--out", str(fifo)]) == 0
        got = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got == table.read_bytes()


def test_two_outputs_are_all_or_nothing(
    model: tuple[Path, Path, Path],
    table_and_hist: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The .bin cannot be written (a FIFO nobody reads): the .param is left as it was."""
    param, binf, _ = model
    table, _ = table_and_hist
    out_param, fifo = tmp_path / "int8.param", tmp_path / "int8.bin"
    out_param.write_text("the previous int8 model\n")
    os.mkfifo(fifo)
    before = _state(out_param)
    rc = main(["quantize", str(param), str(binf), str(out_param), str(fifo), "--table", str(table)])
    err = capsys.readouterr().err
    assert rc != 0 and str(fifo) in err and "Traceback" not in err
    assert _state(out_param) == before
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_dash_is_standard_output(
    model: tuple[Path, Path, Path],
    table_and_hist: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    param, binf, _ = model
    table, hist = table_and_hist
    monkeypatch.chdir(tmp_path)
    assert main(["table", "--histograms", str(hist), "--out", "-"]) == 0
    assert capsys.readouterr().out == table.read_text()
    assert (
        main(
            [
                "ncnn2table",
                str(param),
                str(binf),
                str(model[2]),
                "-",
                "mean=[127.5,127.5,127.5]",
                "norm=[0.00784314,0.00784314,0.00784314]",
                "shape=[48,48,3]",
                "pixel=RGB",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "convrelu_0_param_0 " in out and "param:" not in out
    assert (
        main(
            [
                "-q",
                "calibrate",
                str(param),
                str(binf),
                "--images",
                str(model[2]),
                *PRE,
                "--out",
                "-",
            ]
        )
        == 0
    )
    got = capsys.readouterr()
    assert got.out == table.read_text() and "wrote - " in got.err
    assert not (tmp_path / "-").exists()
    # two things on standard output at once: refused
    assert (
        main(
            [
                "-q",
                "calibrate",
                str(param),
                str(binf),
                "--images",
                str(model[2]),
                *PRE,
                "--out",
                "-",
                "--json",
            ]
        )
        == 2
    )
    assert "standard output" in capsys.readouterr().err


def test_validate_and_check_refuse_outputs_over_their_inputs(
    model: tuple[Path, Path, Path],
    table_and_hist: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    param, binf, lst = model
    table = tmp_path / "t.table"
    shutil.copy(table_and_hist[0], table)
    base = [
        "validate",
        str(param),
        str(binf),
        "--table",
        str(table),
        "--images",
        str(lst),
        *PRE,
        "--runtime",
        "calibration",
        "--threads",
        "1",
    ]
    kept = [_state(p) for p in (param, binf, lst, table)]
    assert main([*base, "--save-baseline", str(table)]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    baseline = tmp_path / "baseline.json"
    assert main([*base, "--save-baseline", str(baseline)]) == 0
    capsys.readouterr()
    assert [_state(p) for p in (param, binf, lst, table)] == kept
    assert main([*base, "--save-baseline", "-"]) == 0  # the figures on standard output
    got = capsys.readouterr()
    assert json.loads(got.out)["results"] and "int8 vs fp32 top-1 agreement" in got.err
    saved = _state(baseline)
    for extra in (
        ["--json-out", str(baseline)],
        ["--junit", str(baseline)],
        ["--json-out", str(tmp_path / "r"), "--junit", str(tmp_path / "r")],
    ):
        assert (
            main(["check", "--baseline", str(baseline), "--results", str(baseline), *extra]) == 2
        ), extra
        assert "edgecal: error:" in capsys.readouterr().err
    assert _state(baseline) == saved
    assert not (tmp_path / "r").exists()
    # '-': the JSON report on standard output, the text report on standard error
    assert (
        main(["check", "--baseline", str(baseline), "--results", str(baseline), "--json-out", "-"])
        == 0
    )
    got = capsys.readouterr()
    assert got.out.lstrip().startswith("{") and got.err


def test_tune_and_report_refuse_outputs_over_their_inputs(
    model: tuple[Path, Path, Path],
    table_and_hist: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    param, binf, lst = model
    out_dir = tmp_path / "tuned"
    out_dir.mkdir()
    table = out_dir / "calibration.table"  # the table of an earlier tune, tuned again
    shutil.copy(table_and_hist[0], table)
    kept = _state(table)
    assert (
        main(
            [
                "tune",
                str(param),
                str(binf),
                "--images",
                str(lst),
                *PRE,
                "--table",
                str(table),
                "--max-drop",
                "1",
                "--out-dir",
                str(out_dir),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "refusing to overwrite an input" in err and str(table) in err
    assert _state(table) == kept
    assert sorted(p.name for p in out_dir.iterdir()) == ["calibration.table"]
    run = tmp_path / "run"
    assert (
        main(
            [
                "validate",
                str(param),
                str(binf),
                "--table",
                str(table),
                "--images",
                str(lst),
                *PRE,
                "--runtime",
                "calibration",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    before = _state(run / "validation.json")
    assert main(["report", str(run), "-o", str(run / "validation.json")]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert _state(run / "validation.json") == before


def test_a_table_and_its_histograms_are_all_or_nothing(
    model: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    param, binf, lst = model
    table, fifo = tmp_path / "old.table", tmp_path / "h.npz"
    table.write_text("the previous table\n")
    os.mkfifo(fifo)  # nobody reads it: the histograms cannot be written
    before = _state(table)
    rc = main(
        [
            "-q",
            "calibrate",
            str(param),
            str(binf),
            "--images",
            str(lst),
            *PRE,
            "--out",
            str(table),
            "--histograms-out",
            str(fifo),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot write {fifo}" in err and "--resume" not in err
    assert _state(table) == before
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
