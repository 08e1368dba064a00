"""calibrate and validate through labgrid places on the emulated boards (the farm of
tests/labgrid/conftest.py), and an exporter that goes away mid-run.

Model: the reference digits with 40 images (two boards: 7 shards per pass), so that a board
lost after the first shard result still has work the scheduler must give to the other.  The
reference is the same fleet named in the boards file (``--device emu1 --device emu4``): the
tables are the same bytes (same profile, same agent).  The sample model validated on 4 images.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import edgecal
from edgecal.cli.main import main
from edgecal.fleet.prepare import Devices
from tests.boards.test_board_calibrate import REF, calibrate_args, cli, report
from tests.labgrid.farm import Farm
from tests.labgrid.test_labgrid_places import OTHER, holder

pytestmark = [pytest.mark.board, pytest.mark.labgrid]
N_IMAGES = 40
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"


@pytest.fixture(scope="module")
def image_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "images.txt"
    path.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(N_IMAGES)))
    return path


@pytest.fixture(scope="module")
def boards_table(
    image_list: Path, emulated_boards: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    """The fleet emu1 + emu4 of the boards file, without labgrid."""
    out = tmp_path_factory.mktemp("boards") / "fleet.table"
    source = next(iter(emulated_boards.values())).source
    argv = calibrate_args(image_list, out, "--device", "emu1", "--device", "emu4")
    code = main([*argv, "--boards", str(source)])
    assert code == 0
    return out.read_bytes()


def test_fleet_calibration_over_places(
    farm: Farm,
    farm_boards: Path,
    image_list: Path,
    boards_table: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "farm.table"
    argv = calibrate_args(image_list, out, "--labgrid-match", "lab-*", "--boards", str(farm_boards))
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert out.read_bytes() == boards_table
    assert holder(farm, "lab-emu1") == holder(farm, "lab-emu4") == "None"  # released


def validate_sample(farm: Farm, boards: Path, place: str, profile: str, tmp_path: Path) -> None:
    """The sample model (calibrated here) validated through ``labgrid:PLACE`` with 4 images:
    the place's device and its ``edgecal_profile`` tag in the result, the place released."""
    prep: dict[str, Any] = dict(
        pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48)
    )
    model = (SAMPLE / "model.param", SAMPLE / "model.bin")
    table = tmp_path / "model.table"
    edgecal.calibrate(model, edgecal.ImageInput(SAMPLE / "calib.txt", **prep), out=table)
    images = tmp_path / "images.txt"
    images.write_text("".join(f"{p}\n" for p in sorted((SAMPLE / "test").glob("*.png"))[:4]))
    val = edgecal.validate(
        model,
        table=table,
        inputs=edgecal.ImageInput(images, **prep),
        labels=SAMPLE / "labels.csv",
        devices=Devices.of(f"labgrid:{place}", boards=boards),
    )
    (r,) = val.results
    assert (r.device["name"], r.device["machine"]) == (f"labgrid:{place}", "aarch64")
    assert r.device["profile"] == profile
    assert r.n_samples == 4 and val.top1_drop is not None and val.top1_drop <= 25.0
    assert holder(farm, place) == "None"


def test_validate_through_a_place(farm: Farm, farm_boards: Path, tmp_path: Path) -> None:
    validate_sample(farm, farm_boards, "lab-emu1", "emulated-pi4", tmp_path)


def calibrate_cut(
    farm: Farm,
    board: str,
    place: str,
    images: Path,
    out: Path,
    devices: Devices,
    restore: Callable[[], None],
) -> list[str]:
    """The reference digits calibrated over ``devices`` into ``out`` while exp-``board`` (the
    exporter of place ``place``) is stopped after the first shard result (then ``restore``
    brings it back, for the other tests): the lines the run said, with the place's ``given
    up`` line asserted."""
    said: list[str] = []
    stopper: list[threading.Thread] = []

    def progress(description: str, total: int) -> Any:
        def tick(done: int, total: int) -> None:
            if done and not stopper:
                stopper.append(threading.Thread(target=farm.stop_exporter, args=(board,)))
                stopper[0].start()

        return tick

    try:
        edgecal.calibrate(
            (REF / "model.param", REF / "model.bin"),
            edgecal.ImageInput(
                images, pixel="GRAY", mean=(0.0,), norm=(0.00392157,), shape=(32, 32)
            ),
            out=out,
            devices=devices,
            progress=progress,
            say=said.append,
        )
    finally:
        for t in stopper:
            t.join()
        if f"exp-{board}" not in farm.procs:
            restore()
    lost = [s for s in said if s.startswith(f"labgrid:{place}: given up (")]
    assert lost and f"its labgrid exporter exp-{board} is gone" in lost[0], said
    return said


def test_exporter_gone_mid_run_gives_the_board_up(
    farm: Farm,
    farm_boards: Path,
    emulated_boards: dict[str, Any],
    image_list: Path,
    boards_table: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """exp-emu1 stops after the first shard result: lab-emu1's next job fails as a lost link,
    the board is given up and its shards go to lab-emu4; the table is the uncut run's."""
    out = tmp_path / "cut.table"
    said = calibrate_cut(
        farm,
        "emu1",
        "lab-emu1",
        image_list,
        out,
        Devices.of("labgrid:lab-*", boards=farm_boards),
        lambda: farm.start_exporter(emulated_boards["emu1"]),
    )
    report(capsys, "[labgrid exporter gone] " + " | ".join(said))
    assert out.read_bytes() == boards_table
    assert holder(farm, "lab-emu1") == holder(farm, "lab-emu4") == "None"


def test_fleet_leaves_out_a_place_held_by_another_client(
    farm: Farm, farm_boards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lab-emu4 held by another pipeline: the fleet runs on lab-emu1, naming the holder."""
    images = tmp_path / "images.txt"
    images.write_text("".join(f"{REF}/images/calib_{i:02d}.png\n" for i in range(10)))
    farm.client("-p", "lab-emu4", "acquire", user=OTHER)
    try:
        out = tmp_path / "one.table"
        argv = calibrate_args(images, out, "--labgrid-match", "lab-*", "--boards", str(farm_boards))
        code, _, err = cli(capsys, *argv)
        assert code == 0, err
        assert (
            f"labgrid:lab-emu4: left out: labgrid:lab-emu4: the place is held by "
            f"{socket.gethostname()}/{OTHER}" in err
        ), err
        assert holder(farm, "lab-emu4").endswith(f"/{OTHER}")  # still theirs
        assert holder(farm, "lab-emu1") == "None"
    finally:
        farm.client("-p", "lab-emu4", "release", user=OTHER)
