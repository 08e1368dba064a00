"""Per-layer sensitivity, measured on the device.

The variants are scored :data:`~edgecal.workflows.scoring.BATCH` at a time, each computing on
the device only the layers it changes and what follows (``Scorer.score_many``); a time budget
(``stop``) is looked at between batches: the layers measured before it are ranked.

For every quantized layer two variants of the int8 model are scored against fp32: *keep fp32*
(every other layer as in the int8 model, this one in float) and *only int8* (this layer
quantized, every other quantized layer in float).  The ranking puts first the layer whose
return to float wins back the most points, then the most output cosine (the records and the
ranking: ``edgecal.quality.sensitivity``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edgecal.calib.table import CalibrationTable
from edgecal.quality.metrics import Score
from edgecal.quality.sensitivity import (
    LayerSensitivity,
    Sensitivity,
    quantized_layer_names,
    rank,
)
from edgecal.quality.tuning import Variant
from edgecal.workflows.scoring import Scorer


def measure_sensitivity(
    scorer: Scorer,
    table: CalibrationTable,
    *,
    keep_fp32: Sequence[str] = (),
    only_int8: bool = True,
    layers: Sequence[str] | None = None,
    all_int8: Score | None = None,
    stop: Callable[[], bool] | None = None,
) -> Sensitivity:
    """Score the keep-fp32 (and, with ``only_int8``, the only-int8) variant of each quantized
    layer (or of ``layers``) of the int8 model of ``table`` with ``keep_fp32`` in float;
    when ``stop()`` says so (a time budget), the layers not measured yet are left out."""
    model = scorer.fp32
    quantized = quantized_layer_names(model, table, keep_fp32)
    todo = [x for x in quantized if layers is None or x in layers]
    base = all_int8 or scorer.score(table, keep_fp32, what="int8 model")
    types = {layer.name: layer.type for layer in model.param.layers}
    entries: list[LayerSensitivity] = []
    kept = tuple(keep_fp32)
    # scored together, each computing only what it changes: against the int8 model ...
    keeps = scorer.score_many(
        [Variant(table, (*kept, x), f"{x} in fp32") for x in todo],
        Variant(table, kept, "int8 model"),
        stop,
    )
    onlys: list[Score | None] = [None] * len(keeps)
    if only_int8:  # ... and against the model with every quantized layer in float
        onlys = list(
            scorer.score_many(
                [
                    Variant(table, (*kept, *(y for y in quantized if y != x)), f"only {x} in int8")
                    for x in todo[: len(keeps)]
                ],
                Variant(table, (*kept, *quantized), "fp32 model"),
                stop,
            )
        )
    for name, keep, only in zip(todo, keeps, onlys, strict=False):  # those measured in time
        entries.append(
            LayerSensitivity(
                name,
                types[name],
                keep,
                only,
                gain_points=base.drop_points - keep.drop_points,
                harm_cosine=keep.cosine_mean - base.cosine_mean,
            )
        )
    return Sensitivity(scorer.device.name, scorer.drop_of, scorer.n_samples, base, rank(entries))
