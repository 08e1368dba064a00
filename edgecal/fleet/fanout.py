"""SSH steps fanned out over a fleet with fabric's ``ThreadingGroup``: one command or one
upload to every board at once, a result per board, and the boards that succeeded kept when
others fail (fabric's ``GroupException`` carries both).

Boards are grouped by work directory (a group runs one command line / puts to one remote path);
uploads land in each board's staging path and are then moved in place per board, exactly as
:meth:`SshDevice.push` does for one board.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric import ThreadingGroup
from fabric.exceptions import GroupException

from edgecal.device.ssh.device import SshDevice
from edgecal.errors import DeviceError, TransportError
from edgecal.fleet.pool import board_pool


@dataclass(frozen=True)
class Outcome:
    """One board's result of a fanned-out step: ``value`` or ``error``."""

    board: str
    value: Any = None
    error: DeviceError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _by_workdir(devices: Sequence[SshDevice]) -> dict[str, list[SshDevice]]:
    out: dict[str, list[SshDevice]] = {}
    for d in devices:
        out.setdefault(str(d.workdir), []).append(d)
    return out


def _group_do(
    devices: Sequence[SshDevice], step: str, call: Callable[[ThreadingGroup], Any]
) -> dict[str, Outcome]:
    """``call(group)`` over the devices' connections; per board its result or its error."""
    for d in devices:
        d.link.connect()
    conns = [d.link.conn for d in devices]
    group = ThreadingGroup.from_connections(conns)
    try:
        results = call(group)
    except GroupException as e:
        results = e.result
    out: dict[str, Outcome] = {}
    for d, conn in zip(devices, conns, strict=True):
        res = results.get(conn)
        if isinstance(res, BaseException):
            out[d.name] = Outcome(
                d.name,
                error=TransportError(
                    f"{d.name}: {step} failed on {d.link.address}: {type(res).__name__}: {res}",
                    hint=f"run `edgecal board check {d.name}`",
                ),
            )
        else:
            out[d.name] = Outcome(d.name, value=res)
    return out


def run_all(
    devices: Sequence[SshDevice],
    argv_for: Callable[[str], Sequence[str]],
    what: str,
    timeout_s: float = 120.0,
) -> dict[str, Outcome]:
    """Run ``argv_for(workdir)`` on every board; a non-zero exit is that board's error."""
    out: dict[str, Outcome] = {}
    for workdir, devs in _by_workdir(devices).items():
        cmd = shlex.join(argv_for(workdir))

        def run(g: ThreadingGroup, cmd: str = cmd) -> Any:
            return g.run(cmd, hide=True, warn=True, in_stream=False, timeout=timeout_s)

        got = _group_do(devs, what, run)
        for name, o in got.items():
            if o.ok and getattr(o.value, "exited", 0) != 0:
                err = (o.value.stderr or o.value.stdout or "").strip().splitlines()
                o = Outcome(
                    name,
                    error=DeviceError(
                        f"{name}: {what} exited with status {o.value.exited}"
                        + (f": {err[-1]}" if err else "")
                    ),
                )
            out[name] = o
    return out


def free_kib(devices: Sequence[SshDevice]) -> dict[str, Outcome]:
    """Free space (KiB) in each board's work directory (``df -Pk``), fanned out."""
    got = run_all(devices, lambda w: ["df", "-Pk", w], "df on the work directory")
    out = {}
    for name, o in got.items():
        if o.ok:
            try:
                fields = o.value.stdout.strip().splitlines()[-1].split()
                o = Outcome(name, value=int(fields[3]))
            except (IndexError, ValueError):
                o = Outcome(
                    name, error=DeviceError(f"{name}: cannot read df's answer {o.value.stdout!r}")
                )
        out[name] = o
    return out


def _commit(d: SshDevice, local: Path, rel: str, digest: str) -> DeviceError | None:
    try:
        d.commit_upload(local, rel, digest)
    except DeviceError as e:
        return e
    return None


def _put_group(
    devs: Sequence[SshDevice],
    local: Path,
    workdir: str,
    plans: dict[str, tuple[str, str]],
    failed: dict[str, DeviceError],
) -> None:
    """One ``ThreadingGroup.put`` of ``local`` to the boards sharing ``workdir``, then the
    per-board move into place."""
    rel = plans[devs[0].name][0]
    remote = f"{workdir}/{SshDevice.staging_rel(rel)}"
    got = _group_do(devs, f"uploading {local.name}", lambda g: g.put(str(local), remote=remote))
    for name, o in got.items():
        if not o.ok and o.error is not None:
            failed[name] = o.error
    ok = [d for d in devs if d.name not in failed]
    with board_pool(len(ok)) as pool:
        errors = list(pool.map(lambda d: _commit(d, local, rel, plans[d.name][1]), ok))
    for d, e in zip(ok, errors, strict=True):
        if e is not None:
            failed[d.name] = e


def push_all(devices: Sequence[SshDevice], files: Sequence[Path]) -> dict[str, Outcome]:
    """Upload ``files`` to every board that lacks them (content-addressed, like ``push``):
    one ``ThreadingGroup.put`` per file and work directory, then a move into place on each
    board (the agent checks the content before it uses it).  A board that fails is reported,
    the others keep their uploads."""
    failed: dict[str, DeviceError] = {}
    for local in files:
        plans: dict[str, tuple[str, str]] = {}
        for d in devices:
            if d.name in failed:
                continue
            try:
                plan = d.upload_needed(local)
            except DeviceError as e:
                failed[d.name] = e
                continue
            if plan is not None:
                plans[d.name] = plan
        todo = [d for d in devices if d.name in plans and d.name not in failed]
        for workdir, devs in _by_workdir(todo).items():
            _put_group(devs, local, workdir, plans, failed)
    return {d.name: Outcome(d.name, error=failed.get(d.name)) for d in devices}
