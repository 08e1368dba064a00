"""Oracle: a literal float32 port of ncnn2table's KL search loops (quantize_KL).

Line for line the C++ of tools/quantize/ncnn2table.cpp (commit a4d2ea1d): every variable that
is a ``float`` there is a ``numpy.float32`` here, every loop is a Python loop in the same order,
``(int)floor``/``(int)ceil`` of floats, int-to-float promotions where C promotes.  ``log`` of a
float is glibc's ``logf``, called through ctypes when libm is available (the actual function the
tool calls), else the float64 log rounded to float32.  Slow (seconds per histogram): use it on
few examples only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

f32 = np.float32


def _load_logf():
    name = ctypes.util.find_library("m")
    if name:
        try:
            lib = ctypes.CDLL(name)
            fn = lib.logf
            fn.restype = ctypes.c_float
            fn.argtypes = [ctypes.c_float]
            return (lambda x: f32(fn(float(x)))), True
        except (OSError, AttributeError):
            pass
    return (lambda x: f32(math.log(float(x)))), False


c_logf, HAVE_LIBM_LOGF = _load_logf()


def compute_kl_divergence(a: list, b: list) -> np.float32:
    result = f32(0)
    for i in range(len(a)):
        result += a[i] * c_logf(a[i] / b[i])
    return result


def normed(histogram) -> list:
    total = 0
    for v in histogram:
        total = (total + int(v)) % (1 << 64)
    out = []
    for v in histogram:
        # (float)(stat.histogram[j] / (double)sum)
        d = float(int(v)) / float(total) if total else math.nan
        out.append(f32(d))
    return out


def kl_best_bin_literal(histogram, num_histogram_bins: int = 2048) -> int:
    return kl_search_literal(histogram, num_histogram_bins)[0]


def kl_search_literal(histogram, num_histogram_bins: int = 2048) -> tuple[int, list]:
    """(target_threshold, [kl_divergence for threshold 128..2047]) exactly as the C++ loops."""
    h = normed(histogram)
    kls = []
    target_bin = 128
    target_threshold = target_bin
    min_kl_divergence = f32(np.finfo(np.float32).max)
    with np.errstate(all="ignore"):
        for threshold in range(target_bin, num_histogram_bins):
            kl_eps = f32(0.0001)
            clip_distribution = [kl_eps] * threshold
            for j in range(threshold):
                clip_distribution[j] = clip_distribution[j] + h[j]
            for j in range(threshold, num_histogram_bins):
                clip_distribution[threshold - 1] = clip_distribution[threshold - 1] + h[j]

            num_per_bin = f32(threshold) / f32(target_bin)

            q = [f32(0)] * target_bin
            # bin 0
            end = num_per_bin
            right_lower = int(np.floor(end))
            right_scale = end - f32(right_lower)
            if right_scale > 0:
                q[0] = q[0] + right_scale * h[right_lower]
            for k in range(right_lower):
                q[0] = q[0] + h[k]
            q[0] = q[0] / (f32(right_lower) + right_scale)
            for j in range(1, target_bin - 1):
                start = f32(j) * num_per_bin
                end = f32(j + 1) * num_per_bin
                left_upper = int(np.ceil(start))
                left_scale = f32(left_upper) - start
                right_lower = int(np.floor(end))
                right_scale = end - f32(right_lower)
                if left_scale > 0:
                    q[j] = q[j] + left_scale * h[left_upper - 1]
                if right_scale > 0:
                    q[j] = q[j] + right_scale * h[right_lower]
                for k in range(left_upper, right_lower):
                    q[j] = q[j] + h[k]
                q[j] = q[j] / (f32(right_lower - left_upper) + left_scale + right_scale)
            start = f32(threshold) - num_per_bin
            left_upper = int(np.ceil(start))
            left_scale = f32(left_upper) - start
            if left_scale > 0:
                q[target_bin - 1] = q[target_bin - 1] + left_scale * h[left_upper - 1]
            for k in range(left_upper, threshold):
                q[target_bin - 1] = q[target_bin - 1] + h[k]
            q[target_bin - 1] = q[target_bin - 1] / (f32(threshold - left_upper) + left_scale)

            e = [kl_eps] * threshold
            end = num_per_bin
            right_lower = int(np.floor(end))
            right_scale = end - f32(right_lower)
            if right_scale > 0:
                e[right_lower] = e[right_lower] + right_scale * q[0]
            for k in range(right_lower):
                e[k] = e[k] + q[0]
            for j in range(1, target_bin - 1):
                start = f32(j) * num_per_bin
                end = f32(j + 1) * num_per_bin
                left_upper = int(np.ceil(start))
                left_scale = f32(left_upper) - start
                right_lower = int(np.floor(end))
                right_scale = end - f32(right_lower)
                if left_scale > 0:
                    e[left_upper - 1] = e[left_upper - 1] + left_scale * q[j]
                if right_scale > 0:
                    e[right_lower] = e[right_lower] + right_scale * q[j]
                for k in range(left_upper, right_lower):
                    e[k] = e[k] + q[j]
            start = f32(threshold) - num_per_bin
            left_upper = int(np.ceil(start))
            left_scale = f32(left_upper) - start
            if left_scale > 0:
                e[left_upper - 1] = e[left_upper - 1] + left_scale * q[target_bin - 1]
            for k in range(left_upper, threshold):
                e[k] = e[k] + q[target_bin - 1]

            kl_divergence = compute_kl_divergence(clip_distribution, e)
            kls.append(kl_divergence)
            if kl_divergence < min_kl_divergence:
                min_kl_divergence = kl_divergence
                target_threshold = threshold
    return target_threshold, kls
