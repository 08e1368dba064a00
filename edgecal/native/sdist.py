"""ncnn's source from the package index: its sdist found through the index's PEP 691 JSON
simple API (PEP 503 HTML pages for ``file://`` indexes), downloaded, checked against the
index's sha256 and unpacked safely.  Parsing and choosing are pure functions; ``fetch_sdist``
does the I/O."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from edgecal.errors import NativeBuildError

DEFAULT_INDEX = "https://pypi.org/simple"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
PROJECT = "ncnn"
_SDIST = re.compile(r"^ncnn-(?P<version>[0-9][0-9A-Za-z.+!_-]*)\.tar\.gz$")


@dataclass(frozen=True)
class SdistFile:
    """One ``ncnn-<version>.tar.gz`` an index lists."""

    version: str
    filename: str
    url: str  # absolute
    sha256: str | None
    index: str


def sdist_version(filename: str) -> str | None:
    m = _SDIST.match(filename)
    return m.group("version") if m else None


def parse_json_page(text: str, page_url: str, index: str) -> list[SdistFile]:
    """The sdists of a PEP 691 JSON project page (yanked files left out)."""
    try:
        doc = json.loads(text)
        files = doc["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise NativeBuildError(
            f"package index {index}: its ncnn page is not PEP 691 JSON ({exc})",
            hint="set PIP_INDEX_URL to a PyPI-compatible index, or use --ncnn-sdist FILE",
        ) from exc
    out = []
    for f in files:
        if not isinstance(f, dict) or f.get("yanked"):
            continue
        version = sdist_version(str(f.get("filename", "")))
        if version is None:
            continue
        sha = (f.get("hashes") or {}).get("sha256")
        url = urllib.parse.urljoin(page_url, str(f.get("url", "")))
        out.append(SdistFile(version, f["filename"], url, sha, index))
    return out


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, bool]] = []  # (href, yanked)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            a = dict(attrs)
            self.found.append((a.get("href") or "", "data-yanked" in a))


def parse_html_page(text: str, page_url: str, index: str) -> list[SdistFile]:
    """The sdists of a PEP 503 HTML project page (``#sha256=`` fragments are the hashes)."""
    parser = _Anchors()
    parser.feed(text)
    out = []
    for href, yanked in parser.found:
        url, _, frag = urllib.parse.urljoin(page_url, href).partition("#")
        name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlparse(url).path).name)
        version = sdist_version(name)
        if version is None or yanked:
            continue
        algo, _, digest = frag.partition("=")
        out.append(SdistFile(version, name, url, digest if algo == "sha256" else None, index))
    return out


def choose(files: list[SdistFile], version: str) -> SdistFile:
    """The sdist of ``version`` (the first index that lists it wins); an error listing the
    versions there are."""
    for f in files:
        if f.version == version:
            return f
    have = sorted({f.version for f in files}, key=_version_key)
    raise NativeBuildError(
        f"ncnn {version}: no sdist ncnn-{version}.tar.gz on the package index "
        f"({', '.join(sorted({f.index for f in files})) or 'no index answered'})",
        hint="available: "
        + (", ".join(have) if have else "none")
        + "; or give a local sdist with --ncnn-sdist FILE",
    )


def _version_key(v: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+-]", v))


def parse_pip_config(text: str) -> tuple[str | None, list[str]]:
    """(index-url, extra index urls) from ``pip config list`` output (the environment's
    ``:env:`` values win over the files')."""
    index: dict[str, str] = {}
    extra: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if not eq:
            continue
        scope, _, name = key.strip().rpartition(".")
        value = value.strip().strip("'\"")
        if name == "index-url":
            index[scope] = value
        elif name == "extra-index-url":
            extra[scope] = value
    pick = next((d[s] for d in (index,) for s in (":env:", "global", "install") if s in d), None)
    more = next((extra[s] for s in (":env:", "global", "install") if s in extra), "")
    return pick, more.split()


def index_urls() -> list[str]:
    """The indexes pip is configured with: PIP_INDEX_URL (or pip's config, else PyPI) first,
    then the extra ones."""
    env_index = os.environ.get("PIP_INDEX_URL")
    env_extra = os.environ.get("PIP_EXTRA_INDEX_URL")
    if env_index is not None and env_extra is not None:  # pip's config files do not count
        return [env_index, *[u for u in env_extra.split() if u != env_index]]
    conf_index: str | None = None
    conf_extra: list[str] = []
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        conf_index, conf_extra = parse_pip_config(out)
    except (OSError, subprocess.SubprocessError):
        pass
    first = env_index or conf_index or DEFAULT_INDEX
    extra = env_extra.split() if env_extra is not None else conf_extra
    return [first, *[u for u in extra if u != first]]


