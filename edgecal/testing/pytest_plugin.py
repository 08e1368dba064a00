"""The pytest plugin (entry point ``pytest11: edgecal``): on-device int8 regression checks.

Options: ``--edgecal-device NAME`` (a board of the boards file, ``user@host[:port]``,
``labgrid:PLACE`` or ``local``), ``--edgecal-boards FILE`` (default ``$EDGECAL_BOARDS``),
``--edgecal-labgrid-wait SECONDS``.  Without ``--edgecal-device`` and with labgrid's own plugin
configured (``--lg-env``/``$LG_ENV``), the device is the place of labgrid's target ``main``
(its ``RemotePlace``, read from the environment file; the user holds it: used as it is, never
released here); else this machine.

Fixtures:

* ``edgecal_device_name``: that device's name;
* ``edgecal_device``: the device, open for the session (a place stays acquired until the end);
* ``edgecal_validate``: ``(model, int8=None, *, table=None, inputs, labels=None, **options) ->
  Validation`` on that device (:func:`edgecal.validate`'s arguments); its result's
  ``top1_drop``, ``agreement``, ``cosine_mean``, ``results`` serve asserts;
* ``edgecal_check``: ``(validation, *, baseline=None, **thresholds)``: the ``edgecal check``
  gate (:class:`~edgecal.Thresholds` fields, e.g. ``min_agreement=0.98``,
  ``max_accuracy_drop_points=0.5``) -- fails the test with the gate's table and the per-layer
  figures.

A failing test that ran ``edgecal_validate`` shows the figures of each validation it ran (the
lines ``edgecal validate`` prints: accuracy, agreement, output cosine/SQNR, per-layer cosine,
min and SQNR) in a report section ``edgecal figures``, whatever assert failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # edgecal itself is imported when a fixture is used, not by every pytest run
    from edgecal.api.validate import Validation
    from edgecal.device.base import Device
    from edgecal.fleet.prepare import Devices

FIGURES = pytest.StashKey[list["Validation"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgecal", "edgecal: on-device int8 checks")
    group.addoption(
        "--edgecal-device",
        default=None,
        metavar="NAME",
        help="the device of edgecal_device/edgecal_validate: a board of the boards file, "
        "user@host[:port], labgrid:PLACE or local (default: labgrid's target with --lg-env, "
        "else local)",
    )
    group.addoption(
        "--edgecal-boards", default=None, metavar="FILE", help="boards file ($EDGECAL_BOARDS)"
    )
    group.addoption(
        "--edgecal-labgrid-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for a labgrid place another client holds",
    )


def remote_place(targets: Any, role: str = "main") -> str | None:
    """The place name of the ``RemotePlace`` of target ``role`` in a labgrid environment's
    ``targets`` (both of labgrid's resource forms: a mapping ``{cls: args}`` or a list of
    them); None when that target has none.  Read from the configuration, not from labgrid's
    ``target`` fixture: labgrid 26 makes every resource of the place when it builds the
    target and knows no ADB resource class, so a phone place's target cannot be built."""
    target = targets.get(role) if isinstance(targets, dict) else None
    resources = (target or {}).get("resources") or {}
    items = resources if isinstance(resources, list) else [resources]
    for item in items:
        args = item.get("RemotePlace") if isinstance(item, dict) else None
        if isinstance(args, dict) and args.get("name"):
            return str(args["name"])
    return None


def _labgrid_target_place(request: pytest.FixtureRequest) -> str | None:
    """``labgrid:PLACE`` of labgrid's target ``main`` (its RemotePlace), when labgrid's pytest
    plugin has an environment."""
    if not (getattr(request.config.option, "lg_env", None) or os.environ.get("LG_ENV")):
        return None
    try:
        from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY
    except ImportError:
        pytest.fail(
            "edgecal: LG_ENV is set but labgrid is not installed: pip install 'edgecal[labgrid]' "
            "or name the device with --edgecal-device",
            pytrace=False,
        )
    env = request.config.stash.get(LABGRID_ENV_KEY, None)
    if env is None:  # LG_ENV set, labgrid's plugin not loaded
        pytest.fail(
            "edgecal: LG_ENV is set but labgrid's pytest plugin is not loaded: load it "
            "(no '-p no:labgrid') or name the device with --edgecal-device",
            pytrace=False,
        )
    place = remote_place(env.config.get_targets())
    if place is None:
        pytest.fail(
            f"edgecal: labgrid's target 'main' in {env.config_file} has no RemotePlace: "
            "name the device with --edgecal-device",
            pytrace=False,
        )
    return f"labgrid:{place}"


@pytest.fixture(scope="session")
def edgecal_device_name(request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.config.getoption("edgecal_device")
    if name:
        yield str(name)
        return
    place = _labgrid_target_place(request)
    if place is None:
        yield "local"
        return
    from edgecal.boards.config import boards_file
    from edgecal.boards.labgrid import adopt, farm_settings

    lease = adopt(place, farm_settings(boards_file(request.config.getoption("edgecal_boards"))))
    try:
        yield place
    finally:
        lease.release()


@pytest.fixture(scope="session")
def edgecal_devices(request: pytest.FixtureRequest, edgecal_device_name: str) -> Devices:
    """The :class:`~edgecal.Devices` of the session (the device, its boards file)."""
    from edgecal.fleet.prepare import Devices

    return Devices.of(
        edgecal_device_name,
        boards=request.config.getoption("edgecal_boards"),
        labgrid_wait_s=request.config.getoption("edgecal_labgrid_wait"),
    )


@pytest.fixture(scope="session")
def edgecal_device(edgecal_devices: Devices, edgecal_device_name: str) -> Iterator[Device]:
    with edgecal_devices.open_one(edgecal_device_name, None) as device:
        yield device


@pytest.fixture
def edgecal_validate(
    request: pytest.FixtureRequest, edgecal_devices: Devices
) -> Callable[..., Validation]:
    ran = request.node.stash.setdefault(FIGURES, [])

    def run(model: Any, int8: Any = None, **options: Any) -> Validation:
        from edgecal.api.validate import validate

        val = validate(model, int8, devices=edgecal_devices, **options)
        ran.append(val)
        return val

    return run


def figures(val: Validation) -> str:
    """What ``edgecal validate`` prints of ``val``."""
    from edgecal.cli.validate import render_validation

    return "\n".join(render_validation(val.document()))


@pytest.fixture
def edgecal_check() -> Callable[..., None]:
    def gate(val: Validation, *, baseline: Any = None, **thresholds: Any) -> None:
        from edgecal.api.check import check
        from edgecal.cli.render import render_gate
        from edgecal.quality.gate import Thresholds

        report = check(
            baseline=baseline, thresholds=Thresholds(**thresholds), validation=lambda: val
        )
        if not report.passed:
            pytest.fail(
                f"edgecal check failed:\n{render_gate(report)}{figures(val)}", pytrace=False
            )

    return gate


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    ran = item.stash.get(FIGURES, [])
    if report.when == "call" and report.failed and ran:
        report.sections.append(("edgecal figures", "\n\n".join(figures(v) for v in ran)))
    return report
