"""Build the agent zipapp ``edgecal-agent-<sha12>.pyz`` from the installed ``device_agent``.

The bytes are deterministic (sorted members, fixed timestamps and modes), and the name carries
the first 12 hex digits of their sha256, so a board keeps one file per agent version and an
upload is skipped when the name is already there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import zipfile
from pathlib import Path

from edgecal.atomicfile import write_bytes_atomic
from edgecal.errors import DeviceError

SHEBANG = b"#!/usr/bin/env python3\n"
_ROOT_MAIN = (
    "# edgecal device agent (zipapp entry point)\n"
    "import sys\n"
    "from device_agent.__main__ import main\n"
    "sys.exit(main())\n"
)
_EPOCH = (1980, 1, 1, 0, 0, 0)


def agent_source_dir() -> Path:
    spec = importlib.util.find_spec("device_agent")
    if spec is None or spec.origin is None:
        raise DeviceError("the device_agent package is not installed next to edgecal",
                          hint="reinstall edgecal (pip install edgecal)")
    return Path(spec.origin).parent


def agent_zipapp_bytes() -> bytes:
    """The zipapp's bytes: a shebang, then a zip of ``__main__.py`` + ``device_agent/*.py``."""
    src = agent_source_dir()
    members = [("__main__.py", _ROOT_MAIN.encode("utf-8"))]
    members += [(f"device_agent/{p.name}", p.read_bytes()) for p in sorted(src.glob("*.py"))]
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


def build_agent_zipapp(out_dir: Path) -> Path:
    """Write the zipapp into ``out_dir`` (unless an identical one is there); return its path."""
    data = agent_zipapp_bytes()
    path = Path(out_dir) / agent_zipapp_name(data)
    if path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    path.chmod(0o755)
    return path
