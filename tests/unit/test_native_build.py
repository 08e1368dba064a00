"""The native build's pure parts and its cache: the index pages (PEP 691 JSON, PEP 503 HTML),
the version choice, pip's configured indexes, safe unpacking, toolchain files, ncnn options,
cache keys and the all-or-nothing cache; the sdist fetch against an index served on
127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgecal.errors import NativeBuildError
from edgecal.native import TARGET_NAMES
from edgecal.native.build import Source, build_percent, fetch_source, local_source, ncnn_key
from edgecal.native.cache import build_once, key_of, tree_hash
from edgecal.native.sdist import (
    choose,
    index_urls,
    parse_html_page,
    parse_json_page,
    parse_pip_config,
    unpack,
)
from edgecal.native.toolchain import (
    TARGETS,
    Target,
    Toolchain,
    find_toolchain,
    ncnn_options,
    toolchain_text,
)

PAGE = "https://example.org/simple/ncnn/"


def json_page(files: list[dict[str, object]]) -> str:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "ncnn", "files": files})


def test_json_page_lists_the_sdists_only_with_absolute_urls() -> None:
    text = json_page(
        [
            {"filename": "ncnn-1.0.1-cp311-cp311-manylinux.whl", "url": "a.whl", "hashes": {}},
            {
                "filename": "ncnn-1.0.1.tar.gz",
                "url": "../../f/ncnn-1.0.1.tar.gz",
                "hashes": {"sha256": "ab" * 32},
            },
            {
                "filename": "ncnn-1.0.2.tar.gz",
                "url": "https://files.example/ncnn-1.0.2.tar.gz",
                "hashes": {"sha256": "cd" * 32},
                "yanked": "broken",
            },
            {"filename": "ncnn-1.0.3.zip", "url": "x.zip", "hashes": {}},
        ]
    )
    files = parse_json_page(text, PAGE, "https://example.org/simple")
    assert [(f.version, f.url, f.sha256) for f in files] == [
        ("1.0.1", "https://example.org/f/ncnn-1.0.1.tar.gz", "ab" * 32)
    ]


def test_a_page_that_is_not_json_is_an_error_naming_the_index() -> None:
    with pytest.raises(NativeBuildError, match=r"example.org/simple.*not PEP 691"):
        parse_json_page("<html>", PAGE, "https://example.org/simple")


def test_html_page_hashes_from_the_fragment_and_yanked_left_out() -> None:
    text = (
        '<html><body><a href="../../p/ncnn-1.0.1.tar.gz#sha256=' + "ef" * 32 + '">x</a>'
        '<a href="ncnn-1.0.2.tar.gz#md5=00" data-yanked="">y</a>'
        '<a href="ncnn-1.0.3.tar.gz#md5=00">z</a></body></html>'
    )
    files = parse_html_page(text, "file:///idx/ncnn/index.html", "file:///idx")
    assert [(f.version, f.url, f.sha256) for f in files] == [
        ("1.0.1", "file:///p/ncnn-1.0.1.tar.gz", "ef" * 32),
        ("1.0.3", "file:///idx/ncnn/ncnn-1.0.3.tar.gz", None),
    ]


def test_choose_takes_the_first_index_and_lists_the_versions_there_are() -> None:
    a = parse_json_page(
        json_page([{"filename": "ncnn-1.0.9.tar.gz", "url": "a", "hashes": {}}]), PAGE, "A"
    )
    b = parse_json_page(
        json_page(
            [
                {"filename": "ncnn-1.0.9.tar.gz", "url": "b", "hashes": {}},
                {"filename": "ncnn-1.0.10.tar.gz", "url": "b", "hashes": {}},
            ]
        ),
        PAGE,
        "B",
    )
    assert choose(a + b, "1.0.9").index == "A"
    with pytest.raises(NativeBuildError) as exc:
        choose(a + b, "2.0")
    assert "ncnn 2.0" in exc.value.message
    assert exc.value.hint is not None and "available: 1.0.9, 1.0.10;" in exc.value.hint


MACHINE_PIP_CONFIG = """:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""


