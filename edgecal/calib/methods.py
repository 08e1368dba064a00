"""The calibration methods: one :class:`Method` enum and the registry of what each one needs.

A method's value (``"kl"``, ``"aciq"``, ``"eq"``) is what the command line, the tables, the run
documents and the JSON output spell; ``Method`` is a ``str`` so it compares, hashes, formats and
serializes as that value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgecal.errors import CalibrationError


class Method(str, Enum):
    KL = "kl"
    ACIQ = "aciq"
    EQ = "eq"

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
}

#: The values, in order, for argparse ``choices`` and help texts.
METHOD_NAMES: tuple[str, ...] = tuple(m.value for m in Method)
#: The methods computed from saved histograms alone (no device).
OFFLINE_NAMES: tuple[str, ...] = tuple(m.value for m, i in METHODS.items() if not i.needs_device)
#: "kl, aciq or eq", for hints.
METHOD_NAMES_TEXT = f"{', '.join(METHOD_NAMES[:-1])} or {METHOD_NAMES[-1]}"


def parse_method(value: str) -> Method:
    """``value`` as a :class:`Method`, or a :class:`CalibrationError` naming it."""
    try:
        return Method(value)
    except ValueError:
        raise CalibrationError(
            f"unknown calibration method {value!r}", hint=METHOD_NAMES_TEXT
        ) from None
