"""``edgecal board provision``: numpy + ncnn onto a board that has no internet.

The host learns the board's architecture, Python and glibc (the probe), downloads the matching
wheels from PyPI (``pip download --only-binary=:all: --platform ... --no-deps``, pinned to the
host's numpy and ncnn), pushes them (content-addressed) and installs them into
``<workdir>/site``: with the board's pip when it has one (``--no-index --target``), else by
unpacking the wheels with Python's ``zipfile`` (Debian's python3 has no pip).  The agent and
the probe run with ``PYTHONPATH=<workdir>/site``.  Then the board is checked again.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from edgecal.boards.config import Board
from edgecal.device.probe import MIN_PYTHON, BoardFacts
from edgecal.device.ssh.device import SITE_DIR, SshDevice
from edgecal.errors import BoardSetupError

log = logging.getLogger(__name__)

PACKAGES = ("numpy", "ncnn")
DEFAULT_WHEEL_CACHE = Path("~/.cache/edgecal/wheels")

# argv: SITE WHEEL...  -> unpack each wheel into SITE.new, then swap SITE.new into SITE.
_UNPACK = r"""
import os, shutil, sys, zipfile
site, wheels = sys.argv[1], sys.argv[2:]
new = site + ".new"
shutil.rmtree(new, ignore_errors=True)
os.makedirs(new)
for w in wheels:
    with zipfile.ZipFile(w) as z:
        for name in z.namelist():
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or "\\" in name:
                raise SystemExit("refusing wheel member %r of %s" % (name, w))
        z.extractall(new)
old = site + ".old"
shutil.rmtree(old, ignore_errors=True)
if os.path.isdir(site):
    os.rename(site, old)
