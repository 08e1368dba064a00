"""EQ's fast search (edgecal_agent.eqsearch, run by the real local agent) makes the choices of
the literal per-candidate evaluation (tests/oracle/eq_literal.py), with the same sums bit for
bit, on real layers of the reference set and the sample model, and on synthetic grouped and
bias-free layers.  The bottom scale's candidates are pruned exactly: a pruned candidate's sum
is the literal sum over the samples it read, and could not have been picked; and EQ's whole
tables are the ones the unpruned search wrote (digests pinned before pruning existed)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ncnn
import numpy as np
import pytest

from edgecal.calib.eq import eq_candidates, pick_best
from edgecal.calib.table import render_table
from edgecal.calib.weights import conv_weight_scales
from edgecal.device import capture
from edgecal.device.local import LocalDevice
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.workflows.calibrate import calibrate, probe_model
from edgecal_agent import eqsearch
from edgecal_agent.backend import NcnnModel
from edgecal_agent.shards import iter_shard, read_shard_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
import eq_literal

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "data" / "reference"
SAMPLE = ROOT / "samples" / "tinted_digits"
GRAY32 = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (32, 32))
RGB16 = InputSpec("in1", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (16, 16))
RGB48 = InputSpec("in0", "image", "RGB", (127.5,) * 3, (0.00784314,) * 3, (48, 48))
NPY = InputSpec("in0", "npy", shape=(10, 6, 3))

#: model folder, its inputs and sample lists, the layers checked (conv 3x3 on one channel,
#: depthwise, 1x1, InnerProduct, a conv on npy input, a conv after a Concat, a conv without
#: activation)
CASES = {
    "digits": (
        REF / "digits",
        (GRAY32,),
        ("images.txt",),
        ("convrelu_0", "convdwrelu_0", "convrelu_1", "linear_7"),
    ),
    "npy": (REF / "npy", (NPY,), ("samples.txt",), ("convrelu_0",)),
    "multi": (REF / "multi", (GRAY32, RGB16), ("list_a.txt", "list_b.txt"), ("convrelu_2",)),
    "sample": (SAMPLE, (RGB48,), ("calib.txt",), ("convrelu_1", "conv_12")),
}
N_SAMPLES = 3
#: sha256 of ``render_table`` of ``calibrate(method="eq")`` on the Python agent, before pruning
UNPRUNED_EQ_TABLES = {
    "digits": "f9500ccb7bc0f6aeab3a4832d078e9d49466d55647acd3269080d3c854cdea6a",
    "sample": "55b93b4c6b5af3bc1573368fc240185eda7d7ea24a9d5a7a8b7ee9631ea4b3e3",
}


def fp32_pairs(param: Path, bin_: Path, shards: Sequence[Path], bottom: str, top: str, n: int):
    """The fp32 (bottom Mat, top array) of the first ``n`` samples, as the agent reads them."""
    model = NcnnModel(str(param), str(bin_), runtime="calibration", threads=1)
    ins: list[Any] = []
    refs: list[np.ndarray] = []
    for shard in shards:
        info = read_shard_info(str(shard))
        with open(shard, "rb") as fh:
            for sample in iter_shard(fh, info, str(shard)):
                if len(ins) == n:
                    return ins, refs
                got = dict(model.extract(sample, info.inputs, [bottom, top], light_mode=False))
                ins.append(got[bottom].clone())
                refs.append(np.array(got[top], dtype=np.float32))
    return ins, refs


@pytest.mark.parametrize("case", list(CASES))
def test_fast_search_on_the_device_equals_the_literal_search(case: str, tmp_path: Path) -> None:
    folder, specs, lists, layers = CASES[case]
    model = load_model(folder / "model.param", folder / "model.bin")
    source = make_sample_source(specs, [read_list(folder / name) for name in lists])
    shards = capture.write_shards(
        (source.load(i) for i in range(N_SAMPLES)), specs, tmp_path, shard_size=2
    )
    work = capture.Workload(model.param_path, model.bin_path, specs, shards)
    by_name = {layer.name: layer for layer in model.calibrated_layers}
    pruned = 0
    with LocalDevice() as device:
        for name in layers:
            layer = by_name[name]
            bottom, top = layer.bottoms[0], layer.tops[0]
            text, prefix = probe_model(layer, model.weights[name])
            ins, refs = fp32_pairs(model.param_path, model.bin_path, shards, bottom, top, N_SAMPLES)
            ws0 = np.asarray(
                conv_weight_scales(layer, model.weights[name], "kl").params[0], np.float32
            )
            bs0 = np.float32(127.0 / max(float(np.abs(np.array(m)).max()) for m in ins))
            cands = np.stack([eq_candidates(np.float32(s)) for s in [*ws0, bs0]])
            got = capture.eq_search_layer(
                device, work, bottom, top, text, prefix, cands, ws0, bs0, max_samples=N_SAMPLES
            )
            sim, ws, bs = eq_literal.eq_search_literal(text, prefix, ins, refs, cands, ws0, bs0)
            changed = int(np.sum(ws != ws0))
            assert got.search == "fast"
            n_pruned = assert_pruned_sums(
                got.sim, got.sim_samples, sim, text, prefix, ins, refs, cands, ws
            )
            pruned += n_pruned
            print(
                f"{case}/{name}: {got.search} search, sim {sim.shape} equal where complete, "
                f"{n_pruned} bottom candidates pruned, {changed}/{ws0.size} weight scales and "
                f"the bottom scale {'changed' if bs != bs0 else 'kept'}"
            )
            assert np.array_equal(got.weight_scales, ws) and got.bottom_scale == bs, name
            start = eq_literal.probe_outputs(text, prefix, np.append(ws0, bs0), ins)
            end = eq_literal.probe_outputs(text, prefix, np.append(ws, bs), ins)
            assert got.sim_start == eq_literal.similarity(refs, start)
            assert got.sim_end == eq_literal.similarity(refs, end)
    assert pruned > 0  # the comparison covers pruned candidates


def assert_pruned_sums(
    got_sim: np.ndarray,
    counts: np.ndarray | None,
    sim: np.ndarray,
    param: str,
    prefix: bytes,
    ins: Sequence[Any],
    refs: Sequence[np.ndarray],
    cands: np.ndarray,
    ws: np.ndarray,
) -> int:
    """``got_sim`` is the literal ``sim`` where complete; a pruned bottom candidate's sum is the
    literal sum over the samples it read, whose bound stays below the literal pick.  Returns
    how many candidates were pruned."""
    n = len(ins)
    assert counts is not None and counts.shape == sim.shape
    complete = counts == n
    assert complete[:-1].all()  # only the bottom scale's row is pruned
    assert np.array_equal(got_sim[complete], sim[complete], equal_nan=True)
    best = pick_best(sim[-1])
    top = 0.0 if best is None else float(sim[-1, best])
    for k in np.flatnonzero(~complete[-1]).tolist():
        t = int(counts[-1, k])
        outs = eq_literal.probe_outputs(param, prefix, np.append(ws, cands[-1, k]), ins[:t])
        partial = eq_literal.similarity(refs[:t], outs)
        assert np.array_equal(got_sim[-1, k], partial, equal_nan=True), k
        assert sim[-1, k] < top or np.isnan(sim[-1, k]), k  # it could not have been picked
    return int((~complete).sum())


@pytest.mark.parametrize("case", ["digits", "sample"])
def test_eq_tables_are_the_unpruned_search_tables(case: str) -> None:
    """The whole EQ table, byte for byte, on the reference digits model and the sample model:
    the digests of the tables the search wrote before it pruned (measured on this machine's
    ncnn wheel; the native agent writes digits' too)."""
    folder, specs, lists, _ = CASES[case]
    model = load_model(folder / "model.param", folder / "model.bin")
    source = make_sample_source(specs, [read_list(folder / name) for name in lists])
    with LocalDevice() as device:
        run = calibrate(model, source, device, method="eq")
    digest = hashlib.sha256(render_table(run.table).encode("utf-8")).hexdigest()
    assert digest == UNPRUNED_EQ_TABLES[case]


# -- synthetic layers: grouped, no bias, other activations ---------------------------------------
def _synthetic(kind: str) -> tuple[str, bytes, int, tuple[int, ...], int]:
    """(probe param, .bin prefix, weight-scale rows, input shape (c, h, w), seed)."""
    rng = np.random.default_rng(len(kind))
    if kind == "grouped":  # 8 -> 8 channels in 4 groups of 2, bias, ReLU
        w, bias = rng.normal(0, 0.3, 8 * 2 * 9), rng.normal(0, 0.1, 8)
        line = f"ConvolutionDepthWise probe 1 1 in out 0=8 1=3 4=1 5=1 6={w.size} 7=4 8=1 9=1"
        prefix = b"\0\0\0\0" + w.astype("<f4").tobytes() + bias.astype("<f4").tobytes()
        return line, prefix, 4, (8, 9, 11), 1
    if kind == "sizes":  # as grouped, on inputs of different sizes (one sample at a time)
        line, prefix, n_w, _, _ = _synthetic("grouped")
        return line, prefix, n_w, (8, 9, 11), 5
    if kind == "nobias":  # 3 -> 6 channels, 3x3 stride 2, no bias, no activation
        w = rng.normal(0, 0.3, 6 * 3 * 9)
        line = f"Convolution probe 1 1 in out 0=6 1=3 3=2 4=1 5=0 6={w.size} 8=1"
        return line, b"\0\0\0\0" + w.astype("<f4").tobytes(), 6, (3, 10, 10), 2
    if kind == "leaky":  # 4 -> 5, 1x1, bias, leaky ReLU 0.1
        w, bias = rng.normal(0, 0.3, 5 * 4), rng.normal(0, 0.1, 5)
        line = f"Convolution probe 1 1 in out 0=5 1=1 5=1 6={w.size} 8=1 9=2 -23310=1,1.000000e-01"
        prefix = b"\0\0\0\0" + w.astype("<f4").tobytes() + bias.astype("<f4").tobytes()
        return line, prefix, 5, (4, 6, 7), 3
    assert kind == "fc"  # InnerProduct 48 -> 7 on a 3-D input, bias, no activation
    w, bias = rng.normal(0, 0.3, 7 * 48), rng.normal(0, 0.1, 7)
    line = f"InnerProduct probe 1 1 in out 0=7 1=1 2={w.size} 8=1"
    prefix = b"\0\0\0\0" + w.astype("<f4").tobytes() + bias.astype("<f4").tobytes()
    return line, prefix, 7, (3, 4, 4), 4


def _fp32_net(line: str, prefix: bytes) -> Any:
    param = "7767517\n2 2\nInput in 0 1 in\n" + line.replace(" 8=1", "") + "\n"
    net = ncnn.Net()
    net.opt.use_packing_layout = False
    net.opt.num_threads = 1
    assert net.load_param_mem(param) == 0
    net.load_model_mem(prefix)
    return net


@pytest.mark.parametrize("kind", ["grouped", "sizes", "nobias", "leaky", "fc"])
@pytest.mark.parametrize("fallback", [False, True])
def test_fast_search_equals_the_literal_search_on_synthetic_layers(
    kind: str, fallback: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    line, prefix, n_w, shape, seed = _synthetic(kind)
    param = "7767517\n2 2\nInput in 0 1 in\n" + line + "\n"
    rng = np.random.default_rng(seed)
    fp32 = _fp32_net(line, prefix)
    ins, refs = [], []
    for i in range(4):
        size = (shape[0], shape[1] + i, shape[2] - i) if kind == "sizes" else shape
        arr = rng.normal(0, 1, size).astype(np.float32)
        mat = ncnn.Mat(arr).clone()  # ncnn.Mat(arr) borrows arr's memory: keep arr alive
        ex = fp32.create_extractor()
        ex.input("in", mat)
        refs.append(np.array(ex.extract("out")[1], dtype=np.float32))
        ins.append(mat)
        del ex
    ws0 = np.full(n_w, 60.0, np.float32)
    bs0 = np.float32(127.0 / max(float(np.abs(np.array(m)).max()) for m in ins))
    cands = np.stack([eq_candidates(np.float32(s), steps=12) for s in [*ws0, bs0]])
    if fallback:  # the independence check fails: the literal search runs instead

        def broken(*args: Any) -> None:
            raise eqsearch._NotIndependent

        monkeypatch.setattr(eqsearch.EqSearch, "_check", broken)
    search = eqsearch.EqSearch(eqsearch.Probe(ncnn, param, prefix, n_w), ins, refs, lambda: None)
    got = search.run(cands, ws0, bs0)
    sim, ws, bs = eq_literal.eq_search_literal(param, prefix, ins, refs, cands, ws0, bs0)
    assert got.path == ("literal" if fallback else "fast")
    assert_pruned_sums(got.sim, got.counts, sim, param, prefix, ins, refs, cands, ws)
    assert np.array_equal(got.weight_scales, ws) and got.bottom_scale == bs
    assert got.sim_end == eq_literal.similarity(
        refs, eq_literal.probe_outputs(param, prefix, np.append(ws, bs), ins)
    )
    assert (ws != ws0).any()  # the search moved something: the comparison is not vacuous
