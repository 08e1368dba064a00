"""Boards from a labgrid farm: ``--device labgrid:PLACE`` (or ``labgrid:PATTERN`` for a fleet).

A labgrid coordinator holds the farm's inventory (places, each matching resources that exporters
publish) and its locks.  edgecal is one more labgrid client (the ``labgrid`` package, the
``edgecal[labgrid]`` extra): it acquires the place -- so no other pipeline uses the board while
edgecal does -- reads the place's board connection, opens the board as any board of a boards
file, and releases the place when the device is closed (also on errors and interrupts: the
device is a context manager).  A place has exactly one board connection (else a one-line error
naming the place, what it has and the fix):

* a ``NetworkService`` (address, username, port): a board over SSH (``PlaceDevice`` of
  :mod:`edgecal.boards.placedevices`);
* an ADB resource: a phone over adb (``PlacePhone``), by the names upstream labgrid used
  (labgrid 26.0.1 has no ADB classes: its exporter exports them as generic entries with their
  params, read here from the coordinator):

  - ``USBADBDevice`` / ``ADBDevice`` ``{serialno}``: on USB at this host's adb server
    (``adb -s SERIALNO``);
  - ``RemoteUSBADBDevice`` ``{host, port, serialno}`` (and the older ``NetworkADBDevice`` with
    a ``serialno``): on USB at the exporter host's adb server (``adb -H HOST -P PORT -s
    SERIALNO``; port 5037 by default);
  - ``NetworkADBDevice`` ``{host, port}`` without ``serialno`` (and the older
    ``RemoteADBDevice``): adb over TCP (serial ``host:port``, ``adb connect``-ed; port 5555 by
    default).

* ``labgrid:NAME`` is one place; ``labgrid:shelf-*`` (``*?[``: a glob over the place names) or
  ``labgrid:key=value,...`` (places whose tags have each pair) is every place that matches, one
  device each (a fleet; the scheduler shares the shards among them as among boards of a file).
* A place held by someone else is waited for up to ``wait_s`` seconds (``--labgrid-wait``, or
  the boards file's ``[labgrid] wait_s``; default 0), then refused with the holder's name.
* What the place does not say comes from the boards file's ``[labgrid]`` table (defaults for
  every place) and its ``[labgrid.places.NAME]`` tables (one place's), with the keys of a
  board (``identity_file``, ``known_hosts``, ``profile``, ``workdir``, ``python``, ``agent``,
  the timeouts) or of a phone (a phone place takes only ``profile`` and the timeouts of
  ``[labgrid]``: the rest there is a Linux board's); a place's tag ``edgecal_profile`` names
  its profile (over ``[labgrid]``'s default, under its ``[labgrid.places.NAME]`` table).  The
  coordinator: ``[labgrid] coordinator``, else ``$LG_COORDINATOR`` (as labgrid's own tools),
  else labgrid's default ``127.0.0.1:20408``::

      [labgrid]
      coordinator = "farm.example.com:20408"
      identity_file = "ssh/id_ed25519"
      known_hosts = "ssh/known_hosts"
      profile = "emulated-pi4"
      [labgrid.places.shelf-v7]
      profile = "emulated-armv7"

* The place's exporter going away (its resources vanish from the coordinator) or the place
  taken by another client takes the board away from this run: the device's next job fails as a
  lost link does, so the fleet scheduler gives the board up and its shards go to the others
  (``PlaceBound``, the same for a board and a phone).

The labgrid client runs on an asyncio loop of its own (one thread per coordinator, shared by
the places of a run and closed with the last of them); the calls here wait on it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from edgecal.boards.config import Board, board_from_table, load_labgrid_table
from edgecal.errors import ConfigError, DeviceError, TransportError, UsageError

log = logging.getLogger(__name__)

PREFIX = "labgrid:"
DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's own default
PROFILE_TAG = "edgecal_profile"
RPC_TIMEOUT_S = 30.0
POLL_S = 0.25
#: gRPC channel options: keepalive pings (a dead coordinator is noticed in ~20 s) and a
#: connection not shared with other channels of this process
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.http2.ping_timeout_ms", 10000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.use_local_subchannel_pool", 1),
]
_T = TypeVar("_T")


def is_place_spec(spec: str | None) -> TypeGuard[str]:
    return spec is not None and spec.startswith(PREFIX)


def is_pattern(what: str) -> bool:
    """A place pattern (several places), not one place's name."""
    return "=" in what or any(c in what for c in "*?[")


