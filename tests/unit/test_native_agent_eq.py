"""EQ's layer search on both agents: the native agent's port of ``edgecal_agent.eqsearch``
makes the same choices with the same similarity sums as the Python agent, on real layers of
the reference set and the sample model (conv 3x3, depthwise, 1x1, InnerProduct, a conv after a
Concat, a conv without activation).

Where the native agent's own ncnn build computes the fp32 outputs bit for bit as the wheel does
(npy, multi) the sums are equal bit for bit; on digits and the sample model its convolutions
differ by a few ulp, which can flip an int8 rounding of the probe's input: the sums then agree
to 1e-4 (measured: 2.5e-5 at most, on linear_7) and the choices are identical.  Both prune the
bottom scale's candidates the same way (the same samples per sum where the sums are equal)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecal.calib.eq import eq_candidates, pick_pruned
from edgecal.calib.table import render_table
from edgecal.calib.weights import conv_weight_scales
from edgecal.device import capture
from edgecal.device.local import LocalDevice
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.workflows.calibrate import calibrate, probe_model
from edgecal_agent.messages import EQ_PRUNE_SLACK

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "data" / "reference"
SAMPLE = ROOT / "samples" / "tinted_digits"
GRAY32 = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))
RGB16 = InputSpec("in1", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (16, 16))
RGB48 = InputSpec("in0", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (48, 48))
NPY = InputSpec("in0", "npy", shape=(10, 6, 3))

#: model folder, inputs, sample lists, layers, whether the fp32 outputs are the wheel's exactly
CASES = {
    "npy": (REF / "npy", (NPY,), ("samples.txt",), ("convrelu_0",), True),
    "multi": (REF / "multi", (GRAY32, RGB16), ("list_a.txt", "list_b.txt"), ("convrelu_2",), True),
    "digits": (
        REF / "digits",
        (GRAY32,),
        ("images.txt",),
        ("convrelu_0", "convdwrelu_0", "convrelu_1", "linear_7"),
        False,
    ),
    "sample": (SAMPLE, (RGB48,), ("calib.txt",), ("convrelu_1", "conv_12"), False),
}
N_SAMPLES = 3


@pytest.fixture(scope="module")
def agents(native_agent_binary: Path) -> Iterator[tuple[LocalDevice, LocalDevice]]:
    with (
        LocalDevice(agent="module", name="python") as python,
        LocalDevice(agent="native", native_binary=native_agent_binary, name="native") as native,
    ):
        yield python, native


@pytest.mark.parametrize("case", list(CASES))
def test_eq_layer_search_is_the_same_on_both_agents(
    agents: tuple[LocalDevice, LocalDevice], case: str, tmp_path: Path
) -> None:
    folder, specs, lists, layers, exact = CASES[case]
    model = load_model(folder / "model.param", folder / "model.bin")
    source = make_sample_source(specs, [read_list(folder / name) for name in lists])
    shards = capture.write_shards(
        (source.load(i) for i in range(N_SAMPLES)), specs, tmp_path, shard_size=2
    )
    work = capture.Workload(model.param_path, model.bin_path, specs, shards)
    by_name = {layer.name: layer for layer in model.calibrated_layers}
    for name in layers:
        layer = by_name[name]
        bottom, top = layer.bottoms[0], layer.tops[0]
        text, prefix = probe_model(layer, model.weights[name])
        ws0 = np.asarray(conv_weight_scales(layer, model.weights[name], "kl").params[0], np.float32)
        bs0 = np.float32(40.0)
        cands = np.stack([eq_candidates(np.float32(s)) for s in [*ws0, bs0]])
        py, native = (
            capture.eq_search_layer(
                dev, work, bottom, top, text, prefix, cands, ws0, bs0, max_samples=N_SAMPLES
            )
            for dev in agents
        )
        assert native.search == py.search == "fast", name
        assert np.array_equal(native.weight_scales, py.weight_scales), name
        assert native.bottom_scale == py.bottom_scale, name
        assert (native.weight_scales != ws0).any() or native.bottom_scale != bs0  # not vacuous
        # both prune the bottom scale's candidates, bounds the host confirms (calibrate's
        # _EqPlan.choose): the native agent's choice is the one its sums allow
        assert native.sim_samples is not None and py.sim_samples is not None
        assert (native.sim_samples < N_SAMPLES).any(), name
        for res in (native, py):
            k = pick_pruned(res.sim[-1], res.sim_samples[-1], N_SAMPLES, EQ_PRUNE_SLACK)
            assert res.bottom_scale == (bs0 if k is None else cands[-1, k]), name
        if exact:
            assert np.array_equal(native.sim, py.sim, equal_nan=True), name
            assert np.array_equal(native.sim_samples, py.sim_samples), name
            assert (native.sim_start, native.sim_end) == (py.sim_start, py.sim_end), name
        else:  # a few ulp in a cosine may prune a candidate one sample earlier or later
            both = native.sim_samples == py.sim_samples
            np.testing.assert_allclose(native.sim[both], py.sim[both], rtol=1e-4, err_msg=name)
            assert native.sim_end == pytest.approx(py.sim_end, rel=1e-4), name


def test_native_eq_table_is_the_python_agents(native_agent_binary: Path) -> None:
    """The whole EQ table of the reference digits model on the native agent, byte for byte the
    Python agent's (both prune the bottom scale's candidates; the table is the unpruned
    search's, tests/integration/test_eq_search.py)."""
    folder, specs, lists, _, _ = CASES["digits"]
    model = load_model(folder / "model.param", folder / "model.bin")
    source = make_sample_source(specs, [read_list(folder / name) for name in lists])
    tables = []
    for dev in (
        LocalDevice(agent="module"),
        LocalDevice(agent="native", native_binary=native_agent_binary),
    ):
        with dev:
            tables.append(render_table(calibrate(model, source, dev, method="eq").table))
    assert tables[0] == tables[1]
