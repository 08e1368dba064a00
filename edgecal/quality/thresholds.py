"""``thresholds.json``: per layer, the abs-max of its input, the KL/ACIQ/EQ thresholds, the
extra rules' ones when known (``mse``, ``p99.9``, ``p99.99``, ``p99.999``) and the one its final
table uses (``edgecal tune`` writes it, ``edgecal report`` draws it; pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecal.calib.methods import METHOD_NAMES, RULE_NAMES, Method
from edgecal.quality.jsondoc import Malformed, Obj
from edgecal.quality.rundoc import RESULT_SCHEMA, result_doc

#: What a layer's ``chosen_method`` may be: a method or an extra rule, ``table`` (the scale of a
#: table tune was given, kept as it was) or ``fp32`` (the layer is not quantized).
CHOSEN_METHODS: tuple[str, ...] = (*METHOD_NAMES, *RULE_NAMES, "table", "fp32")


@dataclass(frozen=True)
class LayerThresholds:
    layer: str
    blob: str
    absmax: float
    kl: float | None
    aciq: float | None
    eq: float | None
    chosen_method: str
    chosen: float | None
    #: the extra rules' thresholds (``"mse"``, ``"p99.9"``...: those known; in
    #: :data:`RULE_NAMES` order), each a key of the layer's entry beside ``kl``
    rules: dict[str, float] = field(default_factory=dict)

    def by_method(self) -> dict[str, float | None]:
        """ncnn's three methods (``None``: not known), then the extra rules that are known."""
        out: dict[str, float | None] = {Method.KL: self.kl, Method.ACIQ: self.aciq}
        out[Method.EQ] = self.eq
        out.update((Method(name), self.rules[name]) for name in RULE_NAMES if name in self.rules)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The layer's entry (its name is the key in ``layers``)."""
        return {
            "blob": self.blob,
            "absmax": self.absmax,
            Method.KL.value: self.kl,
            Method.ACIQ.value: self.aciq,
            Method.EQ.value: self.eq,
            **{name: self.rules[name] for name in RULE_NAMES if name in self.rules},
            "chosen_method": self.chosen_method,
            "chosen": self.chosen,
        }

    @classmethod
    def from_dict(cls, layer: str, doc: Any, where: str = "") -> LayerThresholds:
        """What :meth:`to_dict` wrote for ``layer``; :class:`Malformed` names the JSON path of a
        bad value."""
        o = Obj.of(doc, where)
        method = o.text("chosen_method")
        if method not in CHOSEN_METHODS:
            raise Malformed(
                f"{o.at('chosen_method')} is {method!r}, not "
                f"{', '.join(CHOSEN_METHODS[:-1])} or {CHOSEN_METHODS[-1]}"
            )
        return cls(
            layer=layer,
            blob=o.text("blob"),
            absmax=o.num("absmax"),
            kl=o.opt_num(Method.KL),
            aciq=o.opt_num(Method.ACIQ),
            eq=o.opt_num(Method.EQ),
            chosen_method=method,
            chosen=o.opt_num("chosen"),
            rules={name: value for name in RULE_NAMES if (value := o.opt_num(name)) is not None},
        )


@dataclass(frozen=True)
class ThresholdsDoc:
    """``thresholds.json``: ``{"schema": 1, "layers": {layer: {...}}}``."""

    layers: dict[str, LayerThresholds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "layers": {name: t.to_dict() for name, t in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, doc: Any) -> ThresholdsDoc:
        """What :meth:`to_dict` wrote; :class:`Malformed` names the JSON path of a bad value."""
        layers = result_doc(doc).obj("layers")
        return cls(
            {
                name: LayerThresholds.from_dict(name, layers.raw(name), layers.at(name))
                for name in layers.d
            }
        )
