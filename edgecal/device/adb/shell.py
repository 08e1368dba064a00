"""Commands for a phone's ``sh`` through ``adb shell``, and reading their answers.

``adb shell ARGS...`` joins its arguments with spaces, unescaped (as ssh(1) does), and the
phone's ``adbd`` hands the result to ``sh -c``.  So edgecal never passes an argv: it builds
one command string in which every word is ``shlex.quote``-d (:func:`sh_join`) and passes that
as the single argument.  Names are data, whatever bytes they hold (spaces, quotes, ``;$()``,
newlines, ``..``).

Shell protocol v1 (what an older ``adbd`` and the emulated phone speak) carries neither the
exit status nor a separate stderr: every command therefore ends with :data:`EXIT_MARK` and
its status (:func:`with_exit_status`), and :func:`split_exit_status` reads it back; a missing
mark means the command was cut off (the connection dropped).  A pty on the way may turn
``\\n`` into ``\\r\\n``; the readers drop the ``\\r``.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence

#: The line that ends every command's output: ``EDGECAL-EXIT:<status>``.
EXIT_MARK = "EDGECAL-EXIT:"
#: The line a started agent's wrapper prints first: ``EDGECAL-PID <pid>``.
PID_MARK = "EDGECAL-PID "


def sh_join(argv: Sequence[str]) -> str:
    """One command line for ``sh -c`` that runs ``argv`` exactly (each word quoted)."""
    return " ".join(shlex.quote(a) for a in argv)


def with_exit_status(script: str) -> str:
    """``script`` (a complete ``sh`` text) followed by a line with its exit status.  The
    script runs in a subshell so an ``exit`` in it still reaches the mark."""
    return f"( {script}\n) 2>&1; printf '\\n{EXIT_MARK}%s\\n' $?"


def split_exit_status(output: str) -> tuple[str, int | None]:
    """``(output, status)`` of a :func:`with_exit_status` command; status None when the mark
    is missing (the command was cut off).  ``\\r`` of a pty are dropped."""
    text = output.replace("\r\n", "\n")
    head, sep, tail = text.rpartition("\n" + EXIT_MARK)
    if not sep:
        return text, None
    status = tail.strip().split("\n", 1)[0].strip()
    try:
        return head, int(status)
    except ValueError:
        return text, None


def agent_command(argv: Sequence[str], cwd: str) -> str:
    """The ``adb shell`` command that runs the agent ``argv`` in ``cwd``: a subshell prints
    its pid (so the host can kill exactly it) and ``exec``-s the agent with stderr on stdout
    (v1 has one stream anyway; :mod:`edgecal.device.adb.link` splits it again by the
    protocol's line prefixes); then the exit status (``128 + N`` for signal N)."""
    inner = f'echo "{PID_MARK}$$"; exec {sh_join(argv)} 2>&1'
    return f"cd {shlex.quote(cwd)} && sh -c {shlex.quote(inner)}; printf '\\n{EXIT_MARK}%s\\n' $?"


def touch_stamp(epoch: int) -> str:
    """``touch -t`` text (``CCYYMMDDhhmm.ss``, UTC) of a moment: set with ``TZ=UTC0``."""
    return time.strftime("%Y%m%d%H%M.%S", time.gmtime(epoch))
