"""KL search: vectorised == literal port of ncnn2table, and == the reference tool's bins."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgecal.calib import kl as K
from edgecal.calib.logf import logf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
import kl_loop

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
CROSS = json.loads((REF / "crosscheck.json").read_text())
BLOBS = [(case, name) for case in ("digits", "npy", "multi") for name in CROSS[case]]


def counts_of(case: str, name: str) -> np.ndarray:
    b = CROSS[case][name]
    c = np.zeros(2048, dtype=np.uint64)
    c[b["histogram_bins"]] = b["histogram_counts"]
    return c


@pytest.mark.parametrize(("case", "name"), BLOBS)
def test_crosscheck_best_bin(case: str, name: str) -> None:
    assert K.kl_best_bin(counts_of(case, name)) == CROSS[case][name]["kl_best_bin"]


@pytest.mark.parametrize(("case", "name"), BLOBS)
def test_screening_agrees_with_full_exact_curve(case: str, name: str) -> None:
    exact = K.kl_divergences(counts_of(case, name), exact=True)
    first_min = int(np.flatnonzero(exact == exact.min())[0]) + 128
    assert K.kl_best_bin(counts_of(case, name)) == first_min


def test_literal_port_bit_identical_on_a_reference_blob() -> None:
    c = counts_of("digits", "convrelu_2")
    best, kls = kl_loop.kl_search_literal(c)
    vec = K.kl_divergences(c, exact=True)
    lit = np.array(kls, dtype=np.float32)
    assert best == CROSS["digits"]["convrelu_2"]["kl_best_bin"]
    assert np.array_equal(vec.view(np.uint32), lit.view(np.uint32))
    assert K.kl_best_bin(c) == best


def test_all_zero_histogram_keeps_default_bin() -> None:
    assert K.kl_best_bin(np.zeros(2048, dtype=np.uint64)) == 128


def test_threshold_from_bin_float32_order() -> None:
    b = CROSS["digits"]["linear_7"]
    absmax = np.uint32(int(b["absmax_float32_hex"], 16)).view(np.float32)
    thr = K.threshold_from_bin(b["kl_best_bin"], absmax)
    assert thr.dtype == np.float32
    assert f"{float(np.float32(127) / thr):f}" == "6.563694"


def test_wrong_shape_rejected() -> None:
    with pytest.raises(ValueError):
        K.kl_best_bin(np.zeros(100, dtype=np.uint64))


def test_speed_vectorised() -> None:
    c = counts_of("digits", "convrelu_1")
    K.kl_best_bin(c)  # builds the cached geometry
    t = time.perf_counter()
    K.kl_best_bin(c)
    assert time.perf_counter() - t < 2.0  # ~50 ms here; literal port takes ~8 s


def _libm_logf():
    name = ctypes.util.find_library("m")
    if not name or not Path("/proc/cpuinfo").exists():
        return None
    if " fma" not in Path("/proc/cpuinfo").read_text():
        return None
    fn = ctypes.CDLL(name).logf
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


def test_logf_equals_glibc() -> None:
    fn = _libm_logf()
    if fn is None:
        pytest.skip("needs glibc libm on an FMA x86 CPU")
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            rng.integers(1, 0x7F800000, 20000, dtype=np.uint32).view(np.float32),
            rng.uniform(1e-4, 2.0, 20000).astype(np.float32),
            (1 + rng.uniform(-1e-3, 1e-3, 5000)).astype(np.float32),
            np.array([1.0, 2.0, 0.5, 1e-40, 3.4e38], dtype=np.float32),
        ]
    )
    mine = logf(x)
    ref = np.array([fn(float(v)) for v in x], dtype=np.float32)
    assert np.array_equal(mine.view(np.uint32), ref.view(np.uint32))


def test_logf_differs_from_numpy_log_somewhere() -> None:
    # why the emulation exists: numpy's float32 log is not glibc's
    x = np.random.default_rng(1).uniform(1e-4, 2.0, 20000).astype(np.float32)
    assert not np.array_equal(logf(x), np.log(x))


@pytest.mark.parametrize(("case", "name"), BLOBS)
def test_screening_bound_holds_on_reference_blobs(case: str, name: str) -> None:
    c = counts_of(case, name)
    exact = K.kl_divergences(c, exact=True).astype(np.float64)
    value, bound = K.screen_bounds(c)
    assert np.all(np.abs(exact - value) <= bound)


@pytest.mark.parametrize(("case", "name"), BLOBS)
def test_second_stage_bound_holds_on_reference_blobs(case: str, name: str) -> None:
    c = counts_of(case, name)
    exact = K.kl_divergences(c, exact=True).astype(np.float64)
    value, bound = K.refine_bounds(c)
    assert np.all(np.abs(exact - value) <= bound)
    K.kl_best_bin(c)
    assert K._last_candidates[1] <= K._last_candidates[0]


def test_screening_bound_holds_on_random_histograms() -> None:
    rng = np.random.default_rng(11)
    for _ in range(6):
        x = np.abs(rng.standard_t(rng.uniform(1.5, 8.0), 20000))
        c = np.bincount(np.minimum((x / x.max() * 2048).astype(int), 2047), minlength=2048)
        c = c.astype(np.uint64)
        exact = K.kl_divergences(c, exact=True).astype(np.float64)
        value, bound = K.screen_bounds(c)
        assert np.all(np.abs(exact - value) <= bound)


def test_screening_layout_cache_is_small() -> None:
    K.kl_best_bin(counts_of("digits", "convrelu_1"))
    assert K._screen_layout().nbytes() + K._Work().nbytes() <= 5 * 2**20


def test_threads_computing_at_once_get_the_serial_answers() -> None:
    """Two calibrations in one process (a fleet bench, a library user) may run KL in two
    threads at the same time: each call has its own buffers."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    hists = [
        np.bincount(
            np.minimum(rng.exponential(scale, 20000) * 100, 2047).astype(int), minlength=2048
        ).astype(np.uint64)
        for scale in (0.5, 1, 2, 4, 8, 16)
    ]
    serial = [K.kl_best_bin(h) for h in hists]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            assert list(pool.map(K.kl_best_bin, hists * 4)) == serial * 4
