"""Which devices a use case runs on, and opening them ready for work.

:class:`Devices` is the typed form of ``--device``/``--group``/``--boards``: the names, the
boards file, and how to treat unknown host keys, boards of other profiles and the golden check.
:meth:`Devices.open` opens them: one local device in the calibration runtime is ``threads``
agent workers (ncnn2table's ``thread=``); boards are opened in parallel, checked for free space,
given the model and the agent at once (fabric), optionally golden-checked; with several boards
one that cannot be reached or fails a step is left out and the others carry on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecal.boards.config import Board, boards_file, load_group, resolve_board
from edgecal.boards.labgrid import (
    PREFIX,
    describe_place,
    expand,
    farm_settings,
    is_pattern,
    is_place_spec,
)
from edgecal.boards.open import boards_arg, is_local, open_device
from edgecal.device.base import Device
from edgecal.errors import BoardSetupError, CalibrationError, DeviceError, HostKeyError, UsageError
from edgecal.fleet.pool import board_pool, close_all
from edgecal.inputs.arguments import devices_arg

#: Where notes for the user go (a board left out, a capped thread count).
Say = Callable[[str], None]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_workers(threads: int, what: str, say: Say | None = None) -> int:
    """How many agents the calibration runtime starts on this machine for ``threads`` workers
    (``what``: the option as typed, for the message): one per core at most -- more only
    compete for the cores and each holds the model -- said in one line when capped."""
    cores = usable_cores()
    if threads <= cores:
        return max(1, threads)
    if say is not None:
        say(
            f"warning: {what} is more than the {cores} core(s) of this machine: calibrating "
            f"with {cores} agent worker(s), one per core (the table does not depend on it)"
        )
    return cores


@dataclass(frozen=True)
class Devices:
    """The devices of a run: ``names`` are boards-file names, ``user@host[:port]``, ``local``
    or ``None`` (this machine); ``boards`` is the boards file (default ``$EDGECAL_BOARDS``)."""

    names: tuple[str | None, ...] = ()  # as given (empty: this machine, unless a group)
    group: str | None = None  # every board of this group of the boards file, too
    boards: str | None = None
    accept_new_host_key: bool = False
    mixed_boards: bool = False  # boards of different profiles in one calibration
    golden: bool = False  # leave out a board whose golden check fails
    #: how the thread option is named in a note (``--threads N`` or ncnn2table's ``thread=N``)
    threads_label: str = "--threads {}"
    #: how long to wait for a labgrid place another client holds (None: the boards file's)
    labgrid_wait_s: float | None = None
    #: what the run is (in the hint of a mix of profiles) and whether it takes boards of
    #: different profiles at all (tune does not: its latencies and scores would mix them)
    purpose: str = "calibrate"
    mixable: bool = True
    _boards: dict[str | None, Board | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        device: str | Sequence[str | None] | Devices | None = None,
        *,
        boards: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> Devices:
        """From ``--device`` (one name or several), ``--group``, ``--boards``; the names are
        resolved (and each board must be named once) and the boards file, when given, read
        here."""
        if isinstance(device, Devices):
            return device
        names = devices_arg(device)
        out = cls(names=names, boards=boards_arg(boards), **options)
        out.all_names  # noqa: B018 -- resolved now: a bad name fails before any work
        return out

    @functools.cached_property
    def all_names(self) -> tuple[str | None, ...]:
        """Every device of the run (the group's boards after the names given); ``(None,)``:
        this machine."""
        names: list[str | None] = []
        for name in self.names:  # a labgrid place pattern: every place it matches
            if is_place_spec(name) and is_pattern(name[len(PREFIX) :]):
                names += expand(name, farm_settings(self.boards_path, self.labgrid_wait_s))
            else:
                names.append(name)
        if self.group:
            names += load_group(self.boards_path, self.group)
        if not names:
            return (None,)
        shown = [n or "local" for n in names]
        dup = sorted({n for n in shown if shown.count(n) > 1})
        if dup:
            raise UsageError(f"board {dup[0]} is named twice", hint="name each board once")
        return tuple(names)

    @property
    def boards_path(self) -> Path | None:
        return boards_file(self.boards)

    @property
    def last_given(self) -> str | None:
        """The device a single-device option means (the last ``--device`` given)."""
        return self.names[-1] if self.names else None

    @property
    def is_local_calibration(self) -> bool:
        return len(self.all_names) == 1 and is_local(self.all_names[0])

    def board(self, name: str | None) -> Board | None:
        """The board ``name`` is (None: this machine)."""
        if name not in self._boards:
            board = (
                describe_place(name, farm_settings(self.boards_path, self.labgrid_wait_s))
                if is_place_spec(name)
                else resolve_board(name, self.boards_path)
            )
            if board is not None and board.place is not None:  # a boards-file name of a place
                place = describe_place(
                    f"{PREFIX}{board.place}", farm_settings(self.boards_path, self.labgrid_wait_s)
                )
                board = dataclasses.replace(place, name=board.name)
            self._boards[name] = board
        return self._boards[name]

    def threads_for(self, runtime: str, name: str | None, threads: int | None) -> int:
        """``threads``, or its default: 1 worker for calibration; for the deployed runtime the
        thread count the app would use (the board profile's, or every core of this machine)."""
        if threads is not None:
            if threads < 1:
                raise UsageError(f"--threads {threads}: must be at least 1")
            return int(threads)
        if runtime == "calibration":
            return 1
        if not is_local(name):
            board = self.board(name)
            profile = board.load_profile() if board is not None else None
            if profile is not None:
                return int(profile.threads)
        return os.cpu_count() or 1

    def workers(self, runtime: str, threads: int) -> int:
        """How many workers share a calibration's shards: the local agents, or the boards."""
        if self.is_local_calibration and runtime == "calibration":
            return local_workers(threads, "")  # capped as open() caps it (said there)
        return len(self.all_names)

    def profiles(self) -> dict[str, str]:
        out = {}
        for name in self.all_names:
            board = self.board(name)
            out[name or "local"] = (
                "this machine" if board is None else (board.profile or "no profile")
            )
        return out

    def check_same_profile(self) -> None:
        profiles = self.profiles()
        if len(set(profiles.values())) > 1 and not self.mixed_boards:
            shown = ", ".join(f"{k}: {v}" for k, v in profiles.items())
            raise UsageError(
                f"the boards are of different profiles ({shown}): their activations differ, "
                "so one table would mix them",
                hint=f"{self.purpose} each kind of board on its own"
                + (", or pass --mixed-boards" if self.mixable else ""),
            )

    def open_one(self, name: str | None, threads: int | None) -> Device:
        return open_device(
            name,
            boards=self.boards_path,
            threads=threads,
            accept_new_host_key=self.accept_new_host_key,
            labgrid_wait_s=self.labgrid_wait_s,
        )

    @contextlib.contextmanager
    def open(
        self, runtime: str, threads: int | None, say: Say | None = None, files: Sequence[Path] = ()
    ) -> Iterator[list[Device]]:
        """Every device of the run, ready (see the module doc).  ``threads``: the thread
        option (None: each device's default, :meth:`threads_for`)."""
        self.check_same_profile()
        with contextlib.ExitStack() as stack:
            if self.is_local_calibration and runtime == "calibration":
                first = self.all_names[0]
                n = self.threads_for(runtime, first, threads)
                local: list[Device] = []
                stack.callback(close_all, local)
                for _ in range(local_workers(n, self.threads_label.format(n), say)):
                    local.append(self.open_one(first, n))
                yield list(local)
                return

            def one(name: str | None) -> Device:
                return self.open_one(name, self.threads_for(runtime, name, threads))

            with board_pool(len(self.all_names)) as pool:
                futures = [pool.submit(one, s) for s in self.all_names]
            devices: list[Device] = []
            failures: list[DeviceError] = []
            stack.callback(close_all, devices)
            for name, fut in zip(self.all_names, futures, strict=True):
                try:
                    devices.append(fut.result())
                except HostKeyError:
                    raise
                except DeviceError as e:
                    if len(self.all_names) == 1:
                        raise
                    failures.append(e)
                    if say is not None:
                        say(f"{name}: left out: {e.message}")
            if not devices:
                raise failures[0]
            devices = prepare_boards(devices, files, say)
            if self.golden:
                devices = golden_filter(devices, say)
            yield devices


def prepare_boards(devices: list[Device], files: Sequence[Path], say: Say | None) -> list[Device]:
    """Fan out over the boards (fabric ``ThreadingGroup``): free space in the work directory,
    then the model and the agent uploaded to all at once.  A board that fails either is left
    out; the others go on."""
    from edgecal.device.package import agent_zipapp_bytes, agent_zipapp_name
    from edgecal.device.ssh.device import SshDevice
    from edgecal.fleet.fanout import free_kib, push_all

    boards = [d for d in devices if isinstance(d, SshDevice)]
    if not boards:
        return devices
    with tempfile.TemporaryDirectory(prefix="edgecal-fanout-") as tmp:
        data = agent_zipapp_bytes(bytecode=False)
        agent = Path(tmp) / agent_zipapp_name(data)
        agent.write_bytes(data)
        uploads = [*files, agent]
        need_kib = sum(f.stat().st_size for f in uploads) // 1024 + 1024
        out: dict[str, DeviceError] = {}
        for name, o in free_kib(boards).items():
            if not o.ok and o.error is not None:
                out[name] = o.error
            elif o.value < need_kib:
                out[name] = BoardSetupError(
                    f"{name}: the board's disk is full: only {o.value} KiB free in its work "
                    f"directory, the run needs at least {need_kib} KiB",
                    hint=f"free disk space on the board (`edgecal board check {name}` shows "
                    "the free space) or set another workdir in the boards file",
                )
        ready = [d for d in boards if d.name not in out]
        for name, o in push_all(ready, uploads).items():
            if not o.ok and o.error is not None:
                out[name] = o.error
    keep = [d for d in devices if d.name not in out]
    if not keep:
        raise next(iter(out.values()))  # with its fix
    for e in out.values():
        if say is not None:
            say(f"left out: {e.headline}")
    return keep


def golden_filter(devices: list[Device], say: Say | None) -> list[Device]:
    """The devices whose golden check passes; the others are left out (all failing: error)."""
    from edgecal.boards.golden import golden_check

    def check(device: Device) -> Any:
        try:
            return golden_check(device)
        except DeviceError as e:
            return e

    with board_pool(len(devices)) as pool:
        results = list(pool.map(check, devices))
    keep = []
    for device, res in zip(devices, results, strict=True):
        if isinstance(res, DeviceError):
            why = f"{device.name}: the golden check did not run: {res.message}"
        elif not res.ok:
            why = res.message
        else:
            keep.append(device)
            continue
        if say is not None:
            say(f"left out: {why}")
    if not keep:
        raise CalibrationError(
            "no board passed the golden check",
            hint="run `edgecal board check --golden` on the boards",
        )
    return keep


def transfer_summary(devices: Sequence[Device]) -> dict[str, Any]:
    """Bytes moved to/from the devices and, for boards, the time spent connecting/moving."""
    out: dict[str, Any] = {
        "bytes_pushed": sum(d.bytes_pushed for d in devices),
        "bytes_fetched": sum(d.bytes_fetched for d in devices),
    }
    timings: dict[str, float] = {}
    for d in devices:
        for k, v in getattr(d, "timings_s", {}).items():
            timings[k] = timings.get(k, 0.0) + v
    if timings:
        out["transfer_timings_s"] = timings
    return out
