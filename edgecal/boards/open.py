"""``--device`` → a :class:`Device`: the local machine, a board over SSH, or a phone over adb."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecal.boards.config import Board, Profile, load_boards, resolve_board
from edgecal.device.adb.link import AdbTarget
from edgecal.device.base import Device
from edgecal.device.ssh.config import SshAddress
from edgecal.inputs.arguments import optional_path_arg

if TYPE_CHECKING:  # the transports are imported when a board is opened (paramiko takes ~90 ms)
    from edgecal.device.adb.device import AdbDevice
    from edgecal.device.ssh.device import SshDevice
    from edgecal.device.ssh.link import SshTarget

#: ``--device local:native``: this machine, with the native agent (the C++ runtime an app links)
#: instead of the Python one.
LOCAL_NATIVE = "local:native"


def boards_arg(boards: object, name: str = "boards") -> str | None:
    """The boards file ``boards`` (the argument ``name``; None: not given) as text, read at
    once: a file that is missing or is not a boards file is an error naming it, whether or not
    a board of it is used (the API's ``boards`` and the command line's ``--boards``)."""
    path = optional_path_arg(boards, name)
    if path:
        load_boards(Path(path))
    return path


def ssh_target(board: Board, *, accept_new_host_key: bool = False) -> SshTarget:
    """The board's address (what ``Board`` and ``SshTarget`` share) and the host-key policy."""
    from edgecal.device.ssh.link import SshTarget

    address = {f.name: getattr(board, f.name) for f in fields(SshAddress)}
    return SshTarget(**address, accept_new_host_key=accept_new_host_key)


def agent_setting(board: Board, profile: Profile | None) -> str:
    """The board's ``agent``, else its profile's, else ``auto``."""
    return board.agent or (profile.agent if profile is not None else "auto")


def adb_target(board: Board) -> AdbTarget:
    assert board.serial is not None
    host, _, port = (board.adb_server or "").rpartition(":")
    return AdbTarget(
        name=board.name,
        serial=board.serial,
        connect_timeout_s=board.connect_timeout_s,
        command_timeout_s=board.command_timeout_s,
        server_host=host or None,  # an IPv6 address stays in brackets: adb -H needs them
        server_port=int(port) if port else None,
    )


def phone_device_args(board: Board, threads: int | None) -> tuple[AdbTarget, dict[str, Any]]:
    """What :class:`AdbDevice` is given for the phone ``board``."""
    profile = board.load_profile()
    return adb_target(board), dict(
        workdir=board.workdir,
        workdir_root=board.workdir_root,
        threads=threads or (profile.threads if profile else None),
        affinity=profile.affinity if profile else "all",
    )


def open_phone(board: Board, *, threads: int | None = None) -> AdbDevice:
    """Connect to the phone ``board`` (``transport = "adb"``) and return its device."""
    from edgecal.device.adb.device import AdbDevice

    target, kwargs = phone_device_args(board, threads)
    return AdbDevice(target, **kwargs)


def open_board(
    board: Board, *, threads: int | None = None, accept_new_host_key: bool = False
) -> SshDevice | AdbDevice:
    """Connect to ``board`` (SSH: host key checked; adb: ``adb connect`` for host:port; a
    labgrid place's board: the place acquired until the device is closed) and return its
    device."""
    if board.transport == "adb":
        return open_phone(board, threads=threads)
    if board.place is not None:
        return open_place(
            f"labgrid:{board.place}",
            boards=board.source,
            threads=threads,
            accept_new_host_key=accept_new_host_key,
            name=board.name,
        )
    from edgecal.device.ssh.device import SshDevice

    target, kwargs = board_device_args(board, threads, accept_new_host_key)
    return SshDevice(target, **kwargs)


def open_place(
    spec: str,
    *,
    boards: Path | None = None,
    threads: int | None = None,
    accept_new_host_key: bool = False,
    labgrid_wait_s: float | None = None,
    name: str | None = None,
) -> SshDevice | AdbDevice:
    """Acquire the labgrid place ``labgrid:NAME`` and connect to its board (SSH) or phone
    (adb): the device gives the place back when closed (:mod:`edgecal.boards.labgrid`).
    ``name``: the device's name (default ``spec``; a boards-file board that is the place)."""
    from edgecal.boards.labgrid import acquire, farm_settings
    from edgecal.boards.placedevices import PlaceDevice, PlacePhone

    lease, board = acquire(spec, farm_settings(boards, labgrid_wait_s))
    if name is not None:
        board = replace(board, name=name)
    try:  # the device owns the lease once made (and gives it back if it cannot be made)
        make, (target, kwargs) = (
            (PlacePhone, phone_device_args(board, threads))
            if board.transport == "adb"
            else (PlaceDevice, board_device_args(board, threads, accept_new_host_key))
        )
    except BaseException:
        lease.release()
        raise
    return make(lease, target, **kwargs)


def board_device_args(
    board: Board, threads: int | None, accept_new_host_key: bool
) -> tuple[SshTarget, dict[str, Any]]:
    """What :class:`SshDevice` is given for ``board``."""
    profile = board.load_profile()
    return ssh_target(board, accept_new_host_key=accept_new_host_key), dict(
        workdir=board.workdir,
        python=board.python,
        workdir_root=board.workdir_root,
        threads=threads or (profile.threads if profile else None),
        agent=agent_setting(board, profile),
    )


def open_device(
    spec: str | None,
    *,
    boards: Path | None = None,
    threads: int | None = None,
    accept_new_host_key: bool = False,
    labgrid_wait_s: float | None = None,
) -> Device:
    """``local`` (default), a boards-file name, ``user@host[:port]`` or ``labgrid:PLACE``."""
    if spec is not None and spec.startswith("labgrid:"):
        return open_place(
            spec,
            boards=boards,
            threads=threads,
            accept_new_host_key=accept_new_host_key,
            labgrid_wait_s=labgrid_wait_s,
        )
    board = resolve_board(spec, boards)
    if board is None:
        from edgecal.device.local import LocalDevice

        if spec == LOCAL_NATIVE:
            return LocalDevice(
                threads=threads, agent="native", native_binary=host_native_agent(), name=spec
            )
        return LocalDevice(threads=threads)
    if board.place is not None:
        return open_place(
            f"labgrid:{board.place}",
            boards=boards,
            threads=threads,
            accept_new_host_key=accept_new_host_key,
            labgrid_wait_s=labgrid_wait_s,
            name=board.name,
        )
    return open_board(board, threads=threads, accept_new_host_key=accept_new_host_key)


def is_local(spec: str | None) -> bool:
    return spec in (None, "", "local", LOCAL_NATIVE)


def host_native_agent() -> Path:
    """The native agent for this machine (built into the cache on first use)."""
    import platform

    from edgecal.device.probe import native_target
    from edgecal.errors import UsageError
    from edgecal.native import build_agent

    target = native_target(platform.machine())
    if target is None:
        raise UsageError(
            f"--device {LOCAL_NATIVE}: no native agent for this machine ({platform.machine()})",
            hint="use --device local (the Python agent)",
        )
    return build_agent(target).path
