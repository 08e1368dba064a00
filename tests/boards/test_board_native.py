"""edgecal through the native agent on the emulated boards: ``emuv7`` (armv7, qemu-arm, no
Python: ``auto`` gives the native agent) and ``emu3`` told ``agent = "native"`` (aarch64; a
copy of ``$EDGECAL_BOARDS`` with that one line added), beside ``emu1`` (aarch64, Python agent);
and the emulated phones ``phone1``/``phone2`` (adb, the aarch64 native agent) for validate,
sensitivity, check, report, tune and fleets of phones, and of a phone with a board.

Fixtures and the CI rule (skip on a developer's machine, FAIL under ``CI=true``) are
``test_board_calibrate``'s.  Model: the reference digits model (tests/data/reference/digits),
its 40 calibration images for the drop-in tables, ``N_IMAGES`` of them for the rest, labels
from its ``calib_labels.npz``.

Measured here (2 cores shared, the boards under qemu-user): ``ncnn2table`` on the whole reference
set takes 3-7 s per case on either native board (40 images); the tables differ from the host's
by at most 1.5e-7 relative in a blob scale (the same KL bin everywhere), weight lines identical.
The golden check's figures against the host (calibration runtime): emuv7 8.3e-6, emu3 (native)
9.1e-6 max relative error -- the same against the host's Python wheel and against its native
agent (which differ from each other by 8.3e-8), so the golden check's peer is left as it is.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecal.boards.config import load_boards
from edgecal.calib.table import parse_table
from edgecal.cli.main import main
from edgecal.runs.histfile import load_histograms
from tests.boards.test_board_calibrate import (
    REF,
    REL_TOL,
    calibrate_args,
    cli,
    need,
    report,
    unavailable,
)
from tests.boards.test_board_faults import Rig, fill_up, small_workdir
from tests.integration.test_reference_cli import CMDS, REFERENCE, kl_bins

pytestmark = pytest.mark.board

N_IMAGES = 10
NATIVE_BOARDS = ("emuv7", "emu3")
#: validate, sensitivity, check and report also run on the emulated phone (adb, native agent)
VALIDATED = (*NATIVE_BOARDS, "phone1")
#: each device's machine and profile, as its report names them
MACHINE_PROFILE = {
    "emuv7": ("armv7l", "emulated-armv7"),
    "emu3": ("aarch64", "emulated-pi4"),
    "phone1": ("aarch64", "emulated-phone-a76"),
}
PRE = ["--pixel", "GRAY", "--mean", "0", "--norm", "0.00392157", "--shape", "32,32"]
MODEL = [str(REF / "model.param"), str(REF / "model.bin")]


def quiet(*argv: str) -> tuple[int, str, str]:
    """The CLI in-process, outside a test's capture (module fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def boards(boards_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$EDGECAL_BOARDS`` with ``agent = "native"`` for emu3 (its Python is left unused)."""
    text = boards_file.read_text()
    if "[boards.emu3]\n" not in text:
        need(boards_file, "emu3")
    path = tmp_path_factory.mktemp("boards") / "boards.toml"
    path.write_text(text.replace("[boards.emu3]\n", '[boards.emu3]\nagent = "native"\n'))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "images.txt"
    path.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(N_IMAGES)))
    return path


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    y = np.load(REF / "calib_labels.npz")["y"]
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    path.write_text("file,label\n" + "".join(f"calib_{i:02d}.png,{int(y[i])}\n" for i in range(40)))
    return path


