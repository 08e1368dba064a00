"""The pytest plugin reads the place of labgrid's target ``main`` from the environment file's
targets (both of labgrid's resource forms), without building labgrid's target."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from edgecal.testing.pytest_plugin import remote_place


def targets(text: str) -> Any:
    return yaml.safe_load(text)["targets"]


@pytest.mark.parametrize(
    ("text", "place"),
    [
        # the mapping form, as labgrid's docs write an environment
        (
            "targets:\n  main:\n    resources:\n      RemotePlace:\n        name: ph-phone1\n",
            "ph-phone1",
        ),
        # the list form (named resources), among other resources
        (
            "targets:\n  main:\n    resources:\n    - NetworkService: {address: h}\n"
            "    - RemotePlace: {name: lab-emu4}\n",
            "lab-emu4",
        ),
        # no RemotePlace, no resources, another role only
        ("targets:\n  main:\n    resources:\n      NetworkService: {address: h}\n", None),
        ("targets:\n  main: {}\n", None),
        ("targets:\n  other:\n    resources:\n      RemotePlace: {name: x}\n", None),
    ],
)
def test_the_place_of_the_main_target(text: str, place: str | None) -> None:
    assert remote_place(targets(text)) == place