class PlaceBusyError(DeviceError):
    """The labgrid place is acquired by another client (past the wait)."""


@dataclass(frozen=True)
class FarmSettings:
    """The boards file's ``[labgrid]`` table (see the module doc)."""

    coordinator: str
    wait_s: float
    defaults: Mapping[str, Any]  # board keys for every place
    places: Mapping[str, Mapping[str, Any]]  # board keys for one place
    source: Path | None


def farm_settings(boards: Path | None, wait_s: float | None = None) -> FarmSettings:
    """The farm settings of the boards file ``boards`` (none: only the coordinator, from
    ``$LG_COORDINATOR``); ``wait_s``: ``--labgrid-wait``, over the file's ``wait_s``."""
    table: dict[str, Any] = {} if boards is None else load_labgrid_table(boards)
    where = f"{boards}: [labgrid]"
    coordinator = table.pop("coordinator", None)
    if coordinator is not None and not isinstance(coordinator, str):
        raise ConfigError(f"{where}: key 'coordinator' must be a str (HOST:PORT)")
    file_wait = table.pop("wait_s", 0)
    if isinstance(file_wait, bool) or not isinstance(file_wait, (int, float)) or file_wait < 0:
        raise ConfigError(f"{where}: key 'wait_s' must be a number >= 0, not {file_wait!r}")
    places = table.pop("places", {})
    if not isinstance(places, dict) or not all(isinstance(v, dict) for v in places.values()):
        raise ConfigError(f"{where}: key 'places' must be a table of [labgrid.places.NAME]")
    if wait_s is not None and not wait_s >= 0:
        raise UsageError(f"--labgrid-wait {wait_s}: must be >= 0")
    return FarmSettings(
        coordinator=coordinator or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR,
        wait_s=float(file_wait if wait_s is None else wait_s),
        defaults=table,
        places=places,
        source=boards,
    )


def _labgrid() -> Any:
    """labgrid's client module (the optional extra)."""
    try:
        from labgrid.remote import client
    except ImportError as e:
        raise UsageError(
            f"--device labgrid:...: labgrid is not installed ({e})",
            hint="pip install 'edgecal[labgrid]'",
        ) from None
    return client


# -- the labgrid client session ------------------------------------------------------------------


