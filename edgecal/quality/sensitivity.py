"""Per-layer sensitivity records: what each quantized layer costs (measured on the device by
``edgecal.workflows.sensitivity``), and the ranking (pure).

For every quantized layer two variants of the int8 model are scored against fp32: *keep fp32*
(every other layer as in the int8 model, this one in float) and *only int8* (this layer
quantized, every other quantized layer in float).  The ranking puts first the layer whose
return to float wins back the most points, then the most output cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from edgecal.calib.table import CalibrationTable
from edgecal.int8.convert import quantize_model
from edgecal.ncnnfmt.param import ParamFile
from edgecal.quality.jsondoc import Obj, read_fields
from edgecal.quality.metrics import Score


class QuantizableModel(Protocol):
    """What :func:`quantized_layer_names` needs of a model (``edgecal.inputs.model.Model``)."""

    @property
    def param(self) -> ParamFile: ...

    @property
    def weights(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    type: str
    keep_fp32: Score
    only_int8: Score | None
    gain_points: float  # points won back by keeping this layer in float
    harm_cosine: float  # output cosine won back by keeping this layer in float

    def to_dict(self, rank: int) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "type": self.type,
            "rank": rank,
            "keep_fp32": self.keep_fp32.to_dict(),
            "only_int8": self.only_int8.to_dict() if self.only_int8 is not None else None,
            "gain_points": self.gain_points,
            "harm_cosine": self.harm_cosine,
        }

    @classmethod
    def from_dict(cls, doc: Any, where: str = "") -> tuple[int, LayerSensitivity]:
        """``(rank, layer)`` of what :meth:`to_dict` wrote; :class:`Malformed` names the JSON
        path of a bad value."""
        o = Obj.of(doc, where)
        return o.integer("rank"), read_fields(cls, o)


@dataclass(frozen=True)
class Sensitivity:
    board: str
    metric: str
    n_samples: int
    all_int8: Score
    layers: list[LayerSensitivity]  # ranked, most harmful first

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": [x.to_dict(i + 1) for i, x in enumerate(self.layers)]}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "") -> Sensitivity:
        """What :meth:`to_dict` wrote, the layers in the order of their ranks;
        :class:`Malformed` names the JSON path of a bad value."""
        o = Obj.of(doc, where)
        ranked = [LayerSensitivity.from_dict(x.d, x.where) for x in o.objs("layers")]
        return read_fields(cls, o, layers=[x for _, x in sorted(ranked, key=lambda r: r[0])])


def quantized_layer_names(
    model: QuantizableModel, table: CalibrationTable, keep_fp32: Sequence[str] = ()
) -> list[str]:
    """The layers the int8 model of ``table`` quantizes (``keep_fp32`` aside), in model order."""
    _, _, report = quantize_model(model.param, model.weights, table, keep_fp32=list(keep_fp32))
    done = set(report.quantized)
    return [layer.name for layer in model.param.layers if layer.name in done]


def rank(entries: Sequence[LayerSensitivity]) -> list[LayerSensitivity]:
    """Most harmful first: most points won back in float, then most cosine won back."""
    return sorted(entries, key=lambda e: (-e.gain_points, -e.harm_cosine, e.layer))
