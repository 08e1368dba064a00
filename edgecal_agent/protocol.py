"""Two names the CLI command modules being rewritten on other branches still import from here.

The wire format lives in :mod:`edgecal_agent.messages`, :mod:`edgecal_agent.npzio` and
:mod:`edgecal_agent.shards`; import from there.  Remove this module once ``edgecal/cli/``
imports ``RUNTIMES`` and ``EQ_MAX_SAMPLES`` from :mod:`edgecal_agent.messages`.
"""

from edgecal_agent.messages import EQ_MAX_SAMPLES, RUNTIMES

__all__ = ["EQ_MAX_SAMPLES", "RUNTIMES"]