def test_pip_config_index_and_extras() -> None:
    assert parse_pip_config(MACHINE_PIP_CONFIG) == (
        None,
        ["file:///opt/pypi/simple", "file:///opt/pypi-more/simple"],
    )
    both = "global.index-url='https://mirror/simple'\n:env:.index-url='https://env/simple'\n"
    assert parse_pip_config(both) == ("https://env/simple", [])


def test_index_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///x/simple http://127.0.0.1:9/simple")
    assert index_urls() == ["http://127.0.0.1:9/simple", "file:///x/simple"]


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def fake_sdist(folder: Path, version: str) -> Path:
    top = f"ncnn-{version}"
    return make_tar(
        folder / f"{top}.tar.gz",
        [
            (
                entry(f"{top}/PKG-INFO"),
                f"Metadata-Version: 2.4\nName: ncnn\nVersion: {version}\n".encode(),
            ),
            (entry(f"{top}/CMakeLists.txt"), b"project(fake)\n"),
            (entry(f"{top}/src/link.h", tarfile.SYMTYPE, "../CMakeLists.txt"), None),
        ],
    )


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (entry("ncnn-1/../../evil"), "'..'"),
        (entry("/etc/evil"), "absolute"),
        (entry("ncnn-1/l", tarfile.SYMTYPE, "../../etc/passwd"), "link out"),
        (entry("ncnn-1/l", tarfile.SYMTYPE, "/etc/passwd"), "link out"),
        (entry("ncnn-1/h", tarfile.LNKTYPE, "../x"), "link out"),
        (entry("ncnn-1/dev", tarfile.CHRTYPE), "not a file"),
    ],
)
def test_unpack_refuses_members_out_of_the_source(
    tmp_path: Path, member: tarfile.TarInfo, why: str
) -> None:
    good = entry("ncnn-1/CMakeLists.txt")
    archive = make_tar(tmp_path / "bad.tar.gz", [(good, b"x"), (member, None)])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NativeBuildError, match=why):
        unpack(archive, out)
    assert list(out.iterdir()) == []  # checked before anything is written


def test_unpack_keeps_links_inside(tmp_path: Path) -> None:
    top = unpack(fake_sdist(tmp_path, "1.0.7"), tmp_path)
    assert top.name == "ncnn-1.0.7"
    assert (top / "src" / "link.h").read_bytes() == b"project(fake)\n"


def test_targets_and_names_agree() -> None:
    assert tuple(TARGETS) == TARGET_NAMES


def test_toolchain_file_text() -> None:
    v7 = toolchain_text(
        TARGETS["armv7"], "/usr/bin/arm-linux-gnueabihf-gcc", "/usr/bin/arm-linux-gnueabihf-g++"
    )
    assert "set(CMAKE_SYSTEM_PROCESSOR armv7)" in v7
    assert 'set(CMAKE_CXX_COMPILER "/usr/bin/arm-linux-gnueabihf-g++")' in v7
    flags = "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard -mfp16-format=ieee"
    assert f'set(CMAKE_CXX_FLAGS_INIT "{flags}")' in v7
    assert 'set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")' in v7
    assert 'set(CMAKE_FIND_ROOT_PATH "/usr/arm-linux-gnueabihf")' in v7
    x86 = toolchain_text(
        TARGETS["x86_64"],
        "/usr/bin/x86_64-linux-gnu-gcc",
        "/usr/bin/x86_64-linux-gnu-g++",
        static=False,
    )
    assert 'set(CMAKE_CXX_FLAGS_INIT "")' in x86 and "-static" not in x86


def test_ncnn_options_are_a_deployed_apps() -> None:
    for name in TARGET_NAMES:
        opts = ncnn_options(TARGETS[name], "1.0.20261020")
        assert opts["NCNN_VERSION"] == "20261020"  # not the sdist's build date
        assert opts["CMAKE_BUILD_TYPE"] == "Release"
        for on in ("NCNN_OPENMP", "NCNN_RUNTIME_CPU", "NCNN_INT8", "NCNN_BF16"):
            assert opts[on] == "ON"
        for off in (
            "NCNN_VULKAN",
            "NCNN_SHARED_LIB",
            "NCNN_PYTHON",
            "NCNN_BUILD_TOOLS",
            "NCNN_BUILD_EXAMPLES",
            "NCNN_BUILD_BENCHMARK",
            "NCNN_BUILD_TESTS",
            "NCNN_SIMPLEOMP",
        ):
            assert opts[off] == "OFF"
        assert ("NCNN_VFPV4" in opts) == (name == "armv7")


