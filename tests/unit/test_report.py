"""``edgecal report``: the page made from a synthetic run directory (formats of
edgecal.runs.rundir)."""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
import re
import struct
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgecal.calib.histogram import BlobHistogram
from edgecal.cli.report import add_report_command
from edgecal.errors import InputFileError
from edgecal.report.html import (
    LayerHistogram,
    LayerThresholds,
    histogram_plot,
    load_report_data,
)
from edgecal.report.page import render_report, write_report
from edgecal.runs.histfile import HistogramSet, save_histograms
from edgecal.runs.rundir import (
    HISTOGRAMS,
    REPORT,
    RUN_JSON,
    SENSITIVITY,
    THRESHOLDS,
    TUNE,
    VALIDATION,
    RunDir,
)

EVIL = "<script>alert(1)</script>"
PNG_URL = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
LAYERS = ("conv1", EVIL, "conv$3$_x")  # "$..$" would be mathtext in a matplotlib label
KL_RGB = (0xD6, 0x27, 0x28)
ACIQ_RGB = (0x2C, 0xA0, 0x2C)
EQ_RGB = (0x94, 0x67, 0xBD)

# ----------------------------------------------------------------------------- synthetic run


def score(drop: float, latency: float = 2.0) -> dict[str, Any]:
    return {
        "agreement": 1 - drop / 100,
        "accuracy": None,
        "cosine_mean": 0.998,
        "cosine_min": 0.99,
        "drop_points": drop,
        "latency_ms": latency,
    }


def board_doc(name: str, layers: tuple[str, ...] = LAYERS, cos: float = 0.9991) -> dict[str, Any]:
    return {
        "n_samples": 20,
        "output_blob": "out0",
        "runtime": "deployed",
        "threads": 4,
        "top1_fp32": 0.95,
        "top1_int8": 0.9,
        "agreement": 0.93,
        "cosine_mean": cos,
        "cosine_min": 0.97,
        "sqnr_mean_db": 24.5,
        "sqnr_min_db": "inf",
        "latency_fp32_ms": 3.2,
        "latency_int8_ms": 1.7,
        "layers": [
            {
                "name": k,
                "type": "Convolution",
                "top": f"{k}_out",
                "requantized": i == 0,
                "top_scale": 10.0 if i == 0 else None,
                "cosine_mean": cos - 0.001 * i,
                "cosine_min": cos - 0.002 * i - 0.001,
                "sqnr_db": 30.0 - i,
            }
            for i, k in enumerate(layers)
        ],
        "device": {
            "name": name,
            "agent_version": "0.1.0",
            "protocol": 1,
            "ncnn": "1.0.2024",
            "machine": "aarch64",
            "cores": 4,
            "cpu_features": ["neon", "asimdhp"],
            "profile": "emulated-pi5",
        },
        "fp32": {
            "param": "model.param",
            "bin": "model.bin",
            "param_sha256": "a" * 64,
            "bin_sha256": "b" * 64,
        },
        "int8": {
            "param": "int8.param",
            "bin": "int8.bin",
            "table": "calibration.table",
            "param_sha256": "c" * 64,
            "bin_sha256": "d" * 64,
        },
    }


def validation_doc(boards: tuple[str, ...] = ("emu1", "emu2")) -> dict[str, Any]:
    consistency = None
    if len(boards) >= 2:
        consistency = {
            "tolerance_cosine": 0.999,
            "tolerance_disagree": 0.01,
            "pairs": [
                {
                    "a": boards[0],
                    "b": boards[1],
                    "cosine_mean": 0.9995,
                    "cosine_min": 0.998,
                    "top1_disagree": 0.05,
                }
            ],
            "boards": [
                {"board": boards[0], "cosine_to_others_min": 0.998, "diverges": False, "why": None},
                {
                    "board": boards[1],
                    "cosine_to_others_min": 0.95,
                    "diverges": True,
                    "why": "cosine 0.95 < 0.999",
                },
            ],
            "diverging": [boards[1]],
        }
    return {
        "results": [board_doc(b, cos=0.9991 - 0.01 * i) for i, b in enumerate(boards)],
        "consistency": consistency,
    }


