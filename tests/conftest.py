"""Shared test set-up: hypothesis profiles and the reference data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# One profile for `make test`, CI and a bare `pytest`: derandomized (so a failure is the same on
# every run and machine) and with no example database (derandomize implies database=None).
# HYPOTHESIS_PROFILE=dev explores new random examples.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / "reference"
SAMPLE = ROOT / "samples" / "tinted_digits"


@pytest.fixture(scope="session")
def reference() -> Path:
    return REFERENCE


IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def loopback_sshd(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real sshd on 127.0.0.1 (tests/integration/sshd.py); skips without one, except in CI."""
    from tests.integration.sshd import LoopbackSshd, ensure_openssh

    why = ensure_openssh()
    if why is not None:
        if IN_CI:
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)
    server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def phone_board():  # type: ignore[no-untyped-def]
    """The first ``transport = "adb"`` board of $EDGECAL_BOARDS (or the one named by
    $EDGECAL_TEST_PHONE): the emulated phone (`make boards-up BOARDS=phone1`); skips without
    one, except in CI."""
    from edgecal.boards.config import BOARDS_ENV, load_boards

    path = os.environ.get(BOARDS_ENV)
    boards = load_boards(Path(path)) if path else {}
    want = os.environ.get("EDGECAL_TEST_PHONE")
    phones = [b for b in boards.values() if b.transport == "adb" and want in (None, b.name)]
    if not phones:
        why = f"no adb phone in {BOARDS_ENV}={path or '(unset)'}"
        if IN_CI:
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)
    return phones[0]


@pytest.fixture(scope="session")
def native_agent_aarch64() -> Path:
    """The aarch64 native agent for phones: $EDGECAL_TEST_NATIVE_AARCH64, else built (or
    found in the cache) by edgecal.native."""
    given = os.environ.get("EDGECAL_TEST_NATIVE_AARCH64")
    if given:
        return Path(given)
    try:
        from edgecal.native import build_agent
    except ImportError as e:
        pytest.skip(f"no aarch64 native agent: {e}")
    return Path(build_agent("aarch64").path)


@pytest.fixture(scope="session")
def native_agent_binary() -> Path:
    """The native agent for this machine, built by ``edgecal.native`` into its cache (cold: a
    libncnn build of several minutes; ``make native-agents`` does it beforehand); skips when
    the compilers are missing, except in CI."""
    from edgecal.errors import EdgecalError
    from edgecal.native import build_agent

    try:
        return build_agent("x86_64").path
    except EdgecalError as e:
        why = f"{e.message} ({e.hint})" if e.hint else e.message
        if IN_CI:
            pytest.fail(f"CI=true and the native agent cannot be built: {why}", pytrace=False)
        pytest.skip(f"the native agent cannot be built: {why}")