class FarmSession:
    """One labgrid ``ClientSession`` with the coordinator, on an asyncio loop in a thread of its
    own.  Shared (counted) by the places of a run: :func:`farm_session`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.users = 0
        client = _labgrid()
        import asyncio  # with labgrid: not for the fleet's set-up, which only looks places up

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"labgrid {address}", daemon=True
        )
        self._thread.start()

        async def start() -> Any:
            import grpc
            from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb2_grpc

            session = client.ClientSession(address, self._loop)
            # a connection of its own: grpc shares one among a process's channels to an address,
            # and the coordinator takes a connection for one client (labgrid's pytest plugin may
            # have its own session open in this process)
            await session.channel.close()
            session.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            session.stub = pb2_grpc.CoordinatorStub(session.channel)
            await session.start()
            return session

        try:
            self.session = self._call(start())
        except BaseException as e:
            self._stop_loop()
            if isinstance(e, DeviceError):
                raise
            raise TransportError(
                f"labgrid coordinator {address}: cannot connect ({e})",
                hint="start labgrid-coordinator there, or set [labgrid] coordinator in the "
                "boards file (or $LG_COORDINATOR)",
            ) from None

    @property
    def holder_name(self) -> str:
        """How the coordinator names this client (labgrid's ``host/user``)."""
        return f"{self.session.gethostname()}/{self.session.getuser()}"

    def _call(self, coro: Coroutine[Any, Any, _T], timeout_s: float = RPC_TIMEOUT_S) -> _T:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def in_loop(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` run on the session's loop (the session's dicts change only there)."""

        async def run() -> _T:
            return fn()

        return self._call(run())

    def alive(self) -> bool:
        return not self.in_loop(lambda: bool(self.session.stopping.is_set()))

    def places(self) -> dict[str, dict[str, Any]]:
        """Every place: name -> labgrid's ``Place.asdict()`` (tags, matches, acquired...)."""
        return self.in_loop(lambda: {n: p.asdict() for n, p in self.session.places.items()})

    def resources(self, name: str) -> dict[str, Any]:
        """The resources matching place ``name``: ``exporter/group/cls/name`` -> its data
        (``cls``, ``params``, ``acquired``...; empty: gone, its exporter left)."""

        def get() -> dict[str, Any]:
            place = self.session.places[name]
            out = {}
            paths = [tuple(p) for p in place.acquired_resources]
            if not place.acquired:  # what an acquire would get
                for exporter, groups in self.session.resources.items():
                    for group, resources in groups.items():
                        for rname, entry in resources.items():
                            path = (exporter, group, entry.data.get("cls", ""), rname)
                            if entry.data and place.hasmatch(path):
                                paths.append(path)
            for exporter, group, cls, rname in paths:
                entry = self.session.resources.get(exporter, {}).get(group, {}).get(rname)
                out[f"{exporter}/{group}/{cls}/{rname}"] = dict(entry.data) if entry else {}
            return out

        return self.in_loop(get)

    def rpc(self, method: str, **request: Any) -> None:
        """A coordinator call (``AcquirePlace``...), then a sync: the session's view has it."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        async def call() -> None:
            req = getattr(pb2, f"{method}Request")(**request)
            await getattr(self.session.stub, method)(req)
            await self.session.sync_with_coordinator()

        self._call(call())

    def close(self) -> None:
        async def stop() -> None:
            await self.session.stop()
            await self.session.close()

        with contextlib.suppress(Exception):
            self._call(stop(), timeout_s=10.0)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()


_SESSIONS: dict[str, FarmSession] = {}
_SESSIONS_LOCK = threading.Lock()


@contextlib.contextmanager
def farm_session(address: str) -> Any:
    """The shared session with the coordinator at ``address`` (opened on first use, closed when
    its last user is done)."""
    with _SESSIONS_LOCK:
        s = _SESSIONS.get(address)
        if s is None or not s.alive():
            s = _SESSIONS[address] = FarmSession(address)
        s.users += 1
    try:
        yield s
    finally:
        with _SESSIONS_LOCK:
            s.users -= 1
            if s.users == 0:
                _SESSIONS.pop(address, None)
                s.close()


def _grpc_details(e: BaseException) -> str:
    details = getattr(e, "details", None)
    return str(details() if callable(details) else e)


# -- places --------------------------------------------------------------------------------------


def match_places(places: Mapping[str, Mapping[str, Any]], pattern: str) -> list[str]:
    """The place names ``pattern`` means: ``key=value,...`` (tags), a glob, or one name."""
    if "=" in pattern:
        want = dict(kv.split("=", 1) for kv in pattern.split(",") if kv)
        return sorted(
            n for n, p in places.items() if all(p["tags"].get(k) == v for k, v in want.items())
        )
    return sorted(n for n in places if fnmatch.fnmatchcase(n, pattern))


def expand(spec: str, settings: FarmSettings) -> list[str]:
    """``labgrid:PATTERN`` -> ``labgrid:NAME`` for every matching place (sorted)."""
    pattern = spec[len(PREFIX) :]
    with farm_session(settings.coordinator) as s:
        places = s.places()
    names = match_places(places, pattern)
    if not names:
        raise UsageError(
            f"--device {spec}: no place of the labgrid coordinator {settings.coordinator} matches",
            hint=f"known places: {', '.join(sorted(places)) or 'none'} (labgrid-client places)",
        )
    return [PREFIX + n for n in names]


#: a place's board connection (the module doc): SSH, or a phone on USB at this host's adb
#: server, on USB at the exporter host's, or over TCP (``NetworkADBDevice`` with a ``serialno``:
#: the older name of a remote USB phone)
SSH_CLASSES = ("NetworkService",)
ADB_USB_CLASSES = ("USBADBDevice", "ADBDevice")
ADB_REMOTE_USB_CLASSES = ("RemoteUSBADBDevice",)
ADB_TCP_CLASSES = ("NetworkADBDevice", "RemoteADBDevice")
ADB_CLASSES = ADB_USB_CLASSES + ADB_REMOTE_USB_CLASSES + ADB_TCP_CLASSES
#: the keys of ``[labgrid]`` (every place's defaults) a phone place takes
PHONE_DEFAULT_KEYS = ("profile", "connect_timeout_s", "command_timeout_s")


@dataclass(frozen=True)
class Connection:
    """A place's board connection: its resource's path (``exporter/group/cls/name``), class
    and params."""

    path: str
    cls: str
    params: Mapping[str, Any]


def board_connection(
    spec: str, resources: Mapping[str, Mapping[str, Any]], coordinator: str
) -> Connection:
    """The one NetworkService or ADB resource of place ``spec`` (a DeviceError otherwise)."""
    found = sorted(
        (r["cls"], p, dict(r.get("params", {})))
        for p, r in resources.items()
        if r.get("cls") in SSH_CLASSES + ADB_CLASSES
    )
    if len(found) != 1:
        name = spec[len(PREFIX) :]
        what = f"{len(found)} board connections ({', '.join(c for c, _, _ in found)})"
        raise DeviceError(
            f"{spec}: the place has {what if found else 'no board connection'} at the labgrid "
            f"coordinator {coordinator}; edgecal needs exactly one: a NetworkService (a board "
            f"over SSH) or an ADB resource (a phone: {', '.join(ADB_CLASSES)})",
            hint=f"labgrid-client -p {name} delete-match the others (`show` lists them)"
            if found
            else f"labgrid-client -p {name} add-match EXPORTER/GROUP/NetworkService (or "
            "EXPORTER/GROUP/NetworkADBDevice...); is the place's exporter running?",
        )
    cls, path, params = found[0]
    return Connection(path, cls, params)


def _connection_keys(spec: str, conn: Connection) -> dict[str, Any]:
    """The board keys of a place's connection: address, user and port, or the phone's adb
    serial (and the adb server that has it)."""
    p = conn.params
    if conn.cls in SSH_CLASSES:
        return {"host": p.get("address"), "user": p.get("username"), "port": p.get("port", 22)}
    usb = conn.cls in ADB_USB_CLASSES
    remote = conn.cls in ADB_REMOTE_USB_CLASSES or (
        conn.cls == "NetworkADBDevice" and "serialno" in p
    )
    need = ["serialno"] if usb else ["host", "serialno"] if remote else ["host"]
    missing = [k for k in need if not p.get(k)]
    if missing:
        raise DeviceError(
            f"{spec}: the place's {conn.cls} ({conn.path}) has no {missing[0]!r}",
            hint="set it in the exporter's configuration of that resource",
        )
    if usb:  # at this host's adb server
        return {"transport": "adb", "serial": str(p["serialno"])}
    if remote:  # at the exporter host's adb server
        server = host_port(str(p["host"]), p.get("port") or 5037)
        return {"transport": "adb", "serial": str(p["serialno"]), "adb_server": server}
    return {"transport": "adb", "serial": host_port(str(p["host"]), p.get("port") or 5555)}


def host_port(host: str, port: object) -> str:
    """``HOST:PORT`` as adb reads it: an IPv6 address in brackets (``[fd00::7]:5555``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def place_board(
    spec: str, place: Mapping[str, Any], conn: Connection, settings: FarmSettings
) -> Board:
    """The board a place is: its connection's address, user and port, or its phone's adb
    serial (and server); the rest from the boards file's ``[labgrid]`` tables (a phone takes
    only :data:`PHONE_DEFAULT_KEYS` of ``[labgrid]``) and the place's ``edgecal_profile`` tag."""
    name = spec[len(PREFIX) :]
    keys = dict(settings.defaults)
    if conn.cls in ADB_CLASSES:
        keys = {k: v for k, v in keys.items() if k in PHONE_DEFAULT_KEYS}
    tag = place.get("tags", {}).get(PROFILE_TAG)
    if tag and "profile" not in settings.places.get(name, {}):
        keys["profile"] = tag
    keys.update(settings.places.get(name, {}))
    keys.update(_connection_keys(spec, conn))
    where = f"{settings.source or 'no boards file'}: [labgrid] for place {name}"
    return board_from_table(spec, keys, where, settings.source)


def describe_place(spec: str, settings: FarmSettings) -> Board:
    """The board ``labgrid:NAME`` is, read without acquiring the place."""
    name = spec[len(PREFIX) :]
    with farm_session(settings.coordinator) as s:
        places = s.places()
        if name not in places:
            raise _unknown_place(spec, settings, places)
        conn = board_connection(spec, s.resources(name), settings.coordinator)
    return place_board(spec, places[name], conn, settings)


def _unknown_place(spec: str, settings: FarmSettings, places: Mapping[str, Any]) -> UsageError:
    return UsageError(
        f"--device {spec}: the labgrid coordinator {settings.coordinator} has no place "
        f"{spec[len(PREFIX) :]!r}",
        hint=f"known places: {', '.join(sorted(places)) or 'none'} (labgrid-client places)",
    )


class PlaceLease:
    """An acquired place (:func:`acquire`), shared by the devices of this process that use it
    (a fixture's device and a validation's, say); the last :meth:`release` gives it back."""

    def __init__(self, spec: str, session: FarmSession, stack: contextlib.ExitStack) -> None:
        self.spec = spec
        self.name = spec[len(PREFIX) :]
        self.session = session
        self._stack = stack
        self._released = False
        self.refs = 1
        self.owned = True  # False: held by this user already (adopt()), never released here
        self.resource_paths: list[str] = []

    def gone(self) -> str | None:
        """Why the place's board is no longer ours (its exporter left, the place was taken or
        the coordinator is gone); None: still ours."""
        try:
            if not self.session.alive():
                return f"the labgrid coordinator {self.session.address} is gone"
            place = self.session.places().get(self.name)
            if place is None:
                return "the place was deleted"
            if place["acquired"] != self.session.holder_name:
                return f"the place was taken over by {place['acquired'] or 'nobody'}"
            resources = self.session.resources(self.name)
        except Exception as e:  # the session's loop is gone
            return f"the labgrid session failed ({e})"
        lost = [p for p in self.resource_paths if not resources.get(p)]
        if lost:
            exporter = lost[0].split("/", 1)[0]
            return f"its labgrid exporter {exporter} is gone"
        return None

    def release(self) -> None:
        with _LEASES_LOCK:
            self.refs -= 1
            if self.refs > 0 or self._released:
                return
            self._released = True
            _LEASES.pop((self.session.address, self.name), None)
        try:
            if self.owned and self.session.alive():
                self.session.rpc("ReleasePlace", placename=self.name)
        except Exception as e:
            log.warning("%s: releasing the labgrid place failed: %s", self.spec, e)
        finally:
            self._stack.close()


_LEASES: dict[tuple[str, str], PlaceLease] = {}
_LEASES_LOCK = threading.Lock()


def acquire(
    spec: str, settings: FarmSettings, *, sleep: Callable[[float], None] = time.sleep
) -> tuple[PlaceLease, Board]:
    """Acquire place ``labgrid:NAME`` (waiting up to ``settings.wait_s`` while another client
    holds it; shared when this process holds it already) and read its board.  Released on any
    failure here."""
    name = spec[len(PREFIX) :]
    with _LEASES_LOCK:
        held = _LEASES.get((settings.coordinator, name))
        if held is not None:
            held.refs += 1
    if held is not None:
        try:
            conn = board_connection(spec, held.session.resources(name), held.session.address)
            return held, place_board(spec, held.session.places()[name], conn, settings)
        except BaseException:
            held.release()
            raise
    stack = contextlib.ExitStack()
    try:
        s = stack.enter_context(farm_session(settings.coordinator))
        deadline = time.monotonic() + settings.wait_s
        while True:
            places = s.places()
            if name not in places:
                raise _unknown_place(spec, settings, places)
            holder = places[name]["acquired"]
            if not holder:
                try:
                    s.rpc("AcquirePlace", placename=name)
                    break
                except Exception as e:  # taken between the look and the call, or refused
                    text = _grpc_details(e)
                    if "already acquired" not in text:
                        raise DeviceError(
                            f"{spec}: the labgrid coordinator refused the place: {text}",
                            hint="labgrid-client -p PLACE show",
                        ) from None
                    holder = "another client"
            elif holder == s.holder_name:
                raise PlaceBusyError(
                    f"{spec}: the place is already acquired by this user on this host ({holder})",
                    hint=f"release it (labgrid-client -p {name} release) or wait for the "
                    "run holding it",
                )
            if time.monotonic() >= deadline:
                waited = f" after waiting {settings.wait_s:g} s" if settings.wait_s else ""
                raise PlaceBusyError(
                    f"{spec}: the place is held by {holder}{waited}",
                    hint="wait for them to release it, or pass --labgrid-wait SECONDS",
                )
            sleep(POLL_S)
        lease = PlaceLease(spec, s, stack)
        with _LEASES_LOCK:
            _LEASES[(settings.coordinator, name)] = lease
        try:
            resources = s.resources(name)
            conn = board_connection(spec, resources, settings.coordinator)
            lease.resource_paths = [conn.path]
            board = place_board(spec, s.places()[name], conn, settings)
        except BaseException:
            lease.release()
            raise
        return lease, board
    except BaseException:
        stack.close()
        raise


def adopt(spec: str, settings: FarmSettings) -> PlaceLease:
    """Use place ``labgrid:NAME`` that this user holds already (``labgrid-client acquire``
    before a test run with labgrid's pytest plugin): the devices of this process share it and
    it stays acquired when they are done.  Refused when nobody or someone else holds it."""
    name = spec[len(PREFIX) :]
    stack = contextlib.ExitStack()
    try:
        s = stack.enter_context(farm_session(settings.coordinator))
        places = s.places()
        if name not in places:
            raise _unknown_place(spec, settings, places)
        if places[name]["acquired"] != s.holder_name:
            raise PlaceBusyError(
                f"{spec}: the place is held by {places[name]['acquired'] or 'nobody'}, "
                f"not by this user ({s.holder_name})",
                hint=f"labgrid-client -p {name} acquire, before the tests",
            )
        conn = board_connection(spec, s.resources(name), settings.coordinator)
    except BaseException:
        stack.close()
        raise
    lease = PlaceLease(spec, s, stack)
    lease.owned = False
    lease.resource_paths = [conn.path]
    with _LEASES_LOCK:
        _LEASES[(settings.coordinator, name)] = lease
    return lease
