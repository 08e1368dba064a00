"""A job's progress reaches the caller before its end: the agent writes its
``EDGECAL-PROGRESS`` lines on stdout, the stream of its ``EDGECAL-DONE`` line, so that none can
arrive after it (on stderr, the lines of a short job raced its DONE and were lost: the contract
test ``test_progress_is_reported`` failed so on a busy machine).  A fake agent (a small Python
program speaking the serve protocol) stands in for the real ones here; the contract tests run
the real ones."""

from __future__ import annotations

import sys
import textwrap

from edgecal.device.session import AgentSession
from edgecal_agent import PROTOCOL_VERSION

FAKE_AGENT = textwrap.dedent(
    f"""
    import sys, time
    print("EDGECAL-READY {PROTOCOL_VERSION} fake", flush=True)
    for line in sys.stdin:
        job = line.strip()
        for done in range(0, 41, 10):
            print(f"EDGECAL-PROGRESS {{job}} {{done}} 40", flush=True)
        print(f"EDGECAL-DONE {{job}}", flush=True)
        time.sleep(0.2)  # a stderr line well after the DONE: never a progress report
        print(f"EDGECAL-PROGRESS {{job}} 99 99", file=sys.stderr, flush=True)
    """
)


def test_every_progress_line_of_a_job_arrives_before_its_end() -> None:
    session = AgentSession([sys.executable, "-c", FAKE_AGENT], device_name="fake")
    try:
        for job in ("job-1", "job-2"):
            seen: list[tuple[int, int]] = []
            session.run(job, timeout_s=30, progress=lambda d, t, seen=seen: seen.append((d, t)))
            assert seen == [(0, 40), (10, 40), (20, 40), (30, 40), (40, 40)]
    finally:
        session.close()