@pytest.fixture(scope="module")
def host_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[str, int]]]:
    """Per reference case: the host's (Python agent) KL table and its KL bins."""
    got = {}
    for case in CMDS:
        d = tmp_path_factory.mktemp(f"host-{case}")
        got[case] = dropin_table(d, case)
    return got


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """The drop-in's relative paths (as ncnn's tool is run) resolve in ``folder``."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def dropin_table(folder: Path, case: str, *extra: str) -> tuple[str, dict[str, int]]:
    """``edgecal ncnn2table`` on a copy of the reference case in ``folder``: table, KL bins."""
    work = folder / case
    shutil.copytree(REFERENCE / case, work)
    argv = CMDS[case].format(out=str(work / "ours.table"), method="kl").split()
    with inside(work):
        code, out, err = quiet("-q", "ncnn2table", *argv, *extra)
    assert code == 0, err
    return (work / "ours.table").read_text(), kl_bins(out + err)


# ----------------------------------------------------------------------------- item 5


@pytest.mark.parametrize("case", list(CMDS))
@pytest.mark.parametrize("board", NATIVE_BOARDS)
def test_reference_tables_on_native_boards_match_the_host(
    board: str,
    case: str,
    boards: Path,
    host_tables: dict[str, tuple[str, dict[str, int]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The board's ``ncnn2table`` table against the host's, per blob as ``compare`` prints it:
    weight lines identical (scaled on the host), the same KL bin on every blob."""
    need(boards, board)
    table, bins = dropin_table(tmp_path, case, "--device", board, "--boards", str(boards))
    host, host_bins = host_tables[case]
    (tmp_path / "host.table").write_text(host)
    (tmp_path / "board.table").write_text(table)
    code, out, err = cli(
        capsys, "compare", str(tmp_path / "host.table"), str(tmp_path / "board.table")
    )
    assert code == 0, err
    report(capsys, f"\n{case}: host (Python agent) vs {board} (native agent)\n{out.rstrip()}")
    assert bins == host_bins and bins, (bins, host_bins)
    a, b = parse_table(host, source="host"), parse_table(table, source=board)
    assert list(a.records) == list(b.records)
    for key in a.weight_keys:
        np.testing.assert_array_equal(a.records[key], b.records[key], err_msg=key)
    for blob in bins:
        assert float(b.blob_scale(blob)) == pytest.approx(float(a.blob_scale(blob)), rel=REL_TOL)


# ----------------------------------------------------------------------------- board check


