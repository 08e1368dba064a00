"""edgecal on emulated aarch64 boards (toolchains/emuboard.sh, ``make boards-up``).

The boards come from ``EDGECAL_BOARDS``: ``emu1`` (Pi 4-like, cortex-a72: ncnn's fp32 paths),
``emu2`` (Pi 5-like, cortex-a76: asimdhp, fp16 arithmetic when deployed) and, for the
provisioning test, a bare board (``EDGECAL_BARE_BOARD``, default ``emu3``; start it with
``make boards-up BOARDS="emu1 emu2 emu3:bare"``).  Without a boards file or with a board that
cannot be reached these tests skip on a developer's machine and FAIL under ``CI=true``.

Everything runs under qemu (~300x slower than native): the reference digits model with 10
images.  Measured tolerance, x86 (AVX-512) vs emu1 (cortex-a72, fp32), 10 images (see
``test_calibrate_on_emu1_matches_x86``): abs-max relative difference <= 2.2e-7 (1-2 ulp), at
most 5 of 82557 histogram counts in a neighbouring bin, blob scales relative difference
<= 2.6e-7, weight scales identical.  Asserted with margin: 1e-5 relative, 1e-3 of the counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from edgecal.boards.config import load_boards
from edgecal.calib.table import parse_table
from edgecal.cli.main import main
from edgecal.runs.histfile import load_histograms

pytestmark = pytest.mark.board

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "data" / "reference" / "digits"
IN_CI = os.environ.get("CI", "").lower() == "true"
N_IMAGES = 10
BARE = os.environ.get("EDGECAL_BARE_BOARD", "emu3")
REL_TOL = 1e-5


def unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {why}", pytrace=False)
    pytest.skip(why)


_REACHED: dict[str, str | None] = {}


def need(boards_file: Path, *names: str) -> None:
    """Fail (CI) or skip unless each board is in the file and can be connected to."""
    from edgecal.boards.open import open_board
    from edgecal.errors import DeviceError

    known = load_boards(boards_file)
    for name in names:
        if name not in known:
            unavailable(f"board {name} is not in {boards_file}")
        if name not in _REACHED:
            try:
                open_board(known[name]).close()
                _REACHED[name] = None
            except DeviceError as e:
                _REACHED[name] = str(e)
        if _REACHED[name]:
            unavailable(f"board {name} cannot be reached: {_REACHED[name]}")


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """A measured figure, printed past the capture (kept out of the CLI output read back)."""
    with capsys.disabled():
        print(text)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def image_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "images.txt"
    path.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(N_IMAGES)))
    return path


def calibrate_args(image_list: Path, out: Path, *extra: str) -> list[str]:
    return [
        "-q",
        "calibrate",
        str(REF / "model.param"),
        str(REF / "model.bin"),
        "--images",
        str(image_list),
        "--pixel",
        "GRAY",
        "--mean",
        "0",
        "--norm",
        "0.00392157",
        "--shape",
        "32,32",
        "--out",
        str(out),
        "--histograms-out",
        str(out.with_suffix(".npz")),
        "--json",
        *extra,
    ]


@pytest.fixture(scope="module")
def local_run(image_list: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.table"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(calibrate_args(image_list, out)) == 0
    return out


def test_board_check_emu1_emu2(boards_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need(boards_file, "emu1", "emu2")
    code, out, err = cli(
        capsys, "board", "check", "emu1", "emu2", "--boards", str(boards_file), "--json"
    )
    assert code == 0, err
    reports = {r["board"]: r for r in json.loads(out)}
    for name in ("emu1", "emu2"):
        r = reports[name]
        assert r["ok"] and r["agent"]["ncnn_ok"], r
        assert r["facts"]["machine"] == "aarch64"
        assert r["facts"]["python"].startswith("3.")
        assert r["facts"]["disk_free"] > 0 and r["facts"]["mem_total"] > 0
    assert "asimdhp" not in reports["emu1"]["facts"]["cpu_features"]
    assert {"asimdhp", "asimddp"} <= set(reports["emu2"]["facts"]["cpu_features"])


def test_calibrate_on_emu1_matches_x86(
    boards_file: Path,
    image_list: Path,
    local_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    need(boards_file, "emu1")
    from edgecal.boards.open import open_board

    with open_board(load_boards(boards_file)["emu1"]) as dev:  # a first run: nothing there
        dev.link.run(["rm", "-rf", "--", dev.remote("files")], timeout_s=120)
    runs = []
    for k in range(2):
        out = tmp_path / f"emu1_{k}.table"
        t0 = time.perf_counter()
        code, stdout, err = cli(
            capsys,
            *calibrate_args(image_list, out),
            "--device",
            "emu1",
            "--boards",
            str(boards_file),
        )
        assert code == 0, err
        summary = json.loads(stdout)
        summary["wall_s"] = time.perf_counter() - t0
        runs.append(summary)
        transfer = {k: round(v, 2) for k, v in summary["transfer_timings_s"].items()}
        capture = {k: round(v, 2) for k, v in summary["timings_s"].items()}
        report(
            capsys,
            f"emu1 run {k + 1}: {summary['wall_s']:.1f} s, pushed "
            f"{summary['bytes_pushed']} B, fetched {summary['bytes_fetched']} B, "
            f"transfer {transfer}, capture {capture}",
        )
    assert runs[0]["bytes_pushed"] > 0
    assert runs[1]["bytes_pushed"] == 0  # agent, model and image shards are on the board
    assert runs[0]["device"]["machine"] == "aarch64"

    local = parse_table(local_run.read_text(), source=str(local_run))
    board = parse_table((tmp_path / "emu1_0.table").read_text(), source="emu1")
    assert local.weight_keys == board.weight_keys
    for key in local.weight_keys:  # weights are scaled on the host: identical
        np.testing.assert_array_equal(local.records[key], board.records[key])
    hl = load_histograms(local_run.with_suffix(".npz"))
    hb = load_histograms(tmp_path / "emu1_0.npz")
    for blob, sl in hl.stats.items():
        sb = hb.stats[blob]
        assert float(sb.absmax) == pytest.approx(float(sl.absmax), rel=REL_TOL), blob
        moved = np.abs(np.asarray(sl.counts, np.int64) - np.asarray(sb.counts, np.int64)).sum()
        assert moved // 2 <= max(8, 1e-3 * float(np.sum(sl.counts))), blob
        assert float(board.blob_scale(blob)) == pytest.approx(
            float(local.blob_scale(blob)), rel=REL_TOL
        ), blob


def test_emu2_deployed_histograms_differ(
    boards_file: Path,
    image_list: Path,
    local_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """cortex-a76 with the deployed runtime computes in fp16: other activations."""
    need(boards_file, "emu2")
    out = tmp_path / "emu2.table"
    code, stdout, err = cli(
        capsys,
        *calibrate_args(image_list, out),
        "--device",
        "emu2",
        "--boards",
        str(boards_file),
        "--runtime",
        "deployed",
    )
    assert code == 0, err
    assert "asimdhp" in json.loads(stdout)["device"]["cpu_features"]
    hl = load_histograms(local_run.with_suffix(".npz"))
    h2 = load_histograms(out.with_suffix(".npz"))
    moved = {
        b: int(
            np.abs(np.asarray(s.counts, np.int64) - np.asarray(h2.stats[b].counts, np.int64)).sum()
            // 2
        )
        for b, s in hl.stats.items()
    }
    totals = {b: int(np.sum(s.counts)) for b, s in hl.stats.items()}
    report(capsys, f"emu2 deployed vs x86 calibration, counts moved: {moved} of {totals}")
    assert max(moved[b] / totals[b] for b in moved) > 0.01
    local = parse_table(local_run.read_text(), source="local")
    fp16 = parse_table(out.read_text(), source="emu2")
    diffs = {b: abs(float(fp16.blob_scale(b)) / float(local.blob_scale(b)) - 1) for b in hl.stats}
    report(capsys, f"emu2 deployed vs x86: blob scale relative differences {diffs}")
    assert max(diffs.values()) > 1e-3
    # the user-facing view of the same: edgecal compare on the tables and on the histograms
    code, stdout, err = cli(capsys, "compare", str(local_run), str(out))
    assert code == 0, err
    assert all(layer in stdout for layer in hl.stats)
    code, stdout, err = cli(
        capsys,
        "compare",
        str(local_run.with_suffix(".npz")),
        str(out.with_suffix(".npz")),
        "--json",
    )
    assert code == 0, err
    rows = {r["layer"]: r for r in json.loads(stdout)}
    assert max(r["mass_moved"] for r in rows.values()) > 0.01


def test_quantized_model_runs_on_emu1(
    boards_file: Path,
    image_list: Path,
    local_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    need(boards_file, "emu1")
    qp, qb = tmp_path / "int8.param", tmp_path / "int8.bin"
    code, _, err = cli(
        capsys,
        "quantize",
        str(REF / "model.param"),
        str(REF / "model.bin"),
        str(qp),
        str(qb),
        "--table",
        str(local_run),
    )
    assert code == 0, err
    code, out, err = cli(
        capsys,
        "-q",
        "validate",
        str(REF / "model.param"),
        str(REF / "model.bin"),
        str(qp),
        str(qb),
        "--images",
        str(image_list),
        "--pixel",
        "GRAY",
        "--mean",
        "0",
        "--norm",
        "0.00392157",
        "--shape",
        "32,32",
        "--device",
        "emu1",
        "--boards",
        str(boards_file),
    )
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("int8 vs fp32 top-1 agreement"))
    report(capsys, line)
    assert float(line.split(":")[1]) >= 0.8


def test_provision_a_bare_board(
    boards_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A board without numpy/ncnn (and without pip, and without internet in netns mode) that
    is to run the Python agent (``agent = "python"``; ``auto`` would give it the native one):
    check says provision; provision downloads the aarch64 wheels on the host, pushes and
    unpacks them under the work directory; check then passes and the agent runs."""
    need(boards_file, BARE)
    from edgecal.boards.open import open_board

    text = boards_file.read_text()
    assert f"[boards.{BARE}]\n" in text
    boards_file = tmp_path / "boards.toml"
    boards_file.write_text(
        text.replace(f"[boards.{BARE}]\n", f'[boards.{BARE}]\nagent = "python"\n')
    )
    board = load_boards(boards_file)[BARE]
    with open_board(board) as dev:  # start from bare: forget an earlier provisioning
        dev.link.run(["rm", "-rf", "--", dev.remote("site"), dev.remote("files")], timeout_s=120)
    code, out, err = cli(capsys, "board", "check", BARE, "--boards", str(boards_file))
    if code == 0:
        unavailable(f"board {BARE} has numpy/ncnn: start it bare (`{BARE}:bare`)")
    assert f"edgecal board provision {BARE}" in err
    wheels = Path(os.environ.get("EDGECAL_TEST_WHEELS", ROOT / "out" / "wheels"))
    t0 = time.perf_counter()
    code, out, err = cli(
        capsys, "board", "provision", BARE, "--boards", str(boards_file), "--wheels", str(wheels)
    )
    report(capsys, f"provision {BARE}: {time.perf_counter() - t0:.1f} s\n{err}")
    assert code == 0, err
    assert "OK" in out and "agent    runs" in out
    pushed = int(err.split("pushed ")[1].split(" bytes")[0])
    assert pushed > 10 << 20  # numpy + ncnn wheels went over SSH