def toolchain(name: str, version_line: str = "g++ (Debian 12.2.0-14) 12.2.0") -> Toolchain:
    t = TARGETS[name]
    return Toolchain(t, f"/usr/bin/{t.cc}", f"/usr/bin/{t.cxx}", version_line)


def test_ncnn_cache_key_changes_with_what_changes_the_library() -> None:
    src = Source("1.0.20261020", "index")
    key, _ = ncnn_key(src, toolchain("aarch64"))
    assert key == ncnn_key(Source("1.0.20261020", "index"), toolchain("aarch64"))[0]
    others = {
        ncnn_key(Source("1.0.20250503", "index"), toolchain("aarch64"))[0],
        ncnn_key(Source("1.0.20261020", "sdist:" + "0" * 64), toolchain("aarch64"))[0],
        ncnn_key(src, toolchain("armv7"))[0],
        ncnn_key(src, toolchain("aarch64", "g++ (Debian 12.3.0-1) 12.3.0"))[0],
        ncnn_key(src, Toolchain(TARGETS["aarch64"], "/opt/x/gcc", "/opt/x/g++", "g++ 12.2.0"))[0],
    }
    assert key not in others and len(others) == 5
    assert key_of({"a": 1, "b": 2}) == key_of({"b": 2, "a": 1})


def test_tree_hash_sees_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.cpp").write_text("int a;")
    first = tree_hash(tmp_path)
    (tmp_path / "src" / "a.cpp").write_text("int b;")
    second = tree_hash(tmp_path)
    (tmp_path / "src" / "a.cpp").rename(tmp_path / "src" / "b.cpp")
    assert len({first, second, tree_hash(tmp_path)}) == 3


def test_a_missing_compiler_names_the_debian_package() -> None:
    t = Target("riscv64", "riscv64", "riscv64-nowhere-linux-gnu", "g++-riscv64-linux-gnu")
    with pytest.raises(NativeBuildError, match="no riscv64-nowhere-linux-gnu-g") as exc:
        find_toolchain(t)
    assert exc.value.hint is not None and "g++-riscv64-linux-gnu" in exc.value.hint


