"""Boards files and board profiles (TOML, ``schema = 1``): which board ``--device`` means.

Boards file (``--boards FILE`` or ``EDGECAL_BOARDS``)::

    schema = 1
    [boards.emu1]
    host = "127.0.0.1"            # or an ~/.ssh/config alias
    port = 2222                   # optional (ssh_config / 22)
    user = "pi"                   # optional (ssh_config / you)
    identity_file = "ssh/id_ed25519"     # optional; relative paths: to this file's folder
    known_hosts = "ssh/known_hosts"      # optional; loaded besides the system/user ones
    profile = "emulated-pi4"      # edgecal/boards/profiles/<profile>.toml (or $EDGECAL_PROFILES)
    workdir = ".cache/edgecal"    # relative to the SFTP home
    python = "python3"            # optional
    agent = "auto"                # optional: python | native | auto (default: the profile's)
    connect_timeout_s = 10        # optional
    command_timeout_s = 3600      # optional

    [boards.shelf-a]
    place = "shelf-a-1"           # a labgrid place (alone: the place gives the address, the
                                  # [labgrid] table the rest; see edgecal/boards/labgrid.py)
    [boards.phone1]               # an Android phone over adb (the native agent; no Python)
    transport = "adb"
    serial = "127.0.0.1:5555"     # `adb devices`' serial (USB), or host:port (`adb connect`)
    adb_server = "lab7:5037"      # optional: the adb server that has the phone (`adb -H -P`)
    profile = "phone-a76"         # optional
    workdir = "/data/local/tmp/edgecal"  # optional (the default); relative: to /data/local/tmp

    [groups]
    fleet = ["emu1", "emu2"]      # optional: named sets of boards (`--group fleet`)

``--device NAME`` picks a board of that file, else a ``Host NAME`` of ``~/.ssh/config``;
``--device user@host[:port]`` and ``--device adb:SERIAL`` need no file;
``--device local`` (the default) is this machine.  Errors name the file and the key.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal.boards.workdir import check_workdir_setting
from edgecal.device.probe import AGENT_SETTINGS
from edgecal.device.ssh.config import SshAddress
from edgecal.errors import ConfigError, UsageError
from edgecal_agent.workdir import DEFAULT_WORKDIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # python 3.10: the tomli backport, a dependency there
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        # a module where tomli is installed (typed), Any where it is not (then unused)
        tomllib = None  # type: ignore[assignment, unused-ignore]

SCHEMA = 1
ADB_PREFIX = "adb:"  # --device adb:SERIAL: a phone by its adb serial
BOARDS_ENV = "EDGECAL_BOARDS"
PROFILES_ENV = "EDGECAL_PROFILES"
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"  # package data
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NO_PYTHON = "none"  # a profile's `python = "none"`: the board type ships no python3
_ADDR_RE = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s\[\]]+)"
    r"(?::(?P<port>\d{1,5}))?$"
)


@dataclass(frozen=True)
class RuntimeOptions:
    """ncnn Option values a deployed app has on the board's CPU."""

    fp16_storage: bool = False
    fp16_arithmetic: bool = False
    fp16_packed: bool = False
    bf16_storage: bool = False


@dataclass(frozen=True)
class Profile:
    """A board profile (``boards/profiles/NAME.toml``): the board's CPU, and the threads and
    ncnn options an app deployed on it uses."""

    name: str
    description: str
    arch: str
    cpu: str
    cores: int
    cpu_features: tuple[str, ...]
    cpu_features_absent: tuple[str, ...]
    threads: int
    python: str | None  # the stock python3 version; None: the board type has none
    runtime: RuntimeOptions
    source: Path
    agent: str = "auto"  # one of AGENT_SETTINGS
    #: the cores a deployed app's ncnn threads run on: all, big (the fastest cluster, as
    #: ncnn's ``set_cpu_powersave(2)``) or little (``set_cpu_powersave(1)``); phones only
    affinity: str = "all"


@dataclass(frozen=True)
class Board(SshAddress):
    """A board of a boards file (``source``), or one named by ``--device`` alone."""

    profile: str | None = None
    workdir: str = DEFAULT_WORKDIR
    workdir_root: str | None = None
    python: str = "python3"
    source: Path | None = None
    agent: str | None = None  # one of AGENT_SETTINGS; None: the profile's (else "auto")
    #: a labgrid place this board is (``place = "NAME"``): its address comes from the place
    #: when it is acquired, its other keys from the ``[labgrid]`` table (boards/labgrid.py)
    place: str | None = None
    transport: str = "ssh"  # one of TRANSPORTS
    serial: str | None = None  # adb: the phone's serial (USB) or host:port
    adb_server: str | None = None  # adb: HOST:PORT of the adb server that has it (None: ours)

    def load_profile(self) -> Profile | None:
        return None if self.profile is None else load_profile(self.profile)


