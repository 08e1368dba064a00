"""The boards file's ``workdir`` (and ``workdir_root``) check: where an agent may work.

The agent keeps every file it reads, writes or deletes inside its work directory, and deletes
old job folders there; a work directory that is the board's root, its home, or the current
folder would hand it the whole board.  This is the host's check of the configured text; it
cannot resolve the board's symlinks, so the agent refuses, when it starts, a work directory
whose real path is ``/`` or outside the home (or ``workdir_root``) as well.
"""

from __future__ import annotations

import posixpath

from edgecal.errors import ConfigError

_HINT = (
    'use a folder of its own, e.g. workdir = ".cache/edgecal" (relative to the board '
    'user\'s home), or an absolute folder below `workdir_root = "/some/root"`'
)


def check_workdir_setting(workdir: str, root: str | None, where: str) -> None:
    """``ConfigError`` unless ``workdir`` names a folder of its own: not empty, ``/``, ``.``,
    ``~`` or anything that normalises to them, no ``..`` or NUL; an absolute one inside
    ``root`` when a root is given.  ``root``: absolute, not ``/``."""
    if root is not None and (
        "\x00" in root or not root.startswith("/") or posixpath.normpath(root) in ("/", "//")
    ):
        raise ConfigError(
            f"{where}: key 'workdir_root' {root!r} must be an absolute folder other than /",
            hint=_HINT,
        )
    text = workdir[2:] if workdir.startswith("~/") else workdir
    parts = text.split("/")
    if not text or "\x00" in text or ".." in parts or text == "~" or text.startswith("~"):
        raise ConfigError(
            f"{where}: key 'workdir' {workdir!r} must be a folder of its own "
            "(not empty, '~', or with '..')",
            hint=_HINT,
        )
    norm = posixpath.normpath(text)
    if norm in (".", "/", "//"):
        raise ConfigError(
            f"{where}: key 'workdir' {workdir!r} is the home folder or the file "
            "system root; the agent deletes old job folders in its work "
            "directory",
            hint=_HINT,
        )
    if root is not None and norm.startswith("/"):
        real_root = posixpath.normpath(root)
        if not (norm == real_root or norm.startswith(real_root.rstrip("/") + "/")):
            raise ConfigError(
                f"{where}: key 'workdir' {workdir!r} is outside 'workdir_root' {root!r}", hint=_HINT
            )