def test_build_once_is_all_or_nothing(tmp_path: Path) -> None:
    final = tmp_path / "thing"

    def fail(tmp: Path) -> None:
        (tmp / "half").write_text("made")
        raise NativeBuildError("compiler died")

    with pytest.raises(NativeBuildError):
        build_once(final, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing.lock"]  # nothing half-made
    assert build_once(final, lambda tmp: (tmp / "out").write_text("ok")) is True
    assert (final / "out").read_text() == "ok"
    assert build_once(final, fail) is False  # cached: make is not called


def test_two_builds_of_one_key_do_not_collide(tmp_path: Path) -> None:
    final = tmp_path / "thing"
    calls: list[int] = []

    def slow(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (tmp / "out").write_text(str(len(calls)))

    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(build_once(final, slow))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True] and calls == [1]
    assert (final / "out").read_text() == "1"


class Index:
    """A PEP 691 index of one project (ncnn) on 127.0.0.1: its page and its files."""

    def __init__(self, files: dict[str, bytes], hashes: dict[str, str]) -> None:
        self.files, self.hashes, self.requests = files, hashes, []  # type: list[str]
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(f"{self.path} {self.headers.get('Accept')}")
                if self.path == "/simple/ncnn/":
                    page = json_page(
                        [
                            {
                                "filename": n,
                                "url": f"/files/{n}",
                                "hashes": {"sha256": index.hashes[n]},
                            }
                            for n in index.files
                        ]
                    ).encode()
                    self.reply(page, "application/vnd.pypi.simple.v1+json")
                elif self.path.startswith("/files/") and self.path[7:] in index.files:
                    self.reply(index.files[self.path[7:]], "application/octet-stream")
                else:
                    self.send_error(404)

            def reply(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    good = fake_sdist(tmp_path, "1.0.5").read_bytes()
    bad = fake_sdist(tmp_path, "1.0.6").read_bytes()
    idx = Index(
        {"ncnn-1.0.5.tar.gz": good, "ncnn-1.0.6.tar.gz": bad},
        {"ncnn-1.0.5.tar.gz": hashlib.sha256(good).hexdigest(), "ncnn-1.0.6.tar.gz": "0" * 64},
    )
    monkeypatch.setenv("PIP_INDEX_URL", idx.url)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"file://{tmp_path}/no-such-index")
    monkeypatch.setenv("EDGECAL_CACHE", str(tmp_path / "cache"))
    yield idx
    idx.server.shutdown()


def test_fetch_from_the_index_checks_the_hash_and_caches_by_version(
    index: Index, tmp_path: Path
) -> None:
    folder = fetch_source(Source("1.0.5", "index"))
    assert folder == tmp_path / "cache" / "native" / "src" / "ncnn-1.0.5"
    assert (folder / "CMakeLists.txt").read_bytes() == b"project(fake)\n"
    assert index.requests[0] == "/simple/ncnn/ application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    assert fetch_source(Source("1.0.5", "index")) == folder
    assert len(index.requests) == 2  # the page and the file, once

    # the same file given as a local sdist (offline) is the index's: same source, same builds
    assert local_source(tmp_path / "ncnn-1.0.5.tar.gz", None) == Source("1.0.5", "index")

    with pytest.raises(NativeBuildError, match=r"sha256 .* but the index says 0000"):
        fetch_source(Source("1.0.6", "index"))
    assert not (tmp_path / "cache" / "native" / "src" / "ncnn-1.0.6").exists()
    with pytest.raises(NativeBuildError) as exc:
        fetch_source(Source("1.0.4", "index"))
    assert exc.value.hint is not None and "available: 1.0.5, 1.0.6;" in exc.value.hint


def test_a_local_sdist_gives_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECAL_CACHE", str(tmp_path / "cache"))
    sdist = fake_sdist(tmp_path, "1.0.8")
    src = local_source(sdist, None)
    assert (
        src.version == "1.0.8"
        and src.origin == "sdist:" + hashlib.sha256(sdist.read_bytes()).hexdigest()
    )
    assert (src.folder / "CMakeLists.txt").is_file()
    with pytest.raises(NativeBuildError, match=r"is ncnn 1\.0\.8, not 1\.0\.9"):
        local_source(sdist, "1.0.9")
    with pytest.raises(NativeBuildError, match="no such file"):
        local_source(tmp_path / "missing.tar.gz", None)


def test_cli_agent_build_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from edgecal.cli.main import main

    assert main(["agent", "build", "--target", "x86_64", "--jobs", "0"]) == 2
    assert "edgecal: error: --jobs 0: give 1 or more" in capsys.readouterr().err
    missing = tmp_path / "ncnn-1.0.1.tar.gz"
    assert main(["agent", "build", "--target", "armv7", "--ncnn-sdist", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"edgecal: error: --ncnn-sdist {missing}: no such file (fix: give an" in err
    assert main(["agent", "build", "--target", "mips"]) == 2
    assert "invalid choice: 'mips'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "pct"),
    [
        ("[99/248] Building CXX object src/CMakeFiles/ncnn.dir/layer/arm/gru_arm.cpp.o", 39),
        ("[248/248] Linking CXX static library src/libncnn.a", 100),
        ("[ 45%] Building CXX object src/CMakeFiles/ncnn.dir/layer/relu.cpp.o", 45),
        ('-- Found OpenMP: TRUE (found version "4.5")', None),
        ("[0/0] nothing", None),
    ],
)
def test_build_progress_from_ninja_and_make_lines(line: str, pct: int | None) -> None:
    assert build_percent(line) == pct
