"""A run directory: what one ``validate``/``tune`` run measured, in versioned files.

``run.json`` (schema :data:`RUN_SCHEMA`) says what ran: the kind of run, the command lines, the
edgecal and agent-protocol versions, and the hashes of its inputs (provenance).  Beside it, each
result lives in its own file, written atomically, so a reader (``edgecal report``) sees a
finished file or none:

=====================  ==========================================================
``validation.json``    :data:`VALIDATION` -- per-board figures and cross-board check
``sensitivity.json``   :data:`SENSITIVITY` -- per-layer keep-fp32 / only-int8 effects
``thresholds.json``    :data:`THRESHOLDS` -- per layer abs-max and KL/ACIQ/EQ thresholds
``histograms.npz``     :data:`HISTOGRAMS` -- the merged histograms (``histfile`` schema)
``tune.json``          :data:`TUNE` -- tune's steps, the layers kept in fp32, their cost
``calibration.table``  :data:`TABLE` -- the final table (ncnn format)
``int8.param/.bin``    :data:`INT8_PARAM`, :data:`INT8_BIN` -- the final int8 model
``report.html``        :data:`REPORT` -- ``edgecal report``'s page
=====================  ==========================================================
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecal import __version__
from edgecal.errors import InputFileError
from edgecal.files.atomic import write_bytes_atomic
from edgecal.files.digests import file_sha256
from edgecal.quality.jsondoc import Malformed, Obj
from edgecal.quality.rundoc import RESULT_SCHEMA, dumps
from edgecal.runs.lock import folder_locked
from edgecal_agent import PROTOCOL_VERSION

RUN_SCHEMA = 1
RUN_JSON = "run.json"
VALIDATION = "validation.json"
SENSITIVITY = "sensitivity.json"
THRESHOLDS = "thresholds.json"
HISTOGRAMS = "histograms.npz"
TUNE = "tune.json"
TABLE = "calibration.table"
INT8_PARAM = "int8.param"
INT8_BIN = "int8.bin"
REPORT = "report.html"


@dataclass(frozen=True)
class Command:
    """One command line recorded in ``run.json``: its arguments, kind of run and UTC time."""

    argv: tuple[str, ...]
    kind: str
    at: str

    def to_dict(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "kind": self.kind, "at": self.at}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "") -> Command:
        """What :meth:`to_dict` wrote; :class:`Malformed` names the JSON path of a bad value."""
        o = Obj.of(doc, where)
        return cls(argv=o.texts("argv"), kind=o.text("kind"), at=o.text("at"))


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: what ran -- the kind of run, the edgecal and agent-protocol versions, the
    command lines (oldest first) and the inputs' paths and hashes (provenance)."""

    kind: str
    edgecal: str
    protocol: str | int
    commands: tuple[Command, ...]
    inputs: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RUN_SCHEMA,
            "kind": self.kind,
            "edgecal": self.edgecal,
            "protocol": self.protocol,
            "commands": [c.to_dict() for c in self.commands],
            "inputs": dict(self.inputs),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> RunInfo:
        """What :meth:`to_dict` wrote (the schema is :meth:`RunDir.open`'s to check);
        :class:`Malformed` names the JSON path of a bad value."""
        top = Obj.of(doc, "")
        inputs = top.opt_obj("inputs")
        protocol = top.raw("protocol")
        return cls(
            kind=top.text("kind"),
            edgecal=top.scalar("edgecal"),
            protocol=protocol
            if isinstance(protocol, (str, int)) and not isinstance(protocol, bool)
            else top.scalar("protocol"),
            commands=tuple(Command.from_dict(o.d, o.where) for o in top.objs("commands")),
            inputs={k: dict(inputs.obj(k).d) for k in inputs.d} if inputs else {},
        )


