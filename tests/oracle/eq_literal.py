"""Oracle: EQ's search of one layer done literally, one probe net per candidate and row.

The per-candidate evaluation of spec 2.9 with edgecal's similarity (``edgecal_agent.eqsearch``):
for each scale row ``j`` (weight scales, then the bottom scale), for each candidate ``k``, a
fresh one-layer int8 probe whose scales are the current choices with row ``j`` set to
candidate ``k``; every sample forwarded; per unit the float64 terms of ``unit_terms`` (the one
helper that defines them); then, in plain Python floats, the units summed in order, the cosine
``dot / sqrt(ref) / sqrt(q)`` (NaN when a norm is not > 0), the cosines summed over the samples in
order; the pick is ``edgecal.calib.eq.pick_best``.  Slow: (rows x candidates x samples) forwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import ncnn
import numpy as np

from edgecal.calib.eq import pick_best
from edgecal_agent.eqsearch import unit_rows, unit_terms


def probe_outputs(param: str, prefix: bytes, scales: np.ndarray, ins: Sequence[Any]) -> list:
    """The int8 probe with these scales (weight scales then the bottom scale) on every input."""
    net = ncnn.Net()
    net.opt.use_packing_layout = False
    net.opt.num_threads = 1
    assert net.load_param_mem(param) == 0
    model = bytes(prefix) + np.asarray(scales, dtype="<f4").tobytes()
    net.load_model_mem(model)
    name_in, name_out = net.input_names()[0], net.output_names()[0]
    outs = []
    for mat in ins:
        ex = net.create_extractor()
        ex.input(name_in, mat)
        ret, out = ex.extract(name_out)
        assert ret == 0
        outs.append(np.array(out, dtype=np.float32))
        del ex
    del net, model
    return outs


def similarity(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> float:
    """Summed cosine of ``outs`` against the fp32 ``refs``, per edgecal's definition."""
    total = 0.0
    for ref, out in zip(refs, outs, strict=True):
        assert ref.shape == out.shape
        r = unit_rows(ref).astype(np.float64)
        dots, qqs = unit_terms(r, unit_rows(out))
        refn = unit_terms(r, unit_rows(ref))[1]
        dot = qn = rn = 0.0
        for d, q, n in zip(dots.tolist(), qqs.tolist(), refn.tolist(), strict=True):
            dot += d
            qn += q
            rn += n
        total += dot / math.sqrt(rn) / math.sqrt(qn) if rn > 0.0 and qn > 0.0 else math.nan
    return total


def eq_search_literal(
    param: str,
    prefix: bytes,
    ins: Sequence[Any],
    refs: Sequence[np.ndarray],
    candidates: np.ndarray,
    weight_scales: np.ndarray,
    bottom_scale: np.float32,
) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """``(sim, chosen weight scales, chosen bottom scale)`` of the greedy search."""
    scales = np.append(np.asarray(weight_scales, np.float32), np.float32(bottom_scale))
    scales = scales.astype(np.float32)
    sim = np.zeros(candidates.shape, dtype=np.float64)
    for j in range(candidates.shape[0]):
        for k in range(candidates.shape[1]):
            trial = scales.copy()
            trial[j] = candidates[j, k]
            sim[j, k] = similarity(refs, probe_outputs(param, prefix, trial, ins))
        best = pick_best(sim[j])
        if best is not None:
            scales[j] = candidates[j, best]
    return sim, scales[:-1].copy(), np.float32(scales[-1])