os.rename(new, site)
shutil.rmtree(old, ignore_errors=True)
sys.stdout.write("unpacked %d wheels\n" % len(wheels))
"""


def host_pins() -> dict[str, str]:
    """The host's numpy and ncnn versions: the board gets the same."""
    pins = {}
    for pkg in PACKAGES:
        try:
            pins[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            raise BoardSetupError(
                f"{pkg} is not installed on this host, so there is no version to pin",
                hint=f"pip install {pkg}",
            ) from None
    return pins


def wheel_platforms(machine: str, libc: list[str]) -> list[str]:
    """``manylinux_2_17`` .. ``manylinux_2_<board glibc>`` tags for the board's arch."""
    if not libc or libc[0] != "glibc":
        raise BoardSetupError(
            f"the board's C library is {libc or 'unknown'}, not glibc: "
            "there are no manylinux wheels for it",
            hint="install numpy and ncnn on the board by hand",
        )
    try:
        minor = int(libc[1].split(".")[1])
    except (IndexError, ValueError):
        minor = 17
    arch = {"arm64": "aarch64"}.get(machine, machine)
    tags = [f"manylinux_2_{m}_{arch}" for m in range(min(minor, 40), 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def pip_download_argv(facts: BoardFacts, pins: dict[str, str], dest: Path) -> list[str]:
    major, minor = facts.python_version[:2]
    pyv = f"{major}{minor}"
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
    ]
    for plat in wheel_platforms(str(facts.get("machine")), list(facts.get("libc") or [])):
        argv += ["--platform", plat]
    argv += ["--python-version", pyv, "--implementation", "cp", "--abi", f"cp{pyv}"]
    return argv + [f"{pkg}=={ver}" for pkg, ver in pins.items()]


def find_wheels(folder: Path, facts: BoardFacts, pins: dict[str, str]) -> list[Path]:
    """The wheels in ``folder`` for the pins and the board's Python/arch (one per package)."""
    major, minor = facts.python_version[:2]
    arch = str(facts.get("machine"))
    out = []
    for pkg, ver in pins.items():
        found = sorted(
            p
            for p in folder.glob(f"{pkg}-{ver}-*.whl")
            if f"cp{major}{minor}" in p.name and arch in p.name
        )
        if found:
            out.append(found[-1])
    return out


def download_wheels(
    facts: BoardFacts, pins: dict[str, str], dest: Path, say: Callable[[str], None]
) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    have = find_wheels(dest, facts, pins)
    if len(have) == len(pins):
        say(f"wheels already on this host: {', '.join(p.name for p in have)}")
        return have
    argv = pip_download_argv(facts, pins, dest)
    say("downloading: " + " ".join(argv[3:]))
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    have = find_wheels(dest, facts, pins)
    if res.returncode != 0 or len(have) != len(pins):
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise BoardSetupError(
            f"pip download of {', '.join(f'{k}=={v}' for k, v in pins.items())} for "
            f"{facts.get('machine')} / Python {facts.python} / {' '.join(facts.get('libc'))} "
            f"failed: {tail}",
            hint="check that this host reaches PyPI, or put the wheels in a folder and pass "
            "--wheels DIR",
        )
    return have


def install_wheels(
    dev: SshDevice, wheels: list[Path], use_pip: bool, say: Callable[[str], None]
) -> None:
    rels = [dev.push(w) for w in wheels]
    remote = [dev.remote(r) for r in rels]
    site = dev.remote(SITE_DIR)
    if use_pip:
        say(f"installing with the board's pip into {site}")
        argv = [
            dev.python,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
            site,
            *remote,
        ]
    else:
        say(f"the board has no pip: unpacking the wheels into {site}")
        argv = [dev.python, "-I", "-c", _UNPACK, site, *remote]
    res = dev.link.run(argv, timeout_s=max(1800.0, dev.target.command_timeout_s))
    if not res.ok:
        tail = (res.stderr.strip().splitlines() or [f"status {res.exit_code}"])[-1]
        raise BoardSetupError(
            f"{dev.name}: installing the wheels failed: {tail}",
            hint=f"run `edgecal board check {dev.name}` (disk space?)",
        )


def provision(
    dev: SshDevice,
    board: Board,
    *,
    wheel_dir: Path | None = None,
    force: bool = False,
    say: Callable[[str], None] = log.info,
) -> bool:
    """Install numpy + ncnn under the board's work directory -- or, on a board that gets the
    native agent, push that agent and nothing else.  False: nothing to do."""
    if dev.agent_choice.kind == "native":
        pushed0 = dev.bytes_pushed
        rel = dev.deploy_agent()
        pushed = dev.bytes_pushed - pushed0
        say(f"{board.name}: native agent ({dev.agent_choice.reason}): {rel}")
        say(f"{board.name}: pushed {pushed} bytes of the native agent")
        return pushed > 0
    facts = dev.probe()
    if facts.python is None:
        raise BoardSetupError(
            f"{board.name}: no usable Python: {facts.python_error}",
            hint="install python3 (>= 3.9) on the board; provision installs only numpy and ncnn",
        )
    if facts.python_version < MIN_PYTHON:
        raise BoardSetupError(
            f"{board.name}: Python {facts.python} is too old for the agent",
            hint="install python3 >= 3.9 on the board and set `python = ...` in the boards file",
        )
    pins = host_pins()
    if not force and all(facts.get(p) == v for p, v in pins.items()):
        say(f"{board.name}: numpy {pins['numpy']} and ncnn {pins['ncnn']} already import")
        return False
    say(
        f"{board.name}: {facts.get('machine')}, Python {facts.python}, "
        f"{' '.join(facts.get('libc') or [])}, pip {'yes' if facts.get('pip') else 'no'}"
    )
    folder = (wheel_dir or DEFAULT_WHEEL_CACHE).expanduser()
    wheels = download_wheels(facts, pins, folder, say)
    pushed0 = dev.bytes_pushed
    install_wheels(dev, wheels, bool(facts.get("pip")), say)
    say(f"{board.name}: pushed {dev.bytes_pushed - pushed0} bytes of wheels")
    return True


def provision_board(
    board: Board,
    *,
    wheel_dir: Path | None = None,
    force: bool = False,
    accept_new_host_key: bool = False,
    say: Callable[[str], None] = log.info,
) -> None:
    from edgecal.boards.open import open_board

    if board.transport == "adb":
        say(f"{board.name}: a phone runs the native agent; nothing to install")
        return
    with open_board(board, accept_new_host_key=accept_new_host_key) as dev:
        assert isinstance(dev, SshDevice)
        provision(dev, board, wheel_dir=wheel_dir, force=force, say=say)
