"""Logging of the command line: ``edgecal: ...`` lines on stderr, DEBUG with ``--debug``.

``--debug`` is for edgecal's own messages.  invoke and fabric log their whole merged
configuration at DEBUG (``connect_kwargs`` with passwords and key passphrases, ``sudo.password``
of a ``~/.fabric.yaml``), and paramiko's DEBUG is the SSH packet trace: those libraries stay at
WARNING whatever the level, so a pasted ``--debug`` log never carries a secret.
"""

from __future__ import annotations

import logging
import sys

#: loggers that may print secrets (or pages of packet traces) below WARNING
QUIET_LOGGERS = ("invoke", "fabric", "paramiko")


def configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="edgecal: %(message)s",
        stream=sys.stderr,
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if not debug:
        # paramiko's transport thread logs each failure it raises (a banner timeout, a reset)
        # at ERROR with a traceback; edgecal reports the same failure as one line with its fix
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
