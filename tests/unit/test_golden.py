"""The golden check's model, its run on the local agent, and the comparison's verdicts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from edgecal.boards.golden import (
    OUTPUT_BLOBS,
    TOLERANCES,
    GoldenModel,
    Outputs,
    build_golden_model,
    compare_outputs,
    golden_check,
    host_reference,
    judge,
)
from edgecal.device.local import LocalDevice
from edgecal.ncnnfmt.modelbin import read_modelbin
from edgecal.ncnnfmt.param import parse_param


@pytest.fixture(scope="module")
def model() -> GoldenModel:
    return build_golden_model()


@pytest.fixture(scope="module")
def device() -> Iterator[LocalDevice]:
    with LocalDevice(threads=1, name="testboard") as dev:
        yield dev


@pytest.fixture(scope="module")
def host() -> Outputs:
    return host_reference()


def test_model_is_deterministic(model: GoldenModel) -> None:
    again = build_golden_model()
    assert again.param == model.param and again.bin == model.bin
    assert len(again.samples) == len(model.samples) == 4
    for a, b in zip(again.samples, model.samples, strict=True):
        assert a.dtype == np.float32 and a.shape == (3, 16, 16)
        np.testing.assert_array_equal(a, b)
    assert build_golden_model(seed=1).bin != model.bin


def test_model_files_are_well_formed(model: GoldenModel) -> None:
    pf = parse_param(model.param, source="golden.param")
    assert [layer.type for layer in pf.layers] == [
        "Input",
        "Convolution",
        "ConvolutionDepthWise",
        "Pooling",
        "InnerProduct",
    ]
    assert pf.blob_names() == ["data", *OUTPUT_BLOBS]
    weights = read_modelbin(pf, model.bin, source="golden.bin")  # consumes it exactly
    assert weights["conv1"]["weight"].values.size == 8 * 3 * 3 * 3
    assert weights["fc"]["weight"].values.size == 16 * 128


def _numpy_forward(model: GoldenModel, x: np.ndarray) -> dict[str, np.ndarray]:
    """The documented network in float64."""
    pf = parse_param(model.param)
    w = read_modelbin(pf, model.bin)

    def rec(layer: str, name: str) -> np.ndarray:
        return w[layer][name].values.astype(np.float64)

    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    k = rec("conv1", "weight").reshape(8, 3, 3, 3)
    conv = sum(
        np.einsum("oc,chw->ohw", k[:, :, i, j], xp[:, i : i + 16, j : j + 16])
        for i in range(3)
        for j in range(3)
    )
    conv = np.maximum(conv + rec("conv1", "bias")[:, None, None], 0)
    cp = np.pad(conv, ((0, 0), (1, 1), (1, 1)))
    kd = rec("dw1", "weight").reshape(8, 3, 3)
    dw = sum(
        kd[:, i, j, None, None] * cp[:, i : i + 16 : 2, j : j + 16 : 2]
        for i in range(3)
        for j in range(3)
    )
    dw = np.maximum(dw + rec("dw1", "bias")[:, None, None], 0)
    pool = dw.reshape(8, 4, 2, 4, 2).max(axis=(2, 4))
    fc = rec("fc", "weight").reshape(16, 128) @ pool.reshape(-1) + rec("fc", "bias")
    return {"conv1": conv, "dw1": dw, "pool1": pool, "fc": fc}


def test_host_reference_is_the_documented_network(model: GoldenModel, host: Outputs) -> None:
    assert len(host) == len(model.samples)
    for sample, got in zip(model.samples, host, strict=True):
        want = _numpy_forward(model, sample)
        assert list(got) == list(OUTPUT_BLOBS)
        for blob in OUTPUT_BLOBS:
            assert got[blob].shape == want[blob].shape, blob
            err = np.max(np.abs(got[blob] - want[blob])) / np.max(np.abs(want[blob]))
            assert err < 1e-5, (blob, err)
        assert 0.1 < np.mean(got["conv1"] > 0) < 0.9  # ReLU does cut: not a trivial model


def test_host_vs_host_passes(device: LocalDevice, host: Outputs) -> None:
    result = golden_check(device)
    assert result.ok, result.message
    assert result.board == "testboard" and result.runtime == "calibration"
    assert [f.blob for f in result.figures] == list(OUTPUT_BLOBS)
    assert result.worst_rel_err == 0.0 and result.worst_cosine == pytest.approx(1.0)
    assert result.message.startswith("testboard: golden check passed (4 outputs")
    assert result.fix == ""
    with LocalDevice(threads=1, name="reference") as ref:  # an explicit reference device
        assert golden_check(device, reference_device=ref).ok
    deployed = golden_check(device, runtime="deployed")  # fp16 weight storage here
    assert deployed.ok, deployed.message
    assert deployed.tolerance == TOLERANCES["deployed"]


def _perturbed(host: Outputs, blob: str, fn: object) -> Outputs:
    out = [dict(s) for s in host]
    out[1][blob] = fn(out[1][blob].copy())  # type: ignore[operator]
    return out


def test_rounding_passes_but_wrong_results_fail(host: Outputs) -> None:
    rng = np.random.default_rng(0)

    def rounding(a: np.ndarray) -> np.ndarray:  # a few ulp everywhere, as other kernels do
        return (a * (1 + 4e-7 * rng.standard_normal(a.shape))).astype(np.float32)

    figures = compare_outputs(_perturbed(host, "conv1", rounding), host)
    assert judge("b1", figures).ok

    def one_percent(a: np.ndarray) -> np.ndarray:
        return (a * (1 + 0.01 * rng.standard_normal(a.shape))).astype(np.float32)

    result = judge("b1", compare_outputs(_perturbed(host, "fc", one_percent), host))
    assert not result.ok
    assert [f.blob for f in result.figures if f.max_rel_err > 1e-3] == ["fc"]
    assert result.message.startswith(
        "b1: the board's ncnn computes wrong results: the golden "
        "model's 'fc' differs from the host's"
    )
    assert result.message.endswith(
        ": reinstall ncnn (`edgecal board provision b1 --force`) or leave the board out"
    )
    assert "1 of 4 outputs off" in result.what

    def scaled(a: np.ndarray) -> np.ndarray:  # cosine-blind: the relative error sees it
        return a * np.float32(1.01)

    result = judge("b1", compare_outputs(_perturbed(host, "pool1", scaled), host))
    assert not result.ok and result.figures[2].cosine > 1 - 1e-9

    def nan(a: np.ndarray) -> np.ndarray:
        a.reshape(-1)[3] = np.nan
        return a

    result = judge("b1", compare_outputs(_perturbed(host, "dw1", nan), host))
    assert not result.ok and "'dw1'" in result.what
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))  # strict JSON
    assert doc["figures"][1] == {"blob": "dw1", "cosine": None, "max_rel_err": None}
    assert doc["fix"].startswith("reinstall ncnn")

    missing = [dict(s) for s in host[:-1]]  # a sample short
    assert not judge("b1", compare_outputs(missing, host)).ok
    wrong_shape = _perturbed(host, "fc", lambda a: a[:-1])
    assert not judge("b1", compare_outputs(wrong_shape, host)).ok


def test_deployed_tolerance_is_looser(host: Outputs) -> None:
    """2 % off: wrong for fp32, within what fp16 arithmetic on a deployed board may give."""
    figures = compare_outputs([{b: v * np.float32(1.02) for b, v in s.items()} for s in host], host)
    assert not judge("b2", figures).ok
    assert judge("b2", figures, runtime="deployed").ok
