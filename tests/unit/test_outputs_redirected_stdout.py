"""Outputs written to ``-`` go to whatever ``sys.stdout`` is: a text stream without a byte
buffer (``contextlib.redirect_stdout``, a notebook) gets the text, a real one the bytes."""

from __future__ import annotations

import contextlib
import io
import sys

import pytest

from edgecal.errors import UsageError
from edgecal.files.outputs import write_outputs


def test_a_text_stream_without_a_buffer_gets_the_text() -> None:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        write_outputs([("-", "layer 1.5 ✓\n".encode())])
    assert out.getvalue() == "layer 1.5 ✓\n"


def test_no_standard_output_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(UsageError, match="cannot write -: there is no standard output"):
        write_outputs([("-", b"x\n")])
