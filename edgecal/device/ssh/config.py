"""Whether a name is a host alias of the user's ``ssh_config`` (``--device myboard`` without a
boards file works when ``~/.ssh/config`` has ``Host myboard``).

A name is an alias when a ``Host`` line of ``~/.ssh/config`` (or ``/etc/ssh/ssh_config``)
matches it through a pattern other than a bare ``*`` (OpenSSH pattern rules, see
:mod:`edgecal.device.ssh.pattern`): ``Host *`` alone matches every typo.  What the alias means
(HostName, User, Port, IdentityFile, ...) is read by paramiko's ``SSHConfig`` through fabric
when the board is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from edgecal.device.ssh.pattern import match_pattern, match_pattern_list

USER_SSH_CONFIG = "~/.ssh/config"
SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"


@dataclass(frozen=True)
class SshAddress:
    """Where a board is and how long to wait for it, as a boards file or ``--device`` says.
    ``host`` may be an ``~/.ssh/config`` alias."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 3600.0


_HOST_LINE = re.compile(r"^\s*host(?:\s*=\s*|\s+)(?P<patterns>.+?)\s*$", re.IGNORECASE)


def host_patterns(text: str) -> list[list[str]]:
    """The pattern lists of the ``Host`` lines of an ssh_config text (quotes removed)."""
    out = []
    for line in text.splitlines():
        m = _HOST_LINE.match(line)
        if m is None or line.lstrip().startswith("#"):
            continue
        out.append([p.strip('"') for p in m["patterns"].split() if p.strip('"')])
    return out


def alias_matches(name: str, patterns: Sequence[str]) -> bool:
    """``Host`` line ``patterns`` name ``name`` (not only through a bare ``*``)."""
    if not match_pattern_list(name, patterns):
        return False
    return any(not p.startswith("!") and p != "*" and match_pattern(name, p) for p in patterns)


def config_files() -> list[str]:
    return [os.path.expanduser(USER_SSH_CONFIG), SYSTEM_SSH_CONFIG]


def is_ssh_alias(name: str, files: Sequence[str] | None = None) -> bool:
    """Whether a ``Host`` line of the ssh_config ``files`` (default: the user's, the
    system's) names ``name``."""
    for path in config_files() if files is None else files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        if any(alias_matches(name, pats) for pats in host_patterns(text)):
            return True
    return False
