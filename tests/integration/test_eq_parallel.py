"""EQ searched over several local agents (one layer per job, spread over the workers) writes
the table the one-agent search writes, byte for byte, on the reference digits model and the
sample model; the extra agents calibrate's default gives EQ do search layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.calib.table import render_table
from edgecal.device.local import LocalDevice
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.workflows.calibrate import calibrate

ROOT = Path(__file__).resolve().parents[2]
CASES = {
    "digits": (
        ROOT / "tests" / "data" / "reference" / "digits",
        InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32)),
        "images.txt",
    ),
    "sample": (
        ROOT / "samples" / "tinted_digits",
        InputSpec("in0", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (48, 48)),
        "calib.txt",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_eq_on_two_local_workers_writes_the_one_worker_table(case: str) -> None:
    folder, spec, images = CASES[case]
    model = load_model(folder / "model.param", folder / "model.bin")
    source = make_sample_source([spec], [read_list(folder / images)])
    with LocalDevice() as one:
        alone = calibrate(model, source, one, method="eq")
    # two workers for everything (--threads 2), and one worker with a second agent for EQ
    with LocalDevice() as a, LocalDevice() as b:
        two = calibrate(model, source, [a, b], method="eq")
    with LocalDevice() as a, LocalDevice() as extra:
        assert extra.bytes_pushed == 0
        helped = calibrate(model, source, a, method="eq", eq_devices=[extra])
        assert extra.bytes_pushed > 0  # it searched at least one layer
    want = render_table(alone.table)
    assert render_table(two.table) == want
    assert render_table(helped.table) == want
    for run in (two, helped):
        assert [vars(r) for r in run.eq] == [vars(r) for r in alone.eq]
        assert run.table.records.keys() == alone.table.records.keys()
        assert all(
            run.table.records[k].tobytes() == alone.table.records[k].tobytes()
            for k in alone.table.records
        )
    # EQ moved some scale away from KL's (the comparison is not of two KL tables)
    kl = alone.build.table
    assert any(kl.records[k].tobytes() != alone.table.records[k].tobytes() for k in kl.records)
