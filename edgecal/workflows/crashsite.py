"""Which layer makes ncnn crash: found on this host, one child process per probe.

When the agent dies of a crash inside ncnn (``AgentCrash``), the model is run again here, on
the first sample of the shard that crashed, in throw-away child processes that each extract one
blob: a child that dies of a signal means the crash lies on the way to that blob.  A search
over the blobs in ``.param`` order finds a blob whose extraction crashes while the inputs of
the layer making it do not: that layer is named.  This host's ncnn may differ from the
board's; when the crash does not happen here, nothing is named.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgecal.ncnnfmt.param import Layer, ParamFile

#: Seconds one probe may take (the model on one sample).
PROBE_TIMEOUT_S = 60.0
#: Probes at most (a binary search plus the check of one layer's inputs).
MAX_PROBES = 24

_CHILD = """
import sys
from edgecal_agent.backend import NcnnModel
from edgecal_agent.shards import iter_shard, read_shard_info
param, bin_, shard, blob = sys.argv[1:5]
info = read_shard_info(shard)
sample = next(iter_shard(shard, info))
model = NcnnModel(param, bin_, runtime="calibration", threads=1)
for _ in model.extract(sample, info.inputs, [blob]):
    pass
"""


def crashes(param: Path, bin_: Path, shard: Path, blob: str) -> bool | None:
    """Whether extracting ``blob`` kills a child process with a signal (None: no answer)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(param), str(bin_), str(shard), blob],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.returncode < 0


def crash_layer(pf: ParamFile, param: Path, bin_: Path, shard: Path) -> Layer | None:
    """The layer whose run crashes ncnn on the shard's first sample, or None when unknown."""
    made: list[tuple[str, Layer]] = [
        (t, layer) for layer in pf.layers if layer.type != "Input" for t in layer.tops
    ]
    if not made:
        return None
    probes = 0

    def crash(blob: str) -> bool | None:
        nonlocal probes
        probes += 1
        return crashes(param, bin_, shard, blob)

    last = made[-1][0]
    if crash(last) is not True:
        return None
    lo, hi = 0, len(made) - 1  # made[hi] crashes
    while lo < hi and probes < MAX_PROBES:
        mid = (lo + hi) // 2
        got = crash(made[mid][0])
        if got is None:
            return None
        if got:
            hi = mid
        else:
            lo = mid + 1
    if lo != hi:
        return None
    layer = made[hi][1]
    producers = {t for t, _ in made}
    for bottom in layer.bottoms:  # its inputs must be computable: then it is this layer
        if bottom in producers and (probes >= MAX_PROBES or crash(bottom) is not False):
            return None
    return layer