def _load_toml(path: Path, what: str) -> dict[str, Any]:
    if tomllib is None:
        raise ConfigError(
            f"{path}: reading {what} needs Python >= 3.11 or tomli", hint="pip install tomli"
        )
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # an int of > 4300 digits, nesting too deep
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    schema = data.get("schema")
    if schema != SCHEMA:
        raise ConfigError(
            f"{path}: key 'schema' is {schema!r}; this edgecal reads schema {SCHEMA}",
            hint=f"add `schema = {SCHEMA}` at the top",
        )
    return data


def _get(
    d: Mapping[str, Any],
    key: str,
    types: type | tuple[type, ...],
    where: str,
    default: Any = None,
    required: bool = False,
) -> Any:
    if key not in d:
        if required:
            raise ConfigError(f"{where}: key '{key}' is missing")
        return default
    v = d[key]
    tt = types if isinstance(types, tuple) else (types,)
    if (isinstance(v, bool) and bool not in tt) or not isinstance(v, tt):
        names = " or ".join(t.__name__ for t in tt)
        raise ConfigError(f"{where}: key '{key}' must be a {names}, not {v!r}")
    return v


def _as_float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # an int beyond the float range
        return math.inf if v > 0 else -math.inf


def _path(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else base / p)


TRANSPORTS = ("ssh", "adb")
AFFINITIES = ("all", "big", "little")
#: the keys of an adb phone's table (the SSH-only ones are refused there)
_ADB_KEYS = {
    "transport",
    "serial",
    "adb_server",
    "profile",
    "workdir",
    "workdir_root",
    "connect_timeout_s",
    "command_timeout_s",
    "agent",
}
_SERIAL_RE = re.compile(r"^[A-Za-z0-9._:\[\]-]{1,128}$")
_SERVER_RE = re.compile(r"^(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):(\d{1,5})$")

_BOARD_KEYS = {
    "transport",
    "host",
    "port",
    "user",
    "identity_file",
    "known_hosts",
    "profile",
    "workdir",
    "workdir_root",
    "python",
    "connect_timeout_s",
    "command_timeout_s",
    "agent",
}


def _agent(d: Mapping[str, Any], where: str) -> str | None:
    agent = _get(d, "agent", str, where)
    if agent is not None and agent not in AGENT_SETTINGS:
        raise ConfigError(
            f"{where}: key 'agent' must be one of {', '.join(AGENT_SETTINGS)}, not {agent!r}",
            hint="auto picks the native agent when the board lacks python3/numpy/ncnn",
        )
    return agent


def _adb_board(name: str, d: dict[str, Any], path: Path | None, where: str) -> Board:
    """A ``transport = "adb"`` table: a phone by its serial."""
    unknown = sorted(set(d) - _ADB_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: key '{unknown[0]}' is not used by transport \"adb\"",
            hint=f"an adb phone's keys: {', '.join(sorted(_ADB_KEYS))}",
        )
    serial = _get(d, "serial", str, where, required=True)
    if not _SERIAL_RE.match(serial):
        raise ConfigError(
            f"{where}: key 'serial' {serial!r} is not an adb serial",
            hint="the serial `adb devices` lists, or host:port of a phone on the network",
        )
    server = _get(d, "adb_server", str, where)
    m = _SERVER_RE.match(server or "")
    if server is not None and not (m and 0 < int(m.group(1)) < 65536):
        raise ConfigError(
            f"{where}: key 'adb_server' {server!r} is not HOST:PORT",
            hint="the host and port of the adb server that has the phone, e.g. lab7:5037 "
            "(an IPv6 address in brackets: [fd00::7]:5037)",
        )
    for key in ("connect_timeout_s", "command_timeout_s"):
        v = _get(d, key, (int, float), where)
        if v is not None and not _as_float(v) > 0:  # NaN too
            raise ConfigError(f"{where}: key '{key}' must be > 0, not {v}")
    workdir = _get(d, "workdir", str, where, "/data/local/tmp/edgecal")
    workdir_root = _get(d, "workdir_root", str, where)
    check_workdir_setting(workdir, workdir_root, where)
    agent = _agent(d, where)
    if agent == "python":
        raise ConfigError(
            f"{where}: key 'agent' is \"python\", but a phone has no Python",
            hint='remove it (phones run the native agent) or set agent = "native"',
        )
    profile = _get(d, "profile", str, where)
    if profile is not None and not _NAME_RE.match(profile):
        raise ConfigError(f"{where}: key 'profile' {profile!r} is not a profile name")
    return Board(
        name=name,
        host="",
        profile=profile,
        workdir=workdir,
        workdir_root=workdir_root,
        connect_timeout_s=_as_float(_get(d, "connect_timeout_s", (int, float), where, 10.0)),
        command_timeout_s=_as_float(_get(d, "command_timeout_s", (int, float), where, 3600.0)),
        source=path,
        agent=agent or "native",
        transport="adb",
        serial=serial,
        adb_server=server,
    )


