from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.table import parse_table
from edgecal.cli.render import render_table_diff
from edgecal.runs.histfile import HistogramSet
from edgecal.workflows.compare import compare_histograms, compare_tables

REF = Path(__file__).resolve().parents[1] / "data" / "reference"


def test_identical_tables_have_no_difference() -> None:
    t = parse_table((REF / "digits" / "kl.table").read_text())
    rows = compare_tables(t, t)
    assert len(rows) == len(t) and all(r.max_rel == 0 for r in rows)


def test_kl_vs_aciq_differences_are_per_layer() -> None:
    kl = parse_table((REF / "digits" / "kl.table").read_text())
    aciq = parse_table((REF / "digits" / "aciq.table").read_text())
    rows = {r.key: r for r in compare_tables(kl, aciq)}
    blob = rows["convrelu_0"]
    assert blob.kind == "blob" and blob.a == float(kl.records["convrelu_0"][0])
    assert abs(blob.max_rel - abs(blob.a - blob.b) / max(blob.a, blob.b)) < 1e-12
    assert rows["convrelu_0_param_0"].kind == "weight" and rows["convrelu_0_param_0"].max_rel > 0
    assert "convrelu_0" in render_table_diff(list(rows.values()))


def test_missing_keys_are_reported() -> None:
    a = parse_table("x 1.0 \ny 2.0 \n")
    b = parse_table("y 2.5 \nz 3.0 \n")
    rows = {r.key: r for r in compare_tables(a, b)}
    assert rows["x"].note == "only in a" and rows["z"].note == "only in b"
    assert abs(rows["y"].max_rel - 0.2) < 1e-6


def test_histogram_mass_moved_and_kl_bins() -> None:
    c = np.zeros(2048, np.uint64)
    c[:1000] = 5
    d = c.copy()
    d[1500] = 5000
    mk = lambda counts, m: HistogramSet(  # noqa: E731
        {"l": "b"}, {"l": BlobHistogram(counts, np.float32(m), 10)}
    )
    same = compare_histograms(mk(c, 2.0), mk(c, 2.0))[0]
    assert same.mass_moved == 0 and same.absmax_rel == 0 and same.kl_bin_a == same.kl_bin_b
    diff = compare_histograms(mk(c, 2.0), mk(d, 2.5))[0]
    assert 0.4 < diff.mass_moved < 0.6 and abs(diff.absmax_rel - 0.2) < 1e-6


def test_compare_cli_tables_and_histograms(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from edgecal.cli.main import main
    from edgecal.runs.histfile import save_histograms

    assert (
        main(["compare", str(REF / "digits" / "kl.table"), str(REF / "digits" / "aciq.table")]) == 0
    )
    out = capsys.readouterr().out
    assert "convrelu_0" in out and "linear_7" in out
    c = np.zeros(2048, np.uint64)
    c[:10] = 3
    for name, m in (("a.npz", 1.0), ("b.npz", 1.5)):
        save_histograms(
            tmp_path / name, HistogramSet({"l": "b"}, {"l": BlobHistogram(c, np.float32(m), 4)})
        )
    assert main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["layer"] == "l" and abs(rows[0]["absmax_rel"] - 1 / 3) < 1e-6
    assert main(["compare", str(tmp_path / "missing.table"), str(REF / "digits" / "kl.table")]) == 1
