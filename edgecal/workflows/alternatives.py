"""Per layer and candidate, the table lines that candidate gives the layer: what ``tune``
tries on a harmful layer before keeping it in fp32 (:class:`Alternatives`), and the candidates'
whole-model tables tune starts from.  KL and ACIQ come from the calibration's histograms; EQ is
a search on the device, one layer at a time, when asked; any other threshold rule over the same
histograms (a table is just scales) is a :data:`TableRule` in :data:`RULES`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from edgecal.calib.build import TableBuild
from edgecal.calib.methods import METHODS, Method
from edgecal.calib.table import CalibrationTable, weight_key
from edgecal.device.base import Device
from edgecal.inputs.model import Model
from edgecal.inputs.samples import SampleSource
from edgecal.quality.thresholds import LayerThresholds, ThresholdsDoc
from edgecal.runs.histfile import HistogramSet

#: A candidate that needs no device: its whole-model table from the model and the histograms.
TableRule = Callable[[Model, HistogramSet], TableBuild]


def _method_rule(method: Method) -> TableRule:
    def build(model: Model, hs: HistogramSet) -> TableBuild:
        from edgecal.workflows.calibrate import table_from_histograms

        return table_from_histograms(model, hs, method)

    return build


#: Every candidate that needs no device, by name: the calibration methods computed from the
#: histograms (KL, ACIQ); threshold rules (MSE, percentiles) are added here by name.
RULES: dict[str, TableRule] = {
    m.value: _method_rule(m) for m in Method if not METHODS[m].needs_device
}


class Alternatives:
    """Per layer and candidate, the table lines it gives the layer: KL, ACIQ and the other
    ``rules`` from the histograms, EQ by a search on the device (lazily, one layer at a
    time)."""

    def __init__(
        self,
        model: Model,
        hs: HistogramSet,
        eq_source: SampleSource,
        work: Path,
        device: Device | Callable[[], Device],
        rules: Mapping[str, TableRule] | None = None,
    ) -> None:
        self.model = model
        self.tables: dict[str, TableBuild] = {
            name: rule(model, hs) for name, rule in (RULES if rules is None else rules).items()
        }
        self.eq_source = eq_source
        self.work = work
        self.device = device
        self.eq_shards: list[Path] | None = None
        self.eq: dict[str, dict[str, np.ndarray]] = {}

    def whole(self, name: str) -> CalibrationTable | None:
        """``name``'s whole-model table, when it needs no device."""
        build = self.tables.get(name)
        return None if build is None else build.table

    def __call__(self, layer: str, method: str) -> dict[str, np.ndarray] | None:
        if method in self.tables:
            table = self.tables[method].table
            keys = (layer, weight_key(layer))
            return {k: table.records[k] for k in keys if k in table.records} or None
        if method == Method.EQ:
            return self.eq_records(layer)
        return None

    def eq_records(self, layer: str) -> dict[str, np.ndarray] | None:
        from edgecal.device import capture
        from edgecal.workflows.calibrate import eq_layer
        from edgecal_agent.messages import EQ_MAX_SAMPLES

        if layer in self.eq:
            return self.eq[layer]
        obj = next((x for x in self.model.calibrated_layers if x.name == layer), None)
        kl = self.tables[Method.KL].table
        if obj is None or layer not in kl.records or weight_key(layer) not in kl.records:
            return None
        n = min(self.eq_source.n_samples, EQ_MAX_SAMPLES)
        source = self.eq_source.subset(range(n))
        if self.eq_shards is None:
            d = self.work / "eq-shards"
            d.mkdir(parents=True, exist_ok=True)
            self.eq_shards = capture.write_shards(iter(source), source.specs, d, 64)
        device = self.device if isinstance(self.device, Device) else self.device()
        ws, bs, _ = eq_layer(self.model, kl, obj, source, self.eq_shards, device)
        self.eq[layer] = {layer: np.array([bs], np.float32), weight_key(layer): ws}
        return self.eq[layer]

    def thresholds(self, final: CalibrationTable, methods: dict[str, str]) -> ThresholdsDoc:
        """thresholds.json: per layer abs-max, the KL/ACIQ/EQ thresholds, the one chosen."""
        out: dict[str, LayerThresholds] = {}
        per = {m: {i.name: i for i in b.per_layer} for m, b in self.tables.items()}
        for name, info in per[Method.KL].items():
            eq = self.eq.get(name)
            scale = final.blob_scale(name)
            out[name] = LayerThresholds(
                layer=name,
                blob=self.model.param.layers[
                    [x.name for x in self.model.param.layers].index(name)
                ].bottoms[0],
                absmax=float(info.absmax),
                kl=float(info.threshold),
                aciq=float(per[Method.ACIQ][name].threshold) if name in per[Method.ACIQ] else None,
                eq=float(127.0 / float(eq[name][0])) if eq else None,
                chosen_method=methods.get(name, "fp32" if scale is None else "table"),
                chosen=float(127.0 / float(scale)) if scale is not None else None,
            )
        return ThresholdsDoc(out)