def thresholds_doc(layers: tuple[str, ...] = LAYERS) -> dict[str, Any]:
    out = {}
    for i, k in enumerate(layers):
        absmax = 8.0 + i
        out[k] = {
            "blob": f"{k}_in",
            "absmax": absmax,
            "kl": absmax * 0.4,
            "aciq": absmax * 0.6,
            "eq": None if i == 0 else absmax * 0.5,
            "chosen_method": "kl",
            "chosen": absmax * 0.4,
        }
    return {"layers": out}


def sensitivity_doc(layers: tuple[str, ...] = LAYERS) -> dict[str, Any]:
    return {
        "board": "emu1",
        "metric": "agreement",
        "n_samples": 20,
        "all_int8": score(7.0),
        "layers": [
            {
                "layer": k,
                "type": "Convolution",
                "keep_fp32": score(7.0 - 3 + i),
                "only_int8": score(1.0 * i),
                "gain_points": 3.0 - 2 * i,
                "harm_cosine": 0.001 * (2 - i),
                "rank": i + 1,
            }
            for i, k in enumerate(layers)
        ],
    }


def tune_doc() -> dict[str, Any]:
    return {
        "method": "kl",
        "max_drop": 1.0,
        "metric": "agreement",
        "target_met": False,
        "reason": "2 layers in fp32 and still 2.5 points lost",
        "initial": score(7.0),
        "final": score(2.5, 2.4),
        "steps": [
            {
                "action": "method",
                "layer": "conv1",
                "method": "aciq",
                "score": score(6.0),
                "kept": False,
            },
            {"action": "fp32", "layer": EVIL, "method": None, "score": score(2.5), "kept": True},
        ],
        "fp32_layers": [{"layer": EVIL, "latency_cost_ms": 0.25}],
        "layer_methods": {"conv1": "kl"},
    }


def histogram_set(layers: tuple[str, ...] = LAYERS, seed: int = 0) -> HistogramSet:
    rng = np.random.default_rng(seed)
    stats = {}
    for i, k in enumerate(layers):
        x = np.abs(rng.laplace(0.0, 1.0, 20000)) * (1 + i)
        absmax = np.float32(8.0 + i)
        counts = np.bincount(np.minimum((x / absmax * 2048).astype(int), 2047), minlength=2048)
        stats[k] = BlobHistogram(
            counts=counts.astype(np.uint64), absmax=absmax, elements_per_sample=4096
        )
    return HistogramSet(
        blobs={k: f"{k}_in" for k in layers},
        stats=stats,
        meta={"param": "model.param", "n_samples": 20, "device": EVIL},
    )