def _emuboard(board_identity: str, *args: str) -> None:
    import subprocess

    env = dict(os.environ, EMUBOARD_STATE=str(Path(board_identity).parent.parent))
    r = subprocess.run(
        ["bash", str(ROOT / "toolchains" / "emuboard.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_link_cut_mid_job_and_at_connect(
    boards_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """netns mode: the link of emu1 silently drops packets while a job runs, then at connect:
    each a one-line error naming the board and the fix, within seconds, not TCP's minutes."""
    need(boards_file, "emu1")
    board = load_boards(boards_file)["emu1"]
    if not board.host.startswith("10.200.") or os.geteuid() != 0:
        pytest.skip("link cuts need boards in netns mode (BOARDS_NET=netns) and root")
    fast = tmp_path / "boards.toml"
    fast.write_text(
        boards_file.read_text().replace("[boards.emu1]\n", "[boards.emu1]\nconnect_timeout_s = 3\n")
    )
    from edgecal.boards.open import open_board
    from edgecal.errors import DeviceError

    try:
        with open_board(load_boards(fast)["emu1"]) as dev:
            dev.hello()
            import threading

            threading.Timer(
                1.0, _emuboard, (str(board.identity_file), "cut", "emu1", "drop")
            ).start()
            t0 = time.monotonic()
            with pytest.raises(DeviceError) as info:
                dev.run_job("sleep", {"seconds": 60}, timeout_s=120)
            took = time.monotonic() - t0
        report(capsys, f"link cut mid-job detected after {took:.1f} s: {info.value}")
        assert "emu1" in str(info.value) and info.value.hint and took < 30
        t0 = time.monotonic()
        code, _, err = cli(capsys, "hello", "--device", "emu1", "--boards", str(fast))
        assert code != 0 and time.monotonic() - t0 < 15
        line = next(ln for ln in err.splitlines() if ln.startswith("edgecal: error:"))
        assert "emu1" in line and "(fix: " in line, line
    finally:
        _emuboard(str(board.identity_file), "restore", "emu1")
