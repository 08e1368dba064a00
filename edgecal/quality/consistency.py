"""Cross-board consistency: the same int8 model's outputs on several boards, compared.

Boards of one build should give (nearly) the same int8 outputs for the same images; a board
that does not is mis-flashed, runs another ncnn build, or is broken.  Every pair of boards is
compared image by image (output cosine, top-1 disagreement); a pair *diverges* beyond the
tolerances, and a board is flagged when more than half of its pairs diverge -- so with three or
more boards the odd one out is named, and with two both are (there is no telling which is right).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from edgecal.quality.jsondoc import Malformed, Obj, number, read_fields

#: Defaults: the least per-image output cosine between two boards, and the largest fraction of
#: images whose top-1 class may differ, before a pair counts as diverging.
TOLERANCE_COSINE = 0.999
TOLERANCE_DISAGREE = 0.01


@dataclass(frozen=True)
class PairFigures:
    a: str
    b: str
    cosine_mean: float
    cosine_min: float
    top1_disagree: float

    def diverges(self, tol_cosine: float, tol_disagree: float) -> bool:
        return self.cosine_min < tol_cosine or self.top1_disagree > tol_disagree


@dataclass(frozen=True)
class BoardVerdict:
    board: str
    cosine_to_others_min: float
    diverges: bool
    why: str | None


@dataclass(frozen=True)
class Consistency:
    tolerance_cosine: float
    tolerance_disagree: float
    pairs: list[PairFigures]
    boards: list[BoardVerdict]

    @property
    def diverging(self) -> list[str]:
        return [b.board for b in self.boards if b.diverges]

    def to_dict(self) -> dict[str, object]:
        return {
            "tolerance_cosine": self.tolerance_cosine,
            "tolerance_disagree": self.tolerance_disagree,
            "pairs": [asdict(p) for p in self.pairs],
            "boards": [asdict(b) for b in self.boards],
            "diverging": self.diverging,
        }

    @classmethod
    def from_dict(cls, doc: Any, where: str = "", *, lenient: bool = False) -> Consistency:
        """What :meth:`to_dict` wrote; :class:`Malformed` names the JSON path of a bad value.
        ``diverging`` is checked but not kept: it is derived from ``boards``.

        ``lenient`` (the gate's reading): any entry may be missing (a tolerance: NaN); a board
        entry without ``board`` is skipped; a board named in ``diverging`` diverges."""
        o = Obj.of(doc, where)
        if lenient:
            return cls._lenient(o.d)
        o.texts("diverging")
        return cls(
            tolerance_cosine=o.num("tolerance_cosine"),
            tolerance_disagree=o.num("tolerance_disagree"),
            pairs=[read_fields(PairFigures, p) for p in o.objs("pairs")],
            boards=[read_fields(BoardVerdict, b) for b in o.objs("boards")],
        )

    @classmethod
    def _lenient(cls, d: dict[str, Any]) -> Consistency:
        def num(x: dict[str, Any], key: str) -> float:
            try:
                return number(x.get(key), key)
            except Malformed:
                return math.nan

        def listed(key: str) -> list[Any]:
            value = d.get(key)
            return value if isinstance(value, list) else []

        boards = [
            BoardVerdict(
                board=str(b["board"]),
                cosine_to_others_min=num(b, "cosine_to_others_min"),
                diverges=bool(b.get("diverges")),
                why=str(b["why"]) if b.get("why") else None,
            )
            for b in listed("boards")
            if isinstance(b, dict) and "board" in b
        ]
        for name in map(str, listed("diverging")):
            known = [i for i, b in enumerate(boards) if b.board == name]
            if not known:
                boards.append(BoardVerdict(name, math.nan, True, None))
            for i in known:
                boards[i] = replace(boards[i], diverges=True)
        pairs = [
            PairFigures(
                a=str(p.get("a")),
                b=str(p.get("b")),
                cosine_mean=num(p, "cosine_mean"),
                cosine_min=num(p, "cosine_min"),
                top1_disagree=num(p, "top1_disagree"),
            )
            for p in listed("pairs")
            if isinstance(p, dict)
        ]
        return cls(num(d, "tolerance_cosine"), num(d, "tolerance_disagree"), pairs, boards)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (float64; 1 for two zero rows,
    0 when only one is zero)."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    na = np.sqrt(np.einsum("ij,ij->i", a64, a64))
    nb = np.sqrt(np.einsum("ij,ij->i", b64, b64))
    dot = np.einsum("ij,ij->i", a64, b64)
    out = np.ones(a64.shape[0])
    both = (na > 0) & (nb > 0)
    out[both] = np.clip(dot[both] / na[both] / nb[both], -1.0, 1.0)
    out[(na > 0) != (nb > 0)] = 0.0
    out[np.all(a64 == b64, axis=1)] = 1.0  # bit-equal rows: exactly 1, not 1 - 1 ulp
    return out


def compare_boards(
    outputs: Mapping[str, np.ndarray],
    *,
    tol_cosine: float = TOLERANCE_COSINE,
    tol_disagree: float = TOLERANCE_DISAGREE,
) -> Consistency:
    """``outputs[board]``: the int8 model's output on every image, ``(n_images, n_values)``,
    images in the same order on every board.  Needs two boards or more."""
    names = list(outputs)
    if len(names) < 2:
        raise ValueError(f"cross-board consistency needs two boards or more, got {names}")
    arrays = {k: np.asarray(v, dtype=np.float32).reshape(len(v), -1) for k, v in outputs.items()}
    shapes = {k: v.shape for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"boards answered outputs of different shapes: {shapes}")
    pairs: list[PairFigures] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cos = row_cosines(arrays[a], arrays[b])
            dis = float(np.mean(np.argmax(arrays[a], 1) != np.argmax(arrays[b], 1)))
            pairs.append(PairFigures(a, b, float(cos.mean()), float(cos.min()), dis))
    verdicts = []
    for name in names:
        mine = [p for p in pairs if name in (p.a, p.b)]
        bad = [p for p in mine if p.diverges(tol_cosine, tol_disagree)]
        worst = min(p.cosine_min for p in mine)
        diverges = 2 * len(bad) > len(mine)
        why = None
        if diverges:
            others = ", ".join(p.b if p.a == name else p.a for p in bad)
            w = min(bad, key=lambda p: p.cosine_min)
            why = (
                f"int8 outputs differ from {others} (least per-image cosine "
                f"{w.cosine_min:.6f} < {tol_cosine}, or top-1 differs on "
                f"{100 * w.top1_disagree:.2f} % of images > {100 * tol_disagree:.2f} %)"
            )
        verdicts.append(BoardVerdict(name, worst, diverges, why))
    return Consistency(tol_cosine, tol_disagree, pairs, verdicts)