def test_board_check_says_which_agent_and_why(
    boards: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need(boards, "emuv7", "emu3", "emu1")
    code, out, err = cli(capsys, "board", "check", "emuv7", "emu3", "emu1", "--boards", str(boards))
    assert code == 0, (out, err)
    report(capsys, out.rstrip())
    assert "agent    native (auto: the board has no usable Python" in out
    assert 'agent    native (agent = "native" in the boards file or profile)' in out
    code, out, err = cli(
        capsys, "board", "check", "emuv7", "emu3", "emu1", "--boards", str(boards), "--json"
    )
    assert code == 0, err
    got = {r["board"]: r for r in json.loads(out)}
    for name, machine, target in (("emuv7", "armv7l", "armv7"), ("emu3", "aarch64", "aarch64")):
        r = got[name]
        assert r["ok"] and r["agent_kind"] == "native" and r["agent"]["agent_kind"] == "native"
        assert r["agent"]["machine"] == machine and r["agent"]["target"] == target
        assert r["agent"]["python"] is None and r["agent"]["ncnn_ok"] is True
    assert "no usable Python" in got["emuv7"]["agent_reason"]
    assert got["emu1"]["agent_kind"] == "python" and got["emu1"]["agent"]["python"]


def test_provision_pushes_the_native_agent_alone(
    boards: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``board provision`` on a native board: the agent (content-addressed: 0 bytes the second
    time), no wheels."""
    need(boards, *NATIVE_BOARDS)
    for _ in range(2):
        code, out, err = cli(capsys, "board", "provision", *NATIVE_BOARDS, "--boards", str(boards))
        assert code == 0, (out, err)
    report(capsys, err.rstrip())
    for name, target in (("emuv7", "armv7"), ("emu3", "aarch64")):
        assert re.search(
            rf"^edgecal: {name}: native agent \(.*\): edgecal-agent-native-{target}-", err, re.M
        ), err
        assert f"edgecal: {name}: pushed 0 bytes of the native agent" in err, err
    assert "wheel" not in err and "pip" not in err


def test_golden_check_on_native_boards(boards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need(boards, *NATIVE_BOARDS)
    code, out, err = cli(
        capsys, "board", "check", *NATIVE_BOARDS, "--boards", str(boards), "--golden", "--json"
    )
    assert code == 0, (out, err)
    for r in json.loads(out):
        g = r["golden"]
        report(capsys, f"golden {r['board']} ({r['agent_kind']} agent): {g['what']}")
        assert r["agent_kind"] == "native" and g["ok"], g
        assert g["runtime"] == "calibration" and len(g["figures"]) == 4
        # measured 8.3e-6 (emuv7), 9.1e-6 (emu3): rounding, far under the 1e-3 tolerance
        assert max(f["max_rel_err"] for f in g["figures"]) < 1e-4


@pytest.mark.parametrize(
    ("options", "said", "why"),
    [
        ("ro,size=1m", "the work directory is not writable", "Read-only file system"),
        ("size=1m", "the board's disk is full", "No space left on device"),
    ],
    ids=["read-only", "full"],
)
def test_a_read_only_or_full_workdir_is_named_on_a_board_without_python(
    options: str, said: str, why: str, boards: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SFTP says a bare "Failure" for EROFS and ENOSPC; emuv7 has no Python to ask, so its
    ``sh`` redoes the write and the message names the reason."""
    need(boards, "emuv7")
    board = load_boards(boards)["emuv7"]
    if os.geteuid() != 0 or not board.host.startswith("10.200."):
        unavailable("mounting a tmpfs on the board needs root and BOARDS_NET=netns")
    state = Path(str(board.identity_file)).parent.parent
    tmp = boards.parent
    with small_workdir(Rig(boards, state, tmp, b"", tmp), "emuv7", options) as (small, mnt):
        if not options.startswith("ro,"):
            fill_up(mnt)
        code, _, err = cli(capsys, "hello", "--device", "emuv7", "--boards", str(small))
    report(capsys, f"emuv7, {options} work directory: {err.strip().splitlines()[0]}")
    assert code != 0 and said in err and why in err, err
    assert "disk full?" not in err


# ----------------------------------------------------------------------------- calibrate


@pytest.fixture(scope="module")
def host_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("host") / "host.table"
    code, _, err = quiet(*calibrate_args(images, out))
    assert code == 0, err
    return out


def moved_counts(a: Path, b: Path) -> dict[str, int]:
    """Per blob: histogram counts in another bin between two histogram files."""
    ha, hb = load_histograms(a), load_histograms(b)
    assert set(ha.stats) == set(hb.stats)
    return {
        blob: int(
            np.abs(
                np.asarray(s.counts, np.int64) - np.asarray(hb.stats[blob].counts, np.int64)
            ).sum()
            // 2
        )
        for blob, s in ha.stats.items()
    }


def assert_close_to_host(host: Path, out: Path, name: str) -> None:
    """As ``test_calibrate_on_emu1_matches_x86``: weights identical, abs-max and blob scales
    within REL_TOL, at most 1e-3 of the counts (or 8) in a neighbouring bin."""
    local = parse_table(host.read_text(), source="host")
    board = parse_table(out.read_text(), source=name)
    assert local.weight_keys == board.weight_keys
    for key in local.weight_keys:
        np.testing.assert_array_equal(local.records[key], board.records[key])
    hl, hb = load_histograms(host.with_suffix(".npz")), load_histograms(out.with_suffix(".npz"))
    moved = moved_counts(host.with_suffix(".npz"), out.with_suffix(".npz"))
    for blob, sl in hl.stats.items():
        assert float(hb.stats[blob].absmax) == pytest.approx(float(sl.absmax), rel=REL_TOL)
        assert moved[blob] <= max(8, 1e-3 * float(np.sum(sl.counts))), (blob, moved)
        assert float(board.blob_scale(blob)) == pytest.approx(
            float(local.blob_scale(blob)), rel=REL_TOL
        ), blob


def calibrate_on(
    capsys: pytest.CaptureFixture[str],
    boards: Path,
    images: Path,
    out: Path,
    *devices: str,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``edgecal calibrate`` of ``images`` into ``out`` on ``devices`` (one fleet when several)
    of ``boards``; it must succeed.  Its JSON summary, with ``shares``: samples per device."""
    code, stdout, err = cli(
        capsys,
        *calibrate_args(images, out),
        *(a for d in devices for a in ("--device", d)),
        "--boards",
        str(boards),
        *extra,
    )
    assert code == 0, err
    summary: dict[str, Any] = json.loads(stdout)
    summary["shares"] = {a["board"]: a["samples"] for a in summary.get("fleet") or ()}
    return summary


def test_calibrate_on_emuv7(
    boards: Path,
    images: Path,
    host_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    need(boards, "emuv7")
    runs = [
        calibrate_on(capsys, boards, images, tmp_path / f"emuv7_{k}.table", "emuv7")
        for k in range(2)
    ]
    dev, first = runs[0]["device"], tmp_path / "emuv7_0.npz"
    report(
        capsys,
        f"emuv7 calibrate: pushed {runs[0]['bytes_pushed']} B then {runs[1]['bytes_pushed']} B, "
        f"counts moved vs host {moved_counts(host_run.with_suffix('.npz'), first)}",
    )
    assert dev["machine"] == "armv7l" and dev["agent_kind"] == "native", dev
    assert runs[1]["bytes_pushed"] == 0  # agent, model and shards are on the board
    assert (tmp_path / "emuv7_0.table").read_bytes() == (tmp_path / "emuv7_1.table").read_bytes()
    assert_close_to_host(host_run, tmp_path / "emuv7_0.table", "emuv7")


def test_fleet_of_a_native_and_a_python_board(
    boards: Path,
    images: Path,
    host_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """emu3 (native agent) and emu1 (Python agent) share a profile: one fleet; each board's
    histograms are its own ncnn's, merged."""
    need(boards, "emu3", "emu1")
    alone, fleet = tmp_path / "emu3.table", tmp_path / "fleet.table"
    calibrate_on(capsys, boards, images, alone, "emu3")
    shares = calibrate_on(capsys, boards, images, fleet, "emu3", "emu1")["shares"]
    vs_alone = moved_counts(alone.with_suffix(".npz"), fleet.with_suffix(".npz"))
    same = "identical" if alone.read_bytes() == fleet.read_bytes() else "differ"
    report(
        capsys,
        f"fleet emu3 (native) + emu1 (python): samples per board {shares}; counts moved vs "
        f"emu3 alone {vs_alone}; tables {same}",
    )
    assert set(shares) == {"emu3", "emu1"}
    assert_close_to_host(host_run, fleet, "fleet")
    assert_close_to_host(alone, fleet, "fleet")


def test_fleet_of_two_phones(
    boards: Path,
    images: Path,
    host_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two emulated phones (adb, one profile) share one calibration."""
    need(boards, "phone1", "phone2")
    fleet = tmp_path / "phones.table"
    shares = calibrate_on(capsys, boards, images, fleet, "phone1", "phone2")["shares"]
    report(capsys, f"fleet phone1 + phone2: samples per phone {shares}")
    assert set(shares) == {"phone1", "phone2"} and all(n > 0 for n in shares.values())
    assert_close_to_host(host_run, fleet, "fleet")


def with_profile(text: str, board: str, profile: str) -> str:
    """A boards file's text with ``board``'s profile replaced."""
    out, current = [], None
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip()
        if current == f"[boards.{board}]" and line.startswith("profile ="):
            line = f"profile = {json.dumps(profile)}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_fleet_of_a_phone_and_a_board_of_its_profile(
    boards: Path,
    images: Path,
    host_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The phone (adb) and emu3 (SSH, native agent) told it is the same kind of device
    (profile emulated-phone-a76): one fleet over two transports, the histograms merged."""
    need(boards, "emu3", "phone1")
    mixed = tmp_path / "boards.toml"
    mixed.write_text(with_profile(boards.read_text(), "emu3", "emulated-phone-a76"))
    fleet = tmp_path / "fleet.table"
    shares = calibrate_on(capsys, mixed, images, fleet, "phone1", "emu3")["shares"]
    report(capsys, f"fleet phone1 (adb) + emu3 (ssh), one profile: samples per device {shares}")
    assert set(shares) == {"phone1", "emu3"} and all(n > 0 for n in shares.values())
    assert_close_to_host(host_run, fleet, "fleet")


def test_resume_on_emuv7(
    boards: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need(boards, "emuv7")
    run, out = tmp_path / "run", tmp_path / "t.table"
    calibrate_on(capsys, boards, images, out, "emuv7", extra=("--run-dir", str(run)))
    whole = out.read_bytes()
    gone = sorted((run / "parts").glob("*/*.npz"))
    assert gone, list(run.iterdir())
    for p in gone[::2]:
        p.unlink()
    out.unlink()
    code, stdout, err = cli(capsys, "-q", "calibrate", "--resume", str(run), "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    report(capsys, f"emuv7 resume: {len(gone[::2])} of {len(gone)} parts redone, {doc['fleet']}")
    assert out.read_bytes() == whole
    assert sum(a["shards"] for a in doc["fleet"]) == len(gone[::2])


# ----------------------------------------------------------------------------- validate & co


def board_args(boards: Path, *names: str) -> list[str]:
    return [*(a for n in names for a in ("--device", n)), "--boards", str(boards), "--threads", "1"]


def labelled_args(images: Path, labels: Path, boards: Path, board: str, *table: Path) -> list[str]:
    """The model (with ``table`` when given), the labelled images and ``board``: what validate,
    check and tune are given here."""
    return [
        *MODEL,
        *(a for t in table for a in ("--table", str(t))),
        "--images",
        str(images),
        *PRE,
        "--labels",
        str(labels),
        *board_args(boards, board),
    ]


@pytest.fixture(scope="module", params=VALIDATED)
def validated(
    request: pytest.FixtureRequest,
    boards: Path,
    images: Path,
    labels: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The reference KL table validated (deployed runtime, with --sensitivity) on the board."""
    board = str(request.param)
    need(boards, board)
    d = tmp_path_factory.mktemp(f"validate-{board}")
    run_dir, baseline = d / "run", d / "baseline.json"
    code, out, err = quiet(
        "-q",
        "validate",
        *labelled_args(images, labels, boards, board, REF / "kl.table"),
        "--sensitivity",
        "--run-dir",
        str(run_dir),
        "--save-baseline",
        str(baseline),
    )
    return {"board": board, "code": code, "out": out, "err": err, "run": run_dir, "base": baseline}


def test_validate_with_sensitivity(
    validated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out, board = validated["out"], validated["board"]
    assert validated["code"] == 0, validated["err"]
    report(capsys, f"\n{out.rstrip()}")
    assert out.startswith(f"{N_IMAGES} images on {board} (runtime deployed, 1 thread(s))\n")
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.split()[1:2] and "Conv" in ln}
    rows.update({ln.split()[0]: ln for ln in out.splitlines() if " InnerProduct " in ln})
    assert len(rows) == 5, out
    for line in rows.values():  # int8-out layers too (ncnn hands them out as int8 on ARM)
        assert float(line.split()[2]) > 0.999, line  # measured >= 0.99987
    assert re.search(rf"^sensitivity on {board} \({N_IMAGES} images, accuracy\)", out, re.M), out
    (r,) = json.loads((validated["run"] / "validation.json").read_text())["results"]
    assert r["device"]["agent_kind"] == "native" and r["device"]["python"] is None, r["device"]
    assert r["top1_int8"] >= 0.8 and r["cosine_mean"] > 0.999
    assert (validated["run"] / "sensitivity.json").exists()


def test_check_with_junit(
    validated: dict[str, Any],
    boards: Path,
    images: Path,
    labels: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import xml.etree.ElementTree as ET

    assert validated["code"] == 0, validated["err"]
    board = validated["board"]
    code, out, err = cli(
        capsys,
        "-q",
        "check",
        "--baseline",
        str(validated["base"]),
        *labelled_args(images, labels, boards, board, REF / "kl.table"),
        "--junit",
        str(tmp_path / "check.xml"),
    )
    report(capsys, out.rstrip().splitlines()[-1])
    assert code == 0, (out, err)
    assert re.search(rf"^PASS: all \d+ checks on board {board}$", out, re.M), out
    root = ET.parse(tmp_path / "check.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"
    assert int(root.get("tests", "0")) > 3


def test_report_names_the_native_board(
    validated: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert validated["code"] == 0, validated["err"]
    page = tmp_path / "report.html"
    code, _, err = cli(capsys, "report", str(validated["run"]), "-o", str(page))
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    machine, profile = MACHINE_PROFILE[validated["board"]]
    for text in (validated["board"], machine, profile, "agent_kind", "native", "1.0.20261020"):
        assert text in html, text
    if validated["board"].startswith("phone"):  # the phone's own facts
        for text in ("android", "13 (API 33)", "arm64-v8a", "cpu_clusters"):
            assert text in html, text


@pytest.mark.parametrize("board", ["emuv7", "phone1"])
def test_tune_on_a_native_device(
    board: str,
    boards: Path,
    images: Path,
    labels: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Small: the digits model, N_IMAGES images, a few seconds' budget; on the armv7 board
    and on the phone."""
    need(boards, board)
    out_dir = tmp_path / "tune"
    code, out, err = cli(
        capsys,
        "-q",
        "tune",
        *labelled_args(images, labels, boards, board),
        "--max-drop",
        "5",
        "--try-methods",
        "kl,aciq",
        "--time-budget",
        "60",
        "--out-dir",
        str(out_dir),
    )
    assert code == 0, (out, err)
    doc = json.loads((out_dir / "tune.json").read_text())
    report(
        capsys,
        f"tune on {board}: {doc['evaluations']} variants, {doc['seconds']:.0f} s, drop "
        f"{doc['initial']['drop_points']:.2f} -> {doc['final']['drop_points']:.2f}",
    )
    assert doc["target_met"] is True and doc["final"]["drop_points"] <= 5
    for name in ("calibration.table", "int8.param", "int8.bin", "report.html"):
        assert (out_dir / name).stat().st_size > 0, name
    (r,) = json.loads((out_dir / "validation.json").read_text())["results"]
    assert r["device"]["name"] == board and r["device"]["agent_kind"] == "native"
