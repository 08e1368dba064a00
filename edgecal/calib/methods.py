"""The calibration methods: one :class:`Method` enum and the registry of what each one needs.

A method's value (``"kl"``, ``"aciq"``, ``"eq"``, ``"mse"``, ``"p99.99"``...) is what the command
line, the tables, the run documents and the JSON output spell; ``Method`` is a ``str`` so it
compares, hashes, formats and serializes as that value.

Two distinct name lists: :data:`METHOD_NAMES` is ncnn2table's ``method=`` (kl, aciq, eq: what the
drop-in accepts and what tune tries), :data:`RULE_NAMES` the threshold rules ncnn lacks that need
no runtime change (:mod:`edgecal.calib.rules`: a table is just scales).  ``calibrate`` and
``table`` take both (:data:`CALIBRATE_NAMES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgecal.errors import CalibrationError


class Method(str, Enum):
    KL = "kl"
    ACIQ = "aciq"
    EQ = "eq"
    MSE = "mse"
    P99_9 = "p99.9"
    P99_99 = "p99.99"
    P99_999 = "p99.999"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)


@dataclass(frozen=True)
class MethodInfo:
    """How a method's thresholds are computed and what it needs."""

    label: str  # as the report shows it
    blob_rule: Method  # the rule of the table's blob thresholds (EQ starts from KL's table)
    needs_histograms: bool  # False: the abs-max of each blob is enough
    needs_device: bool  # True: a per-layer search on the device refines the table


METHODS: dict[Method, MethodInfo] = {
    Method.KL: MethodInfo("KL", Method.KL, needs_histograms=True, needs_device=False),
    Method.ACIQ: MethodInfo("ACIQ", Method.ACIQ, needs_histograms=False, needs_device=False),
    Method.EQ: MethodInfo("EQ", Method.KL, needs_histograms=True, needs_device=True),
    Method.MSE: MethodInfo("MSE", Method.MSE, needs_histograms=True, needs_device=False),
    Method.P99_9: MethodInfo("p99.9", Method.P99_9, needs_histograms=True, needs_device=False),
    Method.P99_99: MethodInfo("p99.99", Method.P99_99, needs_histograms=True, needs_device=False),
    Method.P99_999: MethodInfo(
        "p99.999", Method.P99_999, needs_histograms=True, needs_device=False
    ),
}

#: ncnn2table's methods (its ``method=``), in order: the drop-in, tune's choices, help texts.
NCNN_METHODS: tuple[Method, ...] = (Method.KL, Method.ACIQ, Method.EQ)
#: The threshold rules ncnn2table lacks (:mod:`edgecal.calib.rules`), in order.
RULES: tuple[Method, ...] = (Method.MSE, Method.P99_9, Method.P99_99, Method.P99_999)
#: The values, in order, for argparse ``choices`` and help texts: ncnn's methods only.
METHOD_NAMES: tuple[str, ...] = tuple(m.value for m in NCNN_METHODS)
#: The extra rules' values, in order.
RULE_NAMES: tuple[str, ...] = tuple(m.value for m in RULES)
#: What ``edgecal calibrate --method`` takes: ncnn's methods, then the extra rules.
CALIBRATE_NAMES: tuple[str, ...] = METHOD_NAMES + RULE_NAMES
#: ncnn's methods computed from saved histograms alone (no device).
OFFLINE_NAMES: tuple[str, ...] = tuple(m.value for m in NCNN_METHODS if not METHODS[m].needs_device)
#: "kl, aciq or eq", for hints.
METHOD_NAMES_TEXT = f"{', '.join(METHOD_NAMES[:-1])} or {METHOD_NAMES[-1]}"


def parse_method(value: str) -> Method:
    """``value`` as a :class:`Method` (ncnn's or an extra rule), or a :class:`CalibrationError`
    naming it."""
    try:
        return Method(value)
    except ValueError:
        raise CalibrationError(
            f"unknown calibration method {value!r}", hint=METHOD_NAMES_TEXT
        ) from None