def images_digest(paths: Iterable[Path]) -> str:
    """One sha256 over the images' names and contents, in order: the image set's identity."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + bytes.fromhex(file_sha256(Path(p))))
    return h.hexdigest()


def recorded_inputs(path: Path) -> list[tuple[str, str]]:
    """The input files ``path``'s ``run.json`` records, as ``(key, path as given)`` (every
    ``path`` and ``paths`` of its ``inputs``: the models, table, labels, sample lists); a
    relative path is taken as relative to the current folder (the run's own is not recorded).
    Empty when ``run.json`` is missing or malformed: its reader says what is wrong."""
    try:
        doc = json.loads((path / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, dict):
        return []
    out: list[tuple[str, str]] = []
    for key, entry in inputs.items():
        if not isinstance(entry, dict):
            continue
        many = entry.get("paths")
        for p in [entry.get("path"), *(many if isinstance(many, list) else [])]:
            if isinstance(p, str) and p:
                out.append((str(key), p))
    return out


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(
        cls, path: Path, kind: str, argv: Sequence[str], inputs: dict[str, Any] | None = None
    ) -> RunDir:
        """Make (or reuse) ``path`` and record this run in its ``run.json``; the command line
        is appended to the ones already recorded there."""
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputFileError(
                f"{path}: cannot create the run directory ({exc.strerror})",
                hint="choose a writable --out-dir/--run-dir",
            ) from None
        with folder_locked(path):  # read, append, write: one run at a time
            return cls._record(path, kind, argv, inputs)

    @classmethod
    def _record(
        cls, path: Path, kind: str, argv: Sequence[str], inputs: dict[str, Any] | None
    ) -> RunDir:
        """Append this run to ``path``'s ``run.json`` (:meth:`create`, under its lock)."""
        run = cls(path)
        old = run.read_json(RUN_JSON) if (path / RUN_JSON).exists() else {}
        if not (
            isinstance(old, dict)
            and isinstance(old.get("commands", []), list)
            and isinstance(old.get("inputs", {}), dict)
        ):
            raise InputFileError(
                f"{path / RUN_JSON}: not an edgecal run record (its 'commands' "
                "and 'inputs' cannot be extended)",
                hint="choose another --out-dir/--run-dir, or remove the file",
            )
        try:
            before = [
                Command.from_dict(c, f"commands[{i}]")
                for i, c in enumerate(old.get("commands", []))
            ]
        except Malformed as exc:
            raise InputFileError(
                f"{path / RUN_JSON}: not an edgecal run record ({exc})",
                hint="choose another --out-dir/--run-dir, or remove the file",
            ) from None
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        info = RunInfo(
            kind=kind,
            edgecal=__version__,
            protocol=PROTOCOL_VERSION,
            commands=(*before, Command(tuple(argv), kind, now)),
            inputs={**old.get("inputs", {}), **(inputs or {})},
        )
        run.write_json(RUN_JSON, info.to_dict())
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        run = cls(path)
        if not (path / RUN_JSON).is_file():
            raise InputFileError(
                f"{path}: not an edgecal run directory (no {RUN_JSON})",
                hint="pass the --out-dir of `edgecal tune` or the --run-dir of `edgecal validate`",
            )
        doc = run.read_json(RUN_JSON)
        if not isinstance(doc, dict):
            raise InputFileError(
                f"{path / RUN_JSON}: not an edgecal run record",
                hint="pass a run directory written by edgecal",
            )
        if doc.get("schema") != RUN_SCHEMA:
            raise InputFileError(
                f"{path / RUN_JSON}: run schema {doc.get('schema')!r}, this "
                f"edgecal reads schema {RUN_SCHEMA}",
                hint="use the edgecal version that wrote the run",
            )
        return run

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.path / name
        write_bytes_atomic(target, data)
        return target

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_bytes(name, self._json_bytes(name, obj))

    def _json_bytes(self, name: str, obj: Any) -> bytes:
        if isinstance(obj, dict) and name != RUN_JSON:
            obj = {"schema": RESULT_SCHEMA, **obj}
        return dumps(obj)

    def write_all(self, files: Sequence[tuple[str, bytes | dict[str, Any]]]) -> None:
        """Several files at once, all or nothing (a dict is written as a JSON result)."""
        from edgecal.files.outputs import write_outputs

        write_outputs(
            [
                (
                    self.path / name,
                    data if isinstance(data, bytes) else self._json_bytes(name, data),
                )
                for name, data in files
            ]
        )

    def read_json(self, name: str) -> Any:
        target = self.path / name
        try:
            return json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputFileError(f"{target}: missing from the run directory") from None
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 or JSON
            raise InputFileError(
                f"{target}: not readable JSON ({exc})", hint="re-run the command that wrote it"
            ) from None

    def read_optional(self, name: str) -> Any | None:
        return self.read_json(name) if self.has(name) else None
