"""OpenSSH ``known_hosts`` (pure): parse the lines, decide what an offered host key is.

paramiko's own ``HostKeys`` raises ``InvalidHostKey`` on a ``@revoked`` or ``@cert-authority``
line and knows no wildcard patterns, so edgecal reads known_hosts itself, as ``ssh`` does
(``sshd(8)``, section SSH_KNOWN_HOSTS FILE FORMAT):

* ``[@marker] hostnames keytype base64-key [comment]``; blank lines and ``#`` comments are
  skipped, and so is any line ssh would not read (unknown marker, bad base64, a key blob whose
  type is not the line's key type);
* ``hostnames``: a comma-separated pattern list (``*``, ``?``, ``!negation``; see
  :mod:`edgecal.device.ssh.pattern`) or one hashed name ``|1|base64(salt)|base64(hash)``
  (HMAC-SHA1 of the name keyed with the salt, what ``ssh-keygen -H`` writes);
* the name looked up is ``host`` for port 22, ``[host]:port`` otherwise;
* ``@revoked``: that key is refused for the matching hosts, whatever other line says;
* ``@cert-authority``: a CA for host certificates; edgecal does not use certificates, so
  such a line never makes a plain host key known.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from edgecal.device.ssh.pattern import match_pattern_list

HASH_MAGIC = "|1|"
MARKERS = {"@revoked": "revoked", "@cert-authority": "cert-authority"}

Marker = Literal["revoked", "cert-authority"]
Status = Literal["ok", "revoked", "changed", "unknown", "ca-only"]


@dataclass(frozen=True)
class KnownHostLine:
    """One usable line of a known_hosts file."""

    path: str
    lineno: int
    marker: Marker | None
    hosts: str  # the host field as written (patterns, or one hashed name)
    keytype: str
    blob: bytes  # the decoded key

    @property
    def where(self) -> str:
        return f"{self.path} line {self.lineno}"


@dataclass(frozen=True)
class Verdict:
    """``ok``: a plain line has this key.  ``revoked``: a ``@revoked`` line has it.
    ``changed``: plain lines match the host, none with this key (``line``: the one to show,
    of the offered key's type when there is one).  ``ca-only``: only ``@cert-authority``
    lines match.  ``unknown``: no line matches the host."""

    status: Status
    line: KnownHostLine | None = None


def known_hosts_name(host: str, port: int | None) -> str:
    """The name ssh looks up: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def hash_name(name: str, salt: bytes) -> str:
    """``|1|salt|hash`` for ``name``, as ``ssh-keygen -H`` writes it."""
    digest = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return f"{HASH_MAGIC}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _hashed_matches(field: str, name: str) -> bool:
    salt_b64, sep, hash_b64 = field[len(HASH_MAGIC) :].partition("|")
    if not sep:
        return False
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        want = base64.b64decode(hash_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    got = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def host_matches(hosts: str, name: str) -> bool:
    """Whether the host field of a line matches the looked-up ``name`` (see the module)."""
    name = name.lower()
    if hosts.startswith(HASH_MAGIC):
        return _hashed_matches(hosts, name)
    return match_pattern_list(name, hosts.split(","))


def _blob_type(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    if n > len(blob) - 4:
        return None
    try:
        return blob[4 : 4 + n].decode("ascii")
    except UnicodeDecodeError:
        return None


def parse_line(text: str, path: str, lineno: int) -> KnownHostLine | None:
    """One line, or None for a blank, comment or unreadable line (ssh skips those too)."""
    fields = text.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker: Marker | None = None
    if fields[0].startswith("@"):
        if fields[0] not in MARKERS:
            return None
        marker = MARKERS[fields[0]]  # type: ignore[assignment]
        fields = fields[1:]
    if len(fields) < 3:
        return None
    hosts, keytype, key = fields[0], fields[1], fields[2]
    try:
        blob = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None
    if _blob_type(blob) != keytype:
        return None
    return KnownHostLine(path, lineno, marker, hosts, keytype, blob)


def parse_known_hosts(text: str, path: str) -> list[KnownHostLine]:
    """The usable lines of one file's text."""
    lines = (parse_line(t, path, i) for i, t in enumerate(text.splitlines(), 1))
    return [ln for ln in lines if ln is not None]


def lines_for(lines: Iterable[KnownHostLine], name: str) -> list[KnownHostLine]:
    """The lines whose host field matches ``name``."""
    return [ln for ln in lines if host_matches(ln.hosts, name)]


def check_host_key(lines: Sequence[KnownHostLine], name: str, keytype: str, blob: bytes) -> Verdict:
    """What the known_hosts ``lines`` say about ``name`` offering the key ``blob``."""
    mine = lines_for(lines, name)
    for ln in mine:
        if ln.marker == "revoked" and ln.blob == blob:
            return Verdict("revoked", ln)
    plain = [ln for ln in mine if ln.marker is None]
    for ln in plain:
        if ln.blob == blob:
            return Verdict("ok", ln)
    if plain:
        same_type = [ln for ln in plain if ln.keytype == keytype]
        return Verdict("changed", (same_type or plain)[0])
    ca = [ln for ln in mine if ln.marker == "cert-authority"]
    if ca:
        return Verdict("ca-only", ca[0])
    return Verdict("unknown")


def known_key_types(lines: Sequence[KnownHostLine], name: str) -> list[str]:
    """The key types of the plain, unrevoked lines for ``name``, in file order (what the
    connection should ask the server for first, as ssh does)."""
    mine = lines_for(lines, name)
    revoked = {ln.blob for ln in mine if ln.marker == "revoked"}
    types = [ln.keytype for ln in mine if ln.marker is None and ln.blob not in revoked]
    return list(dict.fromkeys(types))


def fingerprint_blob(keytype: str, blob: bytes) -> str:
    """``ssh-ed25519 SHA256:...``, as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{keytype} SHA256:{digest}"
