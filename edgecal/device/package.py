"""Build the agent zipapp ``edgecal-agent-<sha12>.pyz`` from the installed ``edgecal_agent``.

The bytes are deterministic (sorted members, fixed timestamps and modes), and the name carries
the first 12 hex digits of their sha256, so a board keeps one file per agent version and an
upload is skipped when the name is already there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
import threading
import zipfile
from pathlib import Path

from edgecal.errors import DeviceError
from edgecal.files.atomic import write_bytes_atomic

SHEBANG = b"#!/usr/bin/env python3\n"
_ROOT_MAIN = (
    "# edgecal device agent (zipapp entry point)\n"
    "import sys\n"
    "from edgecal_agent.__main__ import main\n"
    "sys.exit(main())\n"
)
_EPOCH = (1980, 1, 1, 0, 0, 0)


def agent_source_dir() -> Path:
    spec = importlib.util.find_spec("edgecal_agent")
    if spec is None or spec.origin is None:
        raise DeviceError(
            "the edgecal_agent package is not installed next to edgecal",
            hint="reinstall edgecal (pip install edgecal)",
        )
    return Path(spec.origin).parent


def _unchecked_pyc(name: str, source: bytes) -> bytes:
    """``source`` compiled by this interpreter as an unchecked-hash ``.pyc`` (PEP 552).

    zipimport prefers ``x.pyc`` beside ``x.py`` in the archive and never writes bytecode
    itself, so without it every agent start compiles the agent again (~70 ms).  Another
    Python rejects the magic number and zipimport falls back to the source.
    """
    code = compile(source, name, "exec", dont_inherit=True)
    flags = 0b01  # hash-based, not checked against the source
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


#: The zipapps built by this process, by ``(bytecode, the sources' names, sizes and mtimes)``:
#: the devices of a fleet (and every job's local agent) share one build instead of compiling
#: and compressing the agent once each (~60 ms with bytecode).
_BUILT: dict[tuple[bool, tuple[tuple[str, int, int], ...]], bytes] = {}
_BUILT_LOCK = threading.Lock()


def agent_zipapp_bytes(bytecode: bool = False) -> bytes:
    """The zipapp's bytes: a shebang, then a zip of ``__main__.py`` + ``edgecal_agent/*.py``.

    ``bytecode``: also ship ``edgecal_agent/*.pyc`` for the Python running this (LocalDevice
    starts the agent with it); other Pythons ignore them.  Built once per process while the
    sources stay the same.
    """
    sources = sorted(agent_source_dir().glob("*.py"))
    stats = tuple((p.name, st.st_size, st.st_mtime_ns) for p in sources for st in [p.stat()])
    key = (bytecode, stats)
    with _BUILT_LOCK:
        if key not in _BUILT:
            for old in [k for k in _BUILT if k[1] != stats]:  # the sources changed (an edit)
                del _BUILT[old]
            _BUILT[key] = _zipapp_bytes(sources, bytecode)
        return _BUILT[key]


def _zipapp_bytes(sources: list[Path], bytecode: bool) -> bytes:
    members = [("__main__.py", _ROOT_MAIN.encode("utf-8"))]
    for p in sources:
        data = p.read_bytes()
        members.append((f"edgecal_agent/{p.name}", data))
        if bytecode:
            members.append(
                (f"edgecal_agent/{p.stem}.pyc", _unchecked_pyc(f"edgecal_agent/{p.name}", data))
            )
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, data, compresslevel=9)
    return buf.getvalue()


def agent_zipapp_name(data: bytes) -> str:
    return f"edgecal-agent-{hashlib.sha256(data).hexdigest()[:12]}.pyz"


def build_agent_zipapp(out_dir: Path, bytecode: bool = False) -> Path:
    """Write the zipapp into ``out_dir`` (unless an identical one is there); return its path."""
    data = agent_zipapp_bytes(bytecode)
    path = Path(out_dir) / agent_zipapp_name(data)
    if path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    path.chmod(0o755)
    return path
