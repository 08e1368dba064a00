"""Fixtures of the board tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.boards.test_board_calibrate import unavailable


@pytest.fixture(scope="module")
def boards_file() -> Path:
    """The boards file of the running emulated boards ($EDGECAL_BOARDS)."""
    value = os.environ.get("EDGECAL_BOARDS")
    if not value:
        unavailable("EDGECAL_BOARDS is not set (run `make boards-up` as root and export it)")
    return Path(str(value))
