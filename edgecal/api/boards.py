"""Boards: open a device by name (:func:`open_device`), check boards (:func:`check_boards`),
provision them (:func:`provision_boards`) and clean their work directories
(:func:`clean_boards`).

A board is a :class:`~edgecal.boards.config.Board` or what names one: a name of the boards file
(``boards``, default ``$EDGECAL_BOARDS``) or ``user@host[:port]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from edgecal.api.samples import PathArg
from edgecal.boards.check import CheckReport
from edgecal.boards.clean import CleanReport
from edgecal.boards.config import Board, boards_file, resolve_board
from edgecal.device.base import Device
from edgecal.errors import UsageError
from edgecal.inputs.arguments import device_arg, optional_number_arg, threads_arg


def open_device(
    name: str | None = None,
    *,
    boards: PathArg | None = None,
    threads: int | None = None,
    accept_new_host_key: bool = False,
    labgrid_wait: float | None = None,
) -> Device:
    """The device ``name`` names: ``local``/None (this machine), a board of the boards file,
    ``user@host[:port]`` or ``labgrid:PLACE`` (acquired until the device is closed); use it as
    a context manager (``with open_device("pi4") as d:``).
    ``threads``: ncnn threads (default: the board profile's); ``accept_new_host_key``: accept
    and record a board's unknown SSH host key (never a changed one); ``labgrid_wait``: seconds
    to wait for a place another client holds."""
    from edgecal.boards.open import boards_arg
    from edgecal.boards.open import open_device as open_named

    name, boards, threads = device_arg(name), boards_arg(boards), threads_arg(threads)
    labgrid_wait = optional_number_arg(labgrid_wait, "labgrid_wait", 0)
    return open_named(
        name,
        boards=boards_file(boards),
        threads=threads,
        accept_new_host_key=accept_new_host_key,
        labgrid_wait_s=labgrid_wait,
    )


def resolve_boards(
    boards: Sequence[Board | str], boards_path: PathArg | None = None
) -> list[Board]:
    """Every board of ``boards`` (names resolved in the boards file ``boards_path``); this
    machine is not a board."""
    path = boards_file(None if boards_path is None else os.fspath(boards_path))
    out = []
    for spec in boards:
        board = spec if isinstance(spec, Board) else resolve_board(spec, path)
        if board is None:
            raise UsageError(
                "`board check/provision/clean` is for boards, not the local machine",
                hint="name a board of the boards file or give user@host[:port]",
            )
        out.append(board)
    return out


def check_boards(
    boards: Sequence[Board | str],
    *,
    boards_path: PathArg | None = None,
    golden: bool = False,
    accept_new_host_key: bool = False,
) -> Iterator[CheckReport]:
    """Every board checked (Python, numpy, ncnn, CPU, memory, disk, agent; with ``golden`` a
    reference model's outputs too), all at once; the reports in the order given, each as soon
    as it and those before it are done.  The boards are resolved before any check."""
    from edgecal.fleet.health import iter_check_boards

    return iter_check_boards(
        resolve_boards(boards, boards_path), golden=golden, accept_new_host_key=accept_new_host_key
    )


def provision_boards(
    boards: Sequence[Board | str],
    *,
    boards_path: PathArg | None = None,
    wheels: PathArg | None = None,
    force: bool = False,
    accept_new_host_key: bool = False,
    say: Callable[[str], None] | None = None,
) -> Iterator[CheckReport]:
    """Install numpy and ncnn on every board, one after the other, without internet on the
    board (``wheels``: the folder of wheels to use and fill; ``force``: reinstall even if they
    import); after each, the board's check report.  The boards are resolved before any
    work."""
    resolved = resolve_boards(boards, boards_path)
    return _provision(
        resolved, Path(os.fspath(wheels)) if wheels else None, force, accept_new_host_key, say
    )


def _provision(
    boards: list[Board],
    wheels: Path | None,
    force: bool,
    accept_new_host_key: bool,
    say: Callable[[str], None] | None,
) -> Iterator[CheckReport]:
    from edgecal.boards.check import check_board
    from edgecal.boards.provision import provision_board

    for board in boards:
        if say is None:
            provision_board(
                board, wheel_dir=wheels, force=force, accept_new_host_key=accept_new_host_key
            )
        else:
            provision_board(
                board,
                wheel_dir=wheels,
                force=force,
                accept_new_host_key=accept_new_host_key,
                say=say,
            )
        yield check_board(board)


def clean_boards(
    boards: Sequence[Board | str],
    *,
    boards_path: PathArg | None = None,
    keep_mb: float = 0.0,
    accept_new_host_key: bool = False,
) -> Iterator[CleanReport]:
    """Remove the pushed models and shards (``files/``) from every board's work directory, one
    board after the other, keeping the most recently stored within ``keep_mb`` MiB; the next
    run pushes what it needs again.  The boards are resolved before any work."""
    from edgecal.boards.clean import clean_board

    if not (keep_mb >= 0 and math.isfinite(keep_mb)):
        raise UsageError(
            f"--keep-mb {keep_mb}: must be a number of MiB >= 0", hint="e.g. --keep-mb 500"
        )
    resolved = resolve_boards(boards, boards_path)
    return (clean_board(b, int(keep_mb * (1 << 20)), accept_new_host_key) for b in resolved)