def _board(name: str, d: Any, path: Path) -> Board:
    where = f"{path}: [boards.{name}]"
    if isinstance(d, dict) and "place" in d:
        place = _get(d, "place", str, where)
        others = sorted(set(d) - {"place"})
        if others:
            raise ConfigError(
                f"{where}: key '{others[0]}' beside 'place': a board that is a labgrid place "
                "takes its address from the place and its other keys from [labgrid]",
                hint=f"move it to [labgrid.places.{place}] (or [labgrid] for every place)",
            )
        if not _NAME_RE.match(place):
            raise ConfigError(f"{where}: key 'place' {place!r} is not a place name")
        return Board(name=name, host="", place=place, source=path)
    return board_from_table(name, d, where, path)


def board_from_table(name: str, d: Any, where: str, path: Path | None) -> Board:
    """A board from its keys (a ``[boards.NAME]`` table; ``where`` names it in errors);
    relative paths are to ``path``'s folder (none: the current directory)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a table")
    transport = _get(d, "transport", str, where, "ssh")
    if transport not in TRANSPORTS:
        raise ConfigError(
            f"{where}: key 'transport' must be one of {', '.join(TRANSPORTS)}, not {transport!r}",
            hint='ssh (the default) for boards, adb for Android phones (with serial = "...")',
        )
    if transport == "adb":
        return _adb_board(name, d, path, where)
    unknown = sorted(set(d) - _BOARD_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{unknown[0]}'",
            hint=f"known keys: {', '.join(sorted(_BOARD_KEYS))}",
        )
    port = _get(d, "port", int, where)
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{where}: key 'port' must be 1..65535, not {port}")
    for key in ("connect_timeout_s", "command_timeout_s"):
        v = _get(d, key, (int, float), where)
        if v is not None and not _as_float(v) > 0:  # NaN too
            raise ConfigError(f"{where}: key '{key}' must be > 0, not {v}")
    workdir = _get(d, "workdir", str, where, DEFAULT_WORKDIR)
    workdir_root = _get(d, "workdir_root", str, where)
    check_workdir_setting(workdir, workdir_root, where)
    profile = _get(d, "profile", str, where)
    if profile is not None and not _NAME_RE.match(profile):
        raise ConfigError(f"{where}: key 'profile' {profile!r} is not a profile name")
    base = path.parent if path is not None else Path.cwd()
    return Board(
        name=name,
        host=_get(d, "host", str, where, required=True),
        port=port,
        user=_get(d, "user", str, where),
        identity_file=_path(_get(d, "identity_file", str, where), base),
        known_hosts=_path(_get(d, "known_hosts", str, where), base),
        profile=profile,
        workdir=workdir,
        workdir_root=workdir_root,
        python=_get(d, "python", str, where, "python3"),
        connect_timeout_s=_as_float(_get(d, "connect_timeout_s", (int, float), where, 10.0)),
        command_timeout_s=_as_float(_get(d, "command_timeout_s", (int, float), where, 3600.0)),
        source=path,
        agent=_agent(d, where),
    )


def load_boards(path: Path) -> dict[str, Board]:
    """The boards of a boards file, by name."""
    path = Path(path)
    data = _load_toml(path, "boards file")
    unknown = sorted(set(data) - {"schema", "boards", "groups", "labgrid"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key '{unknown[0]}'",
            hint="boards go in [boards.NAME] tables",
        )
    boards = data.get("boards", {})
    if not isinstance(boards, dict):
        raise ConfigError(f"{path}: key 'boards' must be a table of [boards.NAME] tables")
    out = {}
    for name, d in boards.items():
        if not _NAME_RE.match(name) or name == "local":
            raise ConfigError(
                f"{path}: board name {name!r} is not allowed",
                hint="letters, digits, '.', '_', '-'; not 'local'",
            )
        out[name] = _board(name, d, path)
    return out


def load_labgrid_table(path: Path) -> dict[str, Any]:
    """The boards file's ``[labgrid]`` table (:mod:`edgecal.boards.labgrid`; empty: none)."""
    table = _load_toml(Path(path), "boards file").get("labgrid", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: key 'labgrid' must be a table ([labgrid])")
    return dict(table)


def load_group(path: Path | None, group: str) -> list[str]:
    """The board names of ``[groups] NAME = [...]`` in the boards file."""
    if path is None:
        raise UsageError(
            f"--group {group}: no boards file", hint=f"pass --boards FILE or set {BOARDS_ENV}"
        )
    data = _load_toml(Path(path), "boards file")
    groups = data.get("groups", {})
    if not isinstance(groups, dict) or group not in groups:
        known = ", ".join(sorted(groups)) if isinstance(groups, dict) else ""
        raise ConfigError(
            f"{path}: no group {group!r}",
            hint=f"known groups: {known or 'none'}; add `{group} = [...]` under [groups]",
        )
    names = groups[group]
    boards = load_boards(Path(path))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: group {group!r} must be a non-empty list of board names")
    unknown = [n for n in names if n not in boards]
    if unknown:
        raise ConfigError(f"{path}: group {group!r} names unknown board(s) {', '.join(unknown)}")
    return list(names)


def profiles_dir() -> Path:
    return Path(os.environ.get(PROFILES_ENV) or PROFILES_DIR)


def load_profile(name: str, folder: Path | None = None) -> Profile:
    folder = folder or profiles_dir()
    if not _NAME_RE.match(name):
        raise ConfigError(f"profile name {name!r} is not allowed")
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.toml"))
        raise ConfigError(
            f"board profile {name!r} not found in {folder}",
            hint=f"known profiles: {', '.join(known) or 'none'}",
        )
    d = _load_toml(path, "board profile")
    where = str(path)
    if _get(d, "name", str, where, required=True) != name:
        raise ConfigError(f"{where}: key 'name' must be {name!r} (the file's name)")
    rt = _get(d, "runtime", dict, where, {})
    rt_where = f"{where}: [runtime]"
    unknown = sorted(set(rt) - set(RuntimeOptions.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"{rt_where}: unknown key '{unknown[0]}'")
    features = _get(d, "cpu_features", list, where, [])
    absent = _get(d, "cpu_features_absent", list, where, [])
    for key, values in (("cpu_features", features), ("cpu_features_absent", absent)):
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}: key '{key}' must be a list of strings")
    threads = _get(d, "threads", int, where, required=True)
    if threads < 1:
        raise ConfigError(f"{where}: key 'threads' must be >= 1, not {threads}")
    python = _get(d, "python", str, where, required=True)
    affinity = _get(d, "affinity", str, where, "all")
    if affinity not in AFFINITIES:
        raise ConfigError(
            f"{where}: key 'affinity' must be one of {', '.join(AFFINITIES)}, not {affinity!r}"
        )
    return Profile(
        name=name,
        description=_get(d, "description", str, where, ""),
        arch=_get(d, "arch", str, where, required=True),
        cpu=_get(d, "cpu", str, where, ""),
        cores=_get(d, "cores", int, where, 1),
        cpu_features=tuple(features),
        cpu_features_absent=tuple(absent),
        threads=threads,
        python=None if python == NO_PYTHON else python,
        runtime=RuntimeOptions(**{k: _get(rt, k, bool, rt_where, False) for k in rt}),
        source=path,
        agent=_agent(d, where) or "auto",
        affinity=affinity,
    )


def boards_file(option: str | None) -> Path | None:
    """``--boards FILE``, else ``$EDGECAL_BOARDS``, else none."""
    value = option or os.environ.get(BOARDS_ENV)
    return Path(value) if value else None


def resolve_board(spec: str | None, boards: Path | None) -> Board | None:
    """What ``--device SPEC`` names: None for the local machine, else a board."""
    if spec in (None, "", "local", "local:native"):
        return None
    assert spec is not None
    if spec.startswith(ADB_PREFIX):
        serial = spec[len(ADB_PREFIX) :]
        if not _SERIAL_RE.match(serial):
            raise UsageError(
                f"--device {spec!r}: expected adb:SERIAL (a serial of `adb devices`, or host:port)"
            )
        return Board(
            name=spec,
            host="",
            transport="adb",
            serial=serial,
            agent="native",
            workdir="/data/local/tmp/edgecal",
        )
    if boards is not None and "@" not in spec:
        known = load_boards(boards)
        if spec in known:
            return known[spec]
    if "@" in spec:
        m = _ADDR_RE.match(spec)
        if m is None:
            raise UsageError(f"--device {spec!r}: expected user@host[:port]")
        host = m["host"].strip("[]")
        return Board(
            name=spec, host=host, user=m["user"], port=int(m["port"]) if m["port"] else None
        )
    from edgecal.device.ssh.config import USER_SSH_CONFIG, is_ssh_alias

    if is_ssh_alias(spec):  # a Host of ~/.ssh/config: fabric reads its HostName, User, ...
        return Board(name=spec, host=spec)
    where = f"not a board of {boards}" if boards is not None else "no boards file"
    raise UsageError(
        f"unknown device {spec!r} ({where}, and no `Host {spec}` in {USER_SSH_CONFIG})",
        hint=f"name a board of the boards file (--boards FILE or {BOARDS_ENV}), a Host of "
        f"{USER_SSH_CONFIG}, give user@host[:port], or use --device local",
    )
