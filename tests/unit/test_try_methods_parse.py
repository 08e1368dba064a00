"""``--try-methods``: ``none`` alone (not among methods, where the old message called it an
unknown method while its fix offered it), each method once, no empty item."""

from __future__ import annotations

import pytest

from edgecal.api.tune import parse_try_methods
from edgecal.errors import UsageError


def test_none_alone_and_methods() -> None:
    assert parse_try_methods("none") == ()
    assert parse_try_methods(" NONE ") == ()
    assert parse_try_methods("kl,aciq, eq") == ("kl", "aciq", "eq")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kl,kl,none", "none means no method at all, so it must be given alone"),
        ("none,kl", "must be given alone"),
        ("kl,aciq,kl", "kl given more than once"),
        ("kl,,aciq", "empty item"),
        ("kl,", "empty item"),
        ("kl,clip3", "unknown method 'clip3'"),
    ],
)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_try_methods(text)
    if "none" in text:
        assert "unknown method" not in info.value.message
    if "given more than once" in message:
        assert info.value.hint is not None and "--try-methods kl,aciq" in info.value.hint
