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


def test_one_layer_alone_chooses_what_the_whole_search_chose(tmp_path: Path) -> None:
    """``eq_layer`` (tune searches one layer at a time) against ``refine_eq``'s choice."""
    from edgecal.calib.table import weight_key
    from edgecal.device import capture
    from edgecal.workflows.calibrate import eq_layer
    from edgecal_agent.messages import EQ_MAX_SAMPLES

    folder, spec, images = CASES["digits"]
    model = load_model(folder / "model.param", folder / "model.bin")
    source = make_sample_source([spec], [read_list(folder / images)])
    n = min(source.n_samples, EQ_MAX_SAMPLES)
    shards = capture.write_shards((source.load(i) for i in range(n)), [spec], tmp_path, 64)
    layer = model.calibrated_layers[1]
    with LocalDevice() as dev:
        whole = calibrate(model, source, dev, method="eq")
        ws, bs, report = eq_layer(model, whole.build.table, layer, source, shards, dev)
    assert ws.tobytes() == whole.table.records[weight_key(layer.name)].tobytes()
    assert bs == whole.table.records[layer.name][0]
    assert vars(report) == vars(whole.eq[1])