def make_run(
    path: Path,
    *,
    files: tuple[str, ...] = (VALIDATION, THRESHOLDS, HISTOGRAMS, SENSITIVITY, TUNE),
    histograms: HistogramSet | None = None,
    thresholds: dict[str, Any] | None = None,
) -> RunDir:
    argv = ["edgecal", "tune", "model.param", "--images", "my images/", "--label", EVIL]
    run = RunDir.create(
        path,
        "tune",
        argv,
        {
            "fp32_param": {"path": "model.param", "sha256": "a" * 64},
            "images": {"count": 20, "sha256": "e" * 64},
        },
    )
    docs = {
        VALIDATION: validation_doc,
        THRESHOLDS: lambda: thresholds or thresholds_doc(),
        SENSITIVITY: sensitivity_doc,
        TUNE: tune_doc,
    }
    for name in files:
        if name == HISTOGRAMS:
            save_histograms(run.file(HISTOGRAMS), histograms or histogram_set())
        else:
            run.write_json(name, docs[name]())
    return run


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in PNG_URL.findall(page)]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def colour_pixels(png: bytes, rgb: tuple[int, int, int]) -> int:
    """Pixels of the hue of ``rgb`` (within 12 degrees, saturation > 0.3): thin lines are
    antialiased, so their pixels are lighter than the line colour but keep its hue."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    hsv = np.asarray(img.convert("HSV")).astype(np.int16)
    ref = np.asarray(Image.new("RGB", (1, 1), rgb).convert("HSV")).astype(np.int16)[0, 0]
    dh = np.abs(hsv[..., 0] - ref[0])
    dh = np.minimum(dh, 256 - dh)  # hue is circular, 0..255
    return int(((dh <= 8) & (hsv[..., 1] > 77)).sum())


@pytest.fixture()
def full_run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "run")


# ----------------------------------------------------------------------------- the page


def test_one_png_per_plot_and_each_decodes(full_run: RunDir) -> None:
    page = render_report(full_run)
    images = pngs(page)
    # latency + one histogram per layer + per-layer cosine + sensitivity
    assert len(images) == 1 + len(LAYERS) + 1 + 1
    assert page.count("data:image/png") == len(images)
    for png in images:
        w, h = png_size(png)
        assert w > 50 and h > 50
        Image.open(io.BytesIO(png)).verify()
    for tag in re.findall(r"<img [^>]*>", page):
        assert 'class="plot"' in tag and re.search(r'alt="[^"]{10,}"', tag)


def test_file_data_is_escaped_everywhere(full_run: RunDir) -> None:
    page = render_report(full_run)
    assert "<script" not in page.lower()
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # layer tables, histogram captions, sensitivity, tune steps, fp32 layers, argv, meta
    assert page.count(escaped) >= 8
    # markupsafe's entity for a quote: &#39; (shlex.join quotes the argv word)
    assert "--label &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;" in page
    assert "&#39;my images/&#39;" in page


#: Run-file strings that would break a page built by pasting text: markup, quotes for an
#: attribute, a table's closing tags, an entity, template syntax, a lone surrogate (a JSON
#: "\\udcff", a non-UTF-8 file name: not encodable as UTF-8).
HOSTILE = (
    "<script>alert(2)</script>",
    "q\"uote's",
    "</td></tr></table><b>x",
    "a&amp;b",
    "{{ 7919*7907 }}{% raw %}",
    "lone\udcffsurrogate",
)


class _PageParts(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [v for k, v in attrs if v is not None and k == "alt"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_hostile_run_strings_come_out_as_text(tmp_path: Path) -> None:
    boards, layers = HOSTILE[:2], HOSTILE[2:]
    run = make_run(
        tmp_path / "run",
        files=(HISTOGRAMS, THRESHOLDS, TUNE),
        histograms=histogram_set(layers),
        thresholds=thresholds_doc(layers),
    )
    run.write_json(
        VALIDATION, {"results": [board_doc(b, layers) for b in boards], "consistency": None}
    )
    run.write_json(SENSITIVITY, sensitivity_doc(layers))
    page = write_report(run.path).read_text(encoding="utf-8")  # written: encodable
    parts = _PageParts()
    parts.feed(page)
    # only the page's own elements: none came from a name
    assert parts.tags == {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "h3",
        "p",
        "code",
        "nav",
        "a",
        "ul",
        "li",
        "section",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "b",
        "figure",
        "img",
        "figcaption",
        "div",
    }
    text = "".join(parts.text)
    shown = [h.replace("\udcff", "\\udcff") for h in HOSTILE]
    for name in shown:
        assert name in text, name  # as the file had it, character for character
    assert str(7919 * 7907) not in text  # template syntax in data is not evaluated
    alts = " ".join(parts.attrs)
    for layer in shown[2:]:
        assert f"input of layer {layer} (" in alts, layer
    assert f"boards {shown[0]}, {shown[1]}" in alts
    assert len(pngs(page)) == 1 + len(layers) + 1 + 1


def test_page_is_self_contained(full_run: RunDir) -> None:
    page = render_report(full_run)
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        assert value.startswith(("data:image/png;base64,", "#")), (attr, value[:60])
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_summary_consistency_and_tune(full_run: RunDir) -> None:
    page = render_report(full_run)
    assert "Diverging boards: emu2" in page
    bad_rows = re.findall(r'<tr class="bad">(.*?)</tr>', page)
    assert any("emu2" in r and "diverges" in r for r in bad_rows)
    assert not any("<b>emu1</b>" in r for r in bad_rows)
    assert "95.00 %" in page and "93.00 %" in page  # top-1 fp32, agreement
    assert "3.200" in page and "1.700" in page  # latency
    assert ">inf<" in page  # sqnr_min_db "inf" parsed and shown
    assert "Target not met" in page and "2 layers in fp32 and still 2.5 points lost" in page
    assert "0.250" in page  # fp32 layer cost
    assert "aarch64" in page and "neon, asimdhp" in page and "emulated-pi5" in page
    assert "e" * 64 in page and "a" * 64 in page  # input hashes


def test_chosen_threshold_is_marked_and_null_ones_left_out(full_run: RunDir) -> None:
    page = render_report(full_run)
    row = re.search(r"<tr><td>conv1</td>(.*?)</tr>", page)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    # blob, absmax, KL (chosen), ACIQ, EQ (null), chosen
    assert "chosen" in cells[2] and "3.2" in cells[2]
    assert "chosen" not in cells[3] and cells[4] == "—"
    alt = re.search(r'alt="histogram of \|x\| at the input of layer conv1 \(([^)]*)\)"', page)
    assert alt is not None and "KL 3.2" in alt.group(1) and "ACIQ 4.8" in alt.group(1)
    assert "EQ" not in alt.group(1)


def test_histogram_plot_draws_exactly_the_non_null_thresholds() -> None:
    hs = histogram_set(("a",))
    h = hs.stats["a"]
    hist = LayerHistogram("a", "a_in", float(h.absmax), h.counts)

    def thr(**kw: Any) -> LayerThresholds:
        base: dict[str, Any] = {
            "layer": "a",
            "blob": "a_in",
            "absmax": 8.0,
            "kl": 3.0,
            "aciq": 5.0,
            "eq": None,
            "chosen_method": "kl",
            "chosen": 3.0,
        }
        return LayerThresholds(**{**base, **kw})

    bare = histogram_plot(hist, None)
    for rgb in (KL_RGB, ACIQ_RGB, EQ_RGB):
        assert colour_pixels(bare, rgb) == 0
    marked = histogram_plot(hist, thr())
    assert colour_pixels(marked, KL_RGB) > 0 and colour_pixels(marked, ACIQ_RGB) > 0
    assert colour_pixels(marked, EQ_RGB) == 0
    # the chosen line is drawn thicker: choosing ACIQ moves ink from KL to ACIQ
    aciq = histogram_plot(hist, thr(chosen_method="aciq", chosen=5.0))
    assert colour_pixels(aciq, ACIQ_RGB) > colour_pixels(marked, ACIQ_RGB)
    assert colour_pixels(aciq, KL_RGB) < colour_pixels(marked, KL_RGB)


def test_histogram_x_axis_is_in_activation_units() -> None:
    """Bins 1024..1087 of absmax 8 cover |x| in [4, 4.25): a threshold at 4.125 is drawn
    inside that block, one at 6 well to its right."""
    counts = np.zeros(2048, np.uint64)
    counts[1024:1088] = 1000
    counts[:50] = 1

    def columns(png: bytes, rgb: tuple[int, int, int]) -> np.ndarray:
        img = Image.open(io.BytesIO(png)).convert("RGB")
        full = np.asarray(img)
        hits = np.all(np.abs(full.astype(np.int16) - np.array(rgb)) <= 4, axis=-1)
        return np.nonzero(hits[: full.shape[0] // 2].sum(axis=0) > 5)[0]  # upper half only

    hist = LayerHistogram("a", "b", 8.0, counts)
    block = columns(histogram_plot(hist, None), (0x9B, 0xB7, 0xD4))  # bar fill
    assert block.size > 5
    for value, inside in ((4.125, True), (6.0, False)):
        thr = LayerThresholds(
            "a", "b", 8.0, kl=value, aciq=None, eq=None, chosen_method="kl", chosen=value
        )
        line = columns(histogram_plot(hist, thr), KL_RGB)
        assert line.size > 0
        assert (block.min() < line.mean() < block.max()) == inside, (value, block, line)


def test_empty_histogram_is_a_plot_not_a_crash() -> None:
    png = histogram_plot(LayerHistogram("z", "z_in", 0.0, np.zeros(2048, np.uint64)), None)
    assert png_size(png)[0] > 50


def test_missing_files_are_stated(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", files=())
    page = render_report(run)
    assert pngs(page) == []
    for name in (VALIDATION, THRESHOLDS, HISTOGRAMS, SENSITIVITY, TUNE):
        assert f"Not in this run: <code>{name}</code>" in page, name
    assert "✗ <code>tune.json</code>" in page and "✓ <code>run.json</code>" in page
    assert "edgecal tune model.param" in page  # provenance still there


def test_histograms_without_thresholds_and_one_board(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", files=(HISTOGRAMS,))
    run.write_json(VALIDATION, validation_doc(("local",)))
    page = render_report(run)
    assert f"Not in this run: <code>{THRESHOLDS}</code>" in page
    assert "No cross-board check" in page and "Diverging" not in page
    assert len(pngs(page)) == 1 + len(LAYERS) + 1  # latency, histograms, cosine


def test_render_is_deterministic(full_run: RunDir) -> None:
    assert render_report(full_run) == render_report(full_run)


def test_ten_layers_render_quickly(tmp_path: Path) -> None:
    layers = tuple(f"conv{i}" for i in range(10))
    run = make_run(
        tmp_path / "run",
        files=(HISTOGRAMS, THRESHOLDS),
        histograms=histogram_set(layers),
        thresholds=thresholds_doc(layers),
    )
    render_report(run)  # warm-up: imports, font cache
    t0 = time.process_time()  # CPU time: other load on the machine does not count
    page = render_report(run)
    assert len(pngs(page)) == 10
    assert time.process_time() - t0 < 4.0  # ~1.3 s here


# ----------------------------------------------------------------------------- errors


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


MALFORMED = [
    (VALIDATION, ("results", 0, "agreement"), "high", "results[0].agreement"),
    (VALIDATION, ("results", 1, "layers", 2, "sqnr_db"), None, "layers[2].sqnr_db"),
    (VALIDATION, ("results",), {"emu1": 1}, "results should be a list"),
    (VALIDATION, ("consistency", "boards", 0, "diverges"), "no", "diverges"),
    (VALIDATION, ("schema",), 2, "schema 2"),
    (THRESHOLDS, ("layers",), [], "layers should be an object"),
    (THRESHOLDS, ("layers", "conv1", "chosen_method"), "best", "chosen_method"),
    (THRESHOLDS, ("layers", "conv1", "kl"), [1.0], "conv1.kl"),
    (SENSITIVITY, ("layers", 0, "rank"), 1.5, "rank"),
    (SENSITIVITY, ("all_int8", "drop_points"), "7", "all_int8.drop_points"),
    (TUNE, ("target_met",), "yes", "target_met"),
    (TUNE, ("fp32_layers", 0), "conv1", "fp32_layers[0]"),
    (RUN_JSON, ("commands", 0, "argv"), "edgecal tune", "argv"),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "says"), MALFORMED, ids=[f"{m[0]}:{m[3]}" for m in MALFORMED]
)
def test_malformed_content_names_the_file(
    tmp_path: Path, name: str, path: tuple[Any, ...], value: Any, says: str
) -> None:
    run = make_run(tmp_path / "run")
    doc = json.loads(run.file(name).read_text())
    run.file(name).write_text(json.dumps(_mutate(doc, path, value)))
    with pytest.raises(InputFileError) as info:
        write_report(run.path)
    assert str(run.file(name)) in str(info.value) and says in str(info.value)
    assert not run.has(REPORT)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "", "\xff"])
def test_unparsable_or_non_object_files(tmp_path: Path, text: str) -> None:
    for name in (VALIDATION, RUN_JSON):
        run = make_run(tmp_path / name / "run")
        run.file(name).write_bytes(text.encode("latin-1"))
        with pytest.raises(InputFileError, match=re.escape(str(run.file(name)))):
            write_report(run.path)


def test_bad_histogram_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    run.file(HISTOGRAMS).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputFileError, match=HISTOGRAMS):
        load_report_data(run)


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as info:
        write_report(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and info.value.hint


# ----------------------------------------------------------------------------- writing, CLI


def test_write_report_default_and_explicit_out(full_run: RunDir, tmp_path: Path) -> None:
    out = write_report(full_run.path)
    assert out == full_run.file(REPORT)
    assert out.read_text(encoding="utf-8") == render_report(full_run)
    other = write_report(full_run.path, tmp_path / "page.html")
    assert other == tmp_path / "page.html" and other.read_bytes() == out.read_bytes()
    assert sorted(p.name for p in full_run.path.iterdir() if p.name.startswith(".")) == []


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgecal")
    add_report_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_and_prints(
    full_run: RunDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli(["report", str(full_run.path)])
    assert args.func(args) == 0
    assert capsys.readouterr().out == f"wrote {full_run.file(REPORT)}\n"
    out = tmp_path / "x.html"
    args = _cli(["report", str(full_run.path), "-o", str(out), "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["report"] == str(out) and out.is_file()
    assert doc["files"][TUNE] is True and set(doc["files"]) >= {VALIDATION, HISTOGRAMS}
