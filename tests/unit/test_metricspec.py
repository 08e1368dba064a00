"""``--metric NAME|module:function|file.py:function``, ``--charset`` and text labels: resolved
into a metric, with errors that name the module and the fix (never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecal.errors import InputFileError, UsageError
from edgecal.inputs.labels import parse_labels, parse_text_labels
from edgecal.inputs.metricspec import metric_name, read_charset, resolve_metric
from edgecal.quality.taskmetrics import Ctc, Iou, Top1, UserMetric

MODULE = """
def rate(fp32, int8, labels):
    return {"primary": 0.5, "n": len(fp32)}
"""


def test_builtins_with_their_options(tmp_path: Path) -> None:
    chars = tmp_path / "dict.txt"
    chars.write_text("a\nb\n \nc\n\n")  # a space is a character; trailing blank lines are not
    assert resolve_metric(None) is None
    assert resolve_metric("top1") == Top1()
    assert resolve_metric("ctc", charset=chars) == Ctc(("a", "b", " ", "c"))
    assert resolve_metric("iou", iou_threshold=0.6) == Iou(0.6)
    with pytest.raises(UsageError, match="--charset is for --metric ctc"):
        resolve_metric("iou", charset=chars)
    with pytest.raises(UsageError, match="--iou-threshold is for --metric iou"):
        resolve_metric(None, iou_threshold=0.5)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UsageError, match="no characters"):
        read_charset(tmp_path / "empty.txt")


def test_module_function_from_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymetrics_ok.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    m = resolve_metric("mymetrics_ok:rate")
    assert isinstance(m, UserMetric) and m.name == "mymetrics_ok:rate"
    got = m([{"o": 1}], [{"o": 1}], None)  # type: ignore[list-item]
    assert got.primary == 0.5 and got.figures == {"n": 1.0}


def test_module_function_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``edgecal`` command's sys.path lacks the current folder: it is tried last."""
    import sys

    (tmp_path / "mymetrics_cwd.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    m = resolve_metric("mymetrics_cwd:rate")
    assert isinstance(m, UserMetric) and str(tmp_path) not in sys.path


def test_function_from_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "my metric.py"
    path.parent.mkdir()
    path.write_text(MODULE)
    m = resolve_metric(f"{path}:rate")
    assert isinstance(m, UserMetric) and m.fn.__name__ == "rate"


def test_a_callable_and_its_name() -> None:
    def exact(fp32: object, int8: object, labels: object) -> float:
        return 1.0

    m = resolve_metric(exact)
    assert isinstance(m, UserMetric) and m.name == metric_name(exact)
    assert metric_name(exact).endswith("exact") and metric_name("ctc") == "ctc"
    assert metric_name(Iou()) == "iou" and resolve_metric(Iou()) == Iou()


@pytest.mark.parametrize(
    ("spec", "message", "hint"),
    [
        ("no_such_module_xyz:f", "cannot import module no_such_module_xyz", "PYTHONPATH"),
        ("mymetrics_bad:rate", "importing mymetrics_bad failed: ZeroDivisionError", "fix"),
        ("mymetrics_ok2:nope", "mymetrics_ok2 has no function nope", "fn(fp32_outputs"),
        ("nofile/here.py:f", "no file nofile/here.py", "Python file"),
        ("bleu", "not a metric", "module:function"),
        (":f", "not a metric", "path/to/file.py:function"),
    ],
)
def test_import_errors_name_the_module_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str, hint: str
) -> None:
    (tmp_path / "mymetrics_bad.py").write_text("x = 1 / 0\n")
    (tmp_path / "mymetrics_ok2.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=message) as e:
        resolve_metric(spec)
    assert e.value.hint and hint in e.value.hint


def test_cli_import_error_is_one_line_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgecal.cli.main import main

    root = Path(__file__).resolve().parents[2] / "tests" / "data" / "tasks" / "seg"
    rc = main(
        [
            "validate",
            str(root / "model.param"),
            str(root / "model.bin"),
            "--table",
            str(root / "kl.table"),
            "--npy",
            str(root / "samples.txt"),
            "--metric",
            "no_such_module_xyz:score",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert "cannot import module no_such_module_xyz" in err and "PYTHONPATH" in err


def test_text_labels_keep_the_text_class_labels_unchanged() -> None:
    text = "file,label\na.png,0042\nb.png, hello world \n"
    assert parse_text_labels(text) == {"a.png": "0042", "b.png": "hello world"}
    assert parse_labels("file,label\na.png,3\n") == {"a.png": 3}
    with pytest.raises(InputFileError, match="is not a class index"):
        parse_labels("file,label\na.png,x\nb.png\n")  # the first bad row is named first
    with pytest.raises(InputFileError, match="labelled twice"):
        parse_text_labels("file,label\na.png,x\na.png,y\n")
