"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DIGITS = Path(__file__).resolve().parents[1] / "data" / "reference" / "digits"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The digits model's 200 held-out test images as PNGs, and a labels CSV for them."""
    d = tmp_path_factory.mktemp("digits-test")
    data = np.load(DIGITS / "test.npz")
    rows = ["file,label"]
    for i, (x, y) in enumerate(zip(data["x"], data["y"], strict=True)):
        Image.fromarray(x).save(d / f"t{i:03d}.png")
        rows.append(f"t{i:03d}.png,{int(y)}")
    labels = d.parent / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return d, labels