def _read(url: str, *, accept: str | None = None, timeout: float = 60) -> tuple[bytes, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read(), resp.headers.get("Content-Type", "")


def list_sdists(index: str) -> list[SdistFile]:
    """The ncnn sdists one index lists ([] when it has no ncnn project)."""
    base = index.rstrip("/") + f"/{PROJECT}/"
    if urllib.parse.urlparse(base).scheme == "file":
        page = Path(urllib.request.url2pathname(urllib.parse.urlparse(base).path)) / "index.html"
        if not page.is_file():
            return []
        return parse_html_page(page.read_text(errors="replace"), page.as_uri(), index)
    try:
        body, ctype = _read(base, accept=f"{JSON_TYPE}, text/html;q=0.1")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise NativeBuildError(
            f"package index {index}: {base} answered HTTP {exc.code}",
            hint="check PIP_INDEX_URL / pip config, or use --ncnn-sdist FILE",
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise NativeBuildError(
            f"package index {index}: cannot read {base}: {exc}",
            hint="no network? give a local sdist with --ncnn-sdist FILE",
        ) from exc
    text = body.decode("utf-8", "replace")
    if "json" in ctype:
        return parse_json_page(text, base, index)
    return parse_html_page(text, base, index)


def download(f: SdistFile, dest: Path) -> Path:
    """``f`` into ``dest`` (a folder), its sha256 checked against the index's."""
    if f.sha256 is None:
        raise NativeBuildError(
            f"package index {f.index}: no sha256 for {f.filename}",
            hint="use an index that publishes hashes, or --ncnn-sdist FILE",
        )
    try:
        body, _ = _read(f.url, timeout=300)
    except (urllib.error.URLError, OSError) as exc:
        raise NativeBuildError(
            f"ncnn sdist {f.url}: download failed: {exc}",
            hint="retry, or give a local sdist with --ncnn-sdist FILE",
        ) from exc
    got = hashlib.sha256(body).hexdigest()
    if got != f.sha256.lower():
        raise NativeBuildError(
            f"ncnn sdist {f.url}: sha256 {got} but the index says {f.sha256}",
            hint="a corrupted download or a tampered mirror; retry or use --ncnn-sdist FILE",
        )
    path = dest / f.filename
    path.write_bytes(body)
    return path


def unsafe_member(m: tarfile.TarInfo, top: PurePosixPath) -> str | None:
    """Why member ``m`` may not be unpacked under ``top`` (None when it may)."""
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts:
        return "an absolute path or '..'"
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        return "not a file, folder or link"
    if m.issym() or m.islnk():
        link = PurePosixPath(m.linkname)
        target = link if m.islnk() else p.parent / link
        if link.is_absolute() or _escapes(target):
            return f"a link out of the source ({m.linkname})"
    if p.parts and p.parts[0] != top.name:
        return f"outside {top.name}/"
    return None


def _escapes(p: PurePosixPath) -> bool:
    depth = 0
    for part in p.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack sdist ``archive`` into ``dest``; every member checked first.  Returns its top
    folder (``ncnn-<version>``)."""
    try:
        with tarfile.open(archive, "r:gz") as tf:
            members = tf.getmembers()
            if not members or not PurePosixPath(members[0].name).parts:
                raise NativeBuildError(
                    f"ncnn sdist {archive}: empty", hint="give an ncnn-<version>.tar.gz sdist"
                )
            top = PurePosixPath(PurePosixPath(members[0].name).parts[0])
            for m in members:
                why = unsafe_member(m, top)
                if why:
                    raise NativeBuildError(
                        f"ncnn sdist {archive}: member {m.name!r} is {why}",
                        hint="refused to unpack it; use the index's sdist",
                    )
            tf.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise NativeBuildError(
            f"ncnn sdist {archive}: cannot unpack: {exc}", hint="give a valid .tar.gz sdist"
        ) from exc
    return dest / top.name


def pkg_info_version(src: Path) -> str | None:
    info = src / "PKG-INFO"
    if not info.is_file():
        return None
    for line in info.read_text(errors="replace").splitlines():
        if line.startswith("Version:"):
            return line.partition(":")[2].strip()
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unpack_into(archive: Path, final: Path) -> Path:
    """Unpack ``archive`` and move its top folder to ``final`` atomically (a temp folder
    beside it, renamed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=final.parent))
    try:
        top = unpack(archive, tmp)
        os.replace(top, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
