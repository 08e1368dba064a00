"""``edgecal report``'s page in a real headless browser (Debian's chromium).

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3
in, fd 4 out, NUL-separated JSON), so the test needs no driver package and opens no port.  The
page is loaded from a ``file://`` URL with every host name unresolvable: a page that tried to
fetch anything (CDN, font) would log an error and fail.  Checked: no console errors, no
exceptions, no network requests, and every plot ``<img>`` decoded (``naturalWidth > 0``) and
laid out.

Without chromium these tests skip, and FAIL under CI (``CI=true``): install the ``chromium``
Debian package.  ``EDGECAL_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecal.calib.scales import blob_scale
from edgecal.report.page import write_report
from edgecal.runs.histfile import HistogramSet, load_histograms
from edgecal.runs.rundir import HISTOGRAMS, SENSITIVITY, THRESHOLDS, TUNE, VALIDATION
from tests.unit.test_report import (
    EVIL,
    board_doc,
    make_run,
    sensitivity_doc,
    validation_doc,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "tinted_digits"
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = os.environ.get("EDGECAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT = 60.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
    # nothing but 127.0.0.1 resolves: a page reaching out anywhere gets an error
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


class Chromium:
    """A headless chromium spoken to over the DevTools pipe."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # chromium wants the pipe on fds 3 (commands) and 4 (replies): a tiny exec wrapper
        # puts them there (no preexec_fn: this process has threads)
        wrapper = (
            "import fcntl, os, sys\n"
            f"fds = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in ({to_r}, {from_w})]\n"
            f"os.close({to_r}); os.close({from_w})\n"
            "os.dup2(fds[0], 3); os.dup2(fds[1], 4); os.close(fds[0]); os.close(fds[1])\n"
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    wrapper,
                    binary,
                    *FLAGS,
                    f"--user-data-dir={profile}",
                    "about:blank",
                ],
                pass_fds=(to_r, from_w),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        os.close(to_r)
        os.close(from_w)
        self._out = os.fdopen(to_w, "wb", buffering=0)
        self._in = from_r
        self._next_id = 0
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._messages.put(None)
                return
            buf += chunk
            *whole, buf = buf.split(b"\0")
            for raw in whole:
                self._messages.put(json.loads(raw))

    def _take(self, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        try:
            msg = self._messages.get(timeout=max(left, 0.01))
        except queue.Empty:
            raise TimeoutError(f"chromium did not answer in time; log: {self.log_tail()}") from None
        if msg is None:
            raise RuntimeError(f"chromium closed the pipe; log: {self.log_tail()}")
        return msg

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._take(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        for ev in self.events:
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
        while True:
            ev = self._take(deadline)
            self.events.append(ev)
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        os.close(self._in)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        why = f"no chromium at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("chromium")
    b = Chromium(CHROMIUM, tmp / "profile", tmp / "chromium.log")
    try:
        b.call("Browser.getVersion")
        yield b
    finally:
        b.close()


def load(b: Chromium, url: str) -> dict[str, Any]:
    """Open ``url`` in a fresh tab; what the page holds and every problem it had."""
    target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.call(f"{domain}.enable", session=session)
        start = len(b.events)
        nav = b.call("Page.navigate", {"url": url}, session=session)
        assert "errorText" not in nav, nav
        b.wait_event("Page.loadEventFired", session)
        js = """(async () => {
            const imgs = [...document.images];
            await Promise.all(imgs.map(i => i.decode().catch(() => null)));
            return JSON.stringify({
                title: document.title,
                sections: [...document.querySelectorAll("section")].map(s => s.id),
                scripts: document.scripts.length,
                imgs: imgs.map(i => ({cls: i.className, alt: i.alt, complete: i.complete,
                                      w: i.naturalWidth, h: i.naturalHeight,
                                      shown: i.getBoundingClientRect().width}))});
        })()"""
        res = b.call(
            "Runtime.evaluate",
            {"expression": js, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        assert "exceptionDetails" not in res, res
        page = json.loads(res["result"]["value"])
        b.call("Runtime.evaluate", {"expression": "1"}, session=session)  # flush events
        events = [e for e in b.events[start:] if e.get("sessionId") == session]
        page["problems"] = problems(events)
        return page
    finally:
        b.call("Target.closeTarget", {"targetId": target})


def problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for ev in events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("file:", "data:")):
                out.append(f"request: {url}")
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


# ----------------------------------------------------------------------------- run dirs


def real_histograms(tmp: Path) -> HistogramSet:
    """The sample model's merged histograms, from the real calibration (a few seconds)."""
    out = tmp / "sample.npz"
    cmd = [
        sys.executable,
        "-m",
        "edgecal",
        "-q",
        "calibrate",
        str(SAMPLE / "model.param"),
        str(SAMPLE / "model.bin"),
        "--images",
        str(SAMPLE / "calib.txt"),
        "--pixel",
        "RGB",
        "--mean",
        "127.5,127.5,127.5",
        "--norm",
        "0.00784314,0.00784314,0.00784314",
        "--shape",
        "48,48",
        "--out",
        str(tmp / "sample.table"),
        "--histograms-out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return load_histograms(out)


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tune-like run of the sample model: its real histograms and KL/ACIQ thresholds, the
    other files synthetic (validation of two boards, one diverging; sensitivity; tune)."""
    tmp = tmp_path_factory.mktemp("report")
    hs = real_histograms(tmp)
    layers = tuple(hs.stats)
    thresholds = {}
    for i, (name, h) in enumerate(hs.stats.items()):
        kl = float(blob_scale("kl", h, name).threshold)
        aciq = float(blob_scale("aciq", h, name).threshold)
        method = ("kl", "aciq", "eq")[i % 3]
        eq = kl * 0.9 if method == "eq" else None
        thresholds[name] = {
            "blob": hs.blobs[name],
            "absmax": float(h.absmax),
            "kl": kl,
            "aciq": aciq,
            "eq": eq,
            "chosen_method": method,
            "chosen": {"kl": kl, "aciq": aciq, "eq": eq}[method],
        }
    run = make_run(tmp / "run", files=(HISTOGRAMS, TUNE), histograms=hs)
    run.write_json(THRESHOLDS, {"layers": thresholds})
    validation = validation_doc()
    for doc, cos in zip(validation["results"], (0.9993, 0.95), strict=True):
        doc["layers"] = board_doc("x", layers, cos)["layers"]
    run.write_json(VALIDATION, validation)
    run.write_json(SENSITIVITY, sensitivity_doc(layers))
    return write_report(run.path)


def test_report_renders_in_chromium(browser: Chromium, sample_report: Path) -> None:
    n_layers = len(json.loads((sample_report.parent / THRESHOLDS).read_text())["layers"])
    page = load(browser, sample_report.as_uri())
    assert page["problems"] == []
    assert page["title"] == f"edgecal report: {sample_report.parent.name}"
    assert page["sections"] == [
        "summary",
        "layers",
        "cosine",
        "sensitivity",
        "tune",
        "boards",
        "provenance",
    ]
    assert page["scripts"] == 0  # the <script> layer name stayed text
    plots = [i for i in page["imgs"] if i["cls"] == "plot"]
    assert len(plots) == len(page["imgs"]) == 1 + n_layers + 1 + 1
    for img in plots:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0 and img["shown"] > 0, img
        assert img["alt"]


def test_harness_sees_broken_pages(browser: Chromium, tmp_path: Path) -> None:
    """The checks above can fail: a broken image, a console error and an outside fetch."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title>"
        '<link rel="stylesheet" href="https://cdn.example.com/x.css"></head><body>'
        '<img class="plot" alt="broken" src="data:image/png;base64,iVBORw0KGgo=">'
        f'<script>console.error("boom")</script><p>{EVIL[:0]}</p></body></html>'
    )
    page = load(browser, bad.as_uri())
    assert any("console.error" in p and "boom" in p for p in page["problems"]), page
    assert any("cdn.example.com" in p for p in page["problems"]), page
    assert page["imgs"][0]["w"] == 0


def test_plots_are_not_blank(sample_report: Path) -> None:
    """Each embedded PNG has ink beyond the background (a plot, not an empty canvas)."""
    import base64
    import io
    import re

    from PIL import Image

    page = sample_report.read_text(encoding="utf-8")
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))
        assert (img < 200).mean() > 0.01
