"""Temporary folders removed off the critical path.

A run's temporary folders (decoded shards, a local device's work folder, a temporary run
directory) hold files that were often written back to disk already (fsynced answers, large
shards): on a disk mounted with ``discard`` each unlink of such a file costs milliseconds (a
local device's work folder after a 1000-image calibration: about 0.2 s).
:func:`remove_tree_soon` renames the folder out of the way at once (its path is free and nothing
reads it any more) and leaves the unlinking to a detached ``rm -rf`` that outlives this process;
where that cannot start, the folder is removed here as before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: The hidden sibling name a folder is renamed to while it is being removed.
REMOVING_MARK = ".removing-"


def remove_tree_soon(path: str | os.PathLike[str]) -> None:
    """Remove folder ``path`` (and everything in it) without waiting for the unlinks.

    On return ``path`` no longer exists; its files go away shortly after, in a detached
    process.  A folder that cannot be renamed is removed here; errors are ignored, as by
    ``shutil.rmtree(path, ignore_errors=True)``.
    """
    folder = Path(path)
    trash = folder.with_name(f".{folder.name}{REMOVING_MARK}{secrets.token_hex(6)}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return
    rm = shutil.which("rm")
    if rm is not None:
        # sh starts rm in the background and exits at once: rm is nobody's child to wait for
        try:
            subprocess.run(
                ["/bin/sh", "-c", '"$0" -rf -- "$1" </dev/null >/dev/null 2>&1 &', rm, str(trash)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
                timeout=30,
            )
            return
        except Exception:  # no sh, or none at interpreter shutdown: removed here instead
            pass
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """``tempfile.TemporaryDirectory(prefix=prefix)``, removed with :func:`remove_tree_soon`."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        remove_tree_soon(path)
