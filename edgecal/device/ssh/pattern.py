"""OpenSSH host patterns (pure): ``*`` / ``?`` wildcards and ``!`` negation, as ``ssh``
matches the host names of a ``known_hosts`` line and of a ``Host`` line of ``ssh_config``.

A pattern list (``a,b,!c`` in known_hosts; the words of a ``Host`` line) matches a name when
one of its positive patterns matches it and none of its negated ones does (a negated match
wins, so a list of only negated patterns never matches).  Matching ignores ASCII case, as
OpenSSH's ``match_hostname`` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


def match_pattern(name: str, pattern: str) -> bool:
    """One pattern against the whole name: ``*`` any run, ``?`` one character, rest literal."""
    return _compiled(pattern.lower()).fullmatch(name.lower()) is not None


def match_pattern_list(name: str, patterns: Iterable[str]) -> bool:
    """OpenSSH ``match_pattern_list``/``match_hostname`` == 1: a positive match and no
    negated one."""
    positive = False
    for pat in patterns:
        if pat.startswith("!"):
            if match_pattern(name, pat[1:]):
                return False
        elif match_pattern(name, pat):
            positive = True
    return positive
