"""The devices of acquired labgrid places: a board over SSH (:class:`PlaceDevice`) and a
phone over adb (:class:`PlacePhone`), each bound to its place's lease
(:mod:`edgecal.boards.labgrid`).  Apart from it so that what only looks places up (the fleet's
set-up, the CLI) does not import the transports."""

from __future__ import annotations

from typing import Any

from edgecal.boards.labgrid import PlaceLease
from edgecal.device.adb.device import AdbDevice
from edgecal.device.base import Device, Submission
from edgecal.device.ssh.device import SshDevice
from edgecal.errors import TransportError


class PlaceBound(Device):
    """What the device of an acquired labgrid place adds to its transport's device (mixed in
    before it: :class:`PlaceDevice`, :class:`PlacePhone`): it gives the place back when
    closed (or when it cannot be made), and fails its jobs as a lost link once the place is
    no longer ours (its exporter left, another client took it), so the fleet scheduler gives
    the board up and reassigns its shards."""

    # super() is the transport's device (the class after this one), not the abstract Device
    # mypy sees: hence the type: ignore[safe-super] below

    lease: PlaceLease

    def __init__(self, lease: PlaceLease, *args: Any, **kwargs: Any) -> None:
        self.lease = lease
        self._lease_given_back = False
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self._give_back()
            raise

    def _check_place(self, what: str) -> None:
        why = self.lease.gone()
        if why is not None:
            # the board is not ours any more: nothing more goes to it (SshDevice's and
            # AdbDevice's link)
            self.link.close()  # type: ignore[attr-defined]
            raise TransportError(
                f"{self.name}: lost the board during {what}: {why}",
                hint=f"check the farm (labgrid-client -p {self.lease.name} show), then rerun",
            )

    def _submit(self, job: Submission) -> None:
        self._check_place(f"job {job.job_id}")
        super()._submit(job)  # type: ignore[safe-super]

    def recover(self) -> None:
        self._check_place("a retry")
        super().recover()  # type: ignore[safe-super]

    def close(self) -> None:
        try:
            super().close()  # type: ignore[safe-super]
        finally:
            self._give_back()

    def _give_back(self) -> None:
        if not self._lease_given_back:
            self._lease_given_back = True
            self.lease.release()


class PlaceDevice(PlaceBound, SshDevice):
    """The board of an acquired labgrid place (its NetworkService): an :class:`SshDevice`
    bound to the place (:class:`PlaceBound`)."""


class PlacePhone(PlaceBound, AdbDevice):
    """The phone of an acquired labgrid place (its ADB resource): an :class:`AdbDevice` bound
    to the place (:class:`PlaceBound`)."""
