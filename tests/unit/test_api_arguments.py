"""Every exported function checks its arguments first: a value of the wrong type (a number for
a path, a str for a list, text for a number, a non-callable callback), out of range (threads) or
unusable (a NUL byte in a path) is a :class:`UsageError` naming the parameter -- never a bare
``TypeError``/``AttributeError``/``IndexError``/``ValueError`` from deep inside.  A boards file
that is given is read, whether or not a board of it is used.  No model runs here: the checks
come before any work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import edgecal
from edgecal.api.tune import candidate_names
from edgecal.errors import ConfigError, UsageError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tinted_digits"
PARAM, BIN = str(SAMPLE / "model.param"), str(SAMPLE / "model.bin")
MODEL = (PARAM, BIN)
PREP: dict[str, Any] = dict(pixel="RGB", mean=(127.5,) * 3, norm=(0.00784314,) * 3, shape=(48, 48))
LIST = str(SAMPLE / "calib.txt")
IMAGES = edgecal.ImageInput(LIST, **PREP)


def image(**fields: Any) -> edgecal.ImageInput:
    return edgecal.ImageInput(**{"images": LIST, **PREP, **fields})


def calibrate(**kw: Any) -> Callable[[Path], Any]:
    args = {"model": MODEL, "inputs": IMAGES, **kw}
    return lambda tmp: edgecal.calibrate(
        args.pop("model"), args.pop("inputs"), **{"out": str(tmp / "m.table"), **args}
    )


def validate(**kw: Any) -> Callable[[Path], Any]:
    args = {"model": MODEL, "int8": MODEL, "inputs": IMAGES, **kw}
    return lambda tmp: edgecal.validate(args.pop("model"), args.pop("int8"), **args)


def tune(**kw: Any) -> Callable[[Path], Any]:
    args = {"max_drop": 0.5, **kw}
    return lambda tmp: edgecal.tune(MODEL, IMAGES, **{"out_dir": str(tmp / "tuned"), **args})


def quantize(**kw: Any) -> Callable[[Path], Any]:
    args = {"model": MODEL, "out_param": "int8.param", "out_bin": "int8.bin", "table": None}
    args.update(kw)

    def run(tmp: Path) -> Any:
        model, o_param, o_bin = args.pop("model"), args.pop("out_param"), args.pop("out_bin")
        return edgecal.quantize(
            model,
            tmp / o_param if isinstance(o_param, str) else o_param,
            tmp / o_bin if isinstance(o_bin, str) else o_bin,
            **args,
        )

    return run


def check(*results: Any, **kw: Any) -> Callable[[Path], Any]:
    th = edgecal.Thresholds(min_agreement=0.9)
    return lambda tmp: edgecal.check(*results, **{"thresholds": th, **kw})


NUL = str(SAMPLE / "mo\0del.param")

CASES: list[tuple[str, Callable[[Path], Any], str]] = [
    # the model: (param, bin) or load_model(...)
    ("model int", calibrate(model=5), "model"),
    ("model None", calibrate(model=None), "model"),
    ("model 1-tuple", calibrate(model=(PARAM,)), "model"),
    ("model 3-tuple", calibrate(model=(PARAM, BIN, BIN)), "model"),
    ("model str", calibrate(model=PARAM), "model"),
    ("model NUL", calibrate(model=(NUL, BIN)), "model"),
    ("model int path", calibrate(model=(PARAM, 5)), "model"),
    ("int8 int", validate(int8=5), "int8"),
    ("quantize model", quantize(model=5), "model"),
    # the inputs: ImageInput/TensorInput, or a sequence of them
    ("inputs None", calibrate(inputs=None), "inputs"),
    ("inputs str", calibrate(inputs=LIST), "inputs"),
    ("inputs item", calibrate(inputs=[IMAGES, LIST]), "inputs[1]"),
    ("validate inputs", validate(inputs=5), "inputs"),
    ("tune inputs", lambda tmp: edgecal.tune(MODEL, None, max_drop=0.5, out_dir=tmp), "inputs"),
    ("images int", calibrate(inputs=image(images=5)), "images"),
    ("images list", calibrate(inputs=image(images=[LIST])), "images"),
    ("images NUL", calibrate(inputs=image(images=LIST + "\0")), "images"),
    ("npy int", calibrate(inputs=edgecal.TensorInput(5)), "npy"),
    ("pixel int", calibrate(inputs=image(pixel=3)), "pixel"),
    ("mean float", calibrate(inputs=image(mean=127.5)), "mean"),
    ("norm str", calibrate(inputs=image(norm="0.1,0.1,0.1")), "ImageInput norm"),
    ("shape int", calibrate(inputs=image(shape=48)), "shape"),
    ("shape str", calibrate(inputs=image(shape="48,48")), "ImageInput shape"),
    # numbers
    ("threads str", calibrate(threads="2"), "threads"),
    ("threads float", calibrate(threads=2.5), "threads"),
    ("threads bool", calibrate(threads=True), "threads"),
    ("retries str", calibrate(retries="x"), "retries"),
    ("validate threads str", validate(threads="2"), "threads"),
    ("validate threads huge", validate(threads=2**40), "threads"),
    ("validate threads float", validate(threads=2.5), "threads"),
    ("validate threads bool", validate(threads=True), "threads"),
    ("validate iou_threshold", validate(iou_threshold="0.3"), "iou_threshold"),
    ("tune threads", tune(threads="2"), "threads"),
    ("tune threads huge", tune(threads=10**6), "threads"),
    ("tune max_drop str", tune(max_drop="0.5"), "max_drop"),
    ("tune max_drop None", tune(max_drop=None), "max_drop"),
    ("open_device threads 0", lambda tmp: edgecal.open_device("local", threads=0), "threads"),
    ("open_device threads -1", lambda tmp: edgecal.open_device("local", threads=-1), "threads"),
    ("open_device threads str", lambda tmp: edgecal.open_device("local", threads="2"), "threads"),
    ("thresholds str", lambda tmp: edgecal.Thresholds(min_accuracy="0.9"), "min_accuracy"),
    ("check max_metric_drop", check("b.json", max_metric_drop="1"), "max_metric_drop"),
    # paths
    ("out int", calibrate(out=5), "out"),
    ("histograms_out int", calibrate(histograms_out=5), "histograms_out"),
    ("run_dir int", calibrate(run_dir=5), "run_dir"),
    ("quantize out_param None", quantize(out_param=None), "out_param"),
    ("quantize out_bin int", quantize(out_bin=5), "out_bin"),
    ("quantize table int", quantize(table=5), "table"),
    ("table_from_histograms int", lambda tmp: edgecal.table_from_histograms(5), "histograms"),
    ("table_from_histograms None", lambda tmp: edgecal.table_from_histograms(None), "histograms"),
    ("resume int", lambda tmp: edgecal.resume(5), "run_dir"),
    ("resume None", lambda tmp: edgecal.resume(None), "run_dir"),
    ("resume retries", lambda tmp: edgecal.resume(tmp, retries="x"), "retries"),
    ("write_report int", lambda tmp: edgecal.write_report(5), "run"),
    ("write_report None", lambda tmp: edgecal.write_report(None), "run"),
    ("write_report out", lambda tmp: edgecal.write_report(tmp, 5), "out"),
    ("tune out_dir None", tune(out_dir=None), "out_dir"),
    ("validate labels int", validate(labels=5), "labels"),
    ("validate save_baseline int", validate(save_baseline=5), "save_baseline"),
    ("check results int", check(5), "results"),
    ("check json_out int", check("b.json", json_out=5), "json_out"),
    # devices
    ("devices int", calibrate(devices=5), "devices"),
    ("devices item", calibrate(devices=["local", 5]), "devices[1]"),
    ("Devices.of int", lambda tmp: edgecal.Devices.of(5), "devices"),
    ("open_device int", lambda tmp: edgecal.open_device(5), "name"),
    ("open_device list", lambda tmp: edgecal.open_device(["local"]), "name"),
    ("open_device labgrid_wait", lambda tmp: edgecal.open_device(labgrid_wait="x"), "labgrid_wait"),
    # callbacks
    ("progress int", calibrate(progress=5), "progress"),
    ("say int", calibrate(say=5), "say"),
    ("resume progress", lambda tmp: edgecal.resume(tmp, progress=5), "progress"),
    ("validate progress", validate(progress=5), "progress"),
    ("validate say", validate(say="x"), "say"),
    ("tune steps", tune(steps=5), "steps"),
    ("check validation int", lambda tmp: edgecal.check(validation=5), "validation"),
    (
        "check validation gives None",
        lambda tmp: edgecal.check(
            validation=lambda: None, thresholds=edgecal.Thresholds(min_agreement=0.9)
        ),
        "validation",
    ),
    # lists of names, typed values
    ("keep_fp32 None", quantize(keep_fp32=None), "keep_fp32"),
    ("keep_fp32 int item", quantize(keep_fp32=[1]), "keep_fp32"),
    ("keep_fp32 str", quantize(keep_fp32="convrelu_0"), "keep_fp32"),
    ("try_methods int", tune(try_methods=5), "try_methods"),
    ("try_methods int item", tune(try_methods=["kl", 5]), "try_methods"),
    ("thresholds dict", check("b.json", thresholds={"min_agreement": 0.9}), "thresholds"),
]


@pytest.mark.parametrize(("run", "name"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_argument_is_a_usage_error_naming_it(
    run: Callable[[Path], Any], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        run(tmp_path)
    assert name in info.value.message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_single_str_of_layer_names_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        edgecal.quantize(
            MODEL,
            tmp_path / "i.param",
            tmp_path / "i.bin",
            table=None,
            keep_fp32="convrelu_0",
        )
    assert "list of layer names" in str(info.value)
    assert "['convrelu_0']" in str(info.value)


def test_an_unknown_try_method_lists_every_name_accepted(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        edgecal.tune(MODEL, IMAGES, max_drop=0.5, out_dir=tmp_path / "t", try_methods=["bogus"])
    for name in candidate_names():
        assert name in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("methods", [["none"], ["mse", "P99.9"]])
def test_try_methods_takes_what_the_command_line_takes(methods: list[str], tmp_path: Path) -> None:
    """``["none"]`` (no method), the extra rules in any case: accepted -- the run then stops
    at the out_dir, an existing file (refused after the arguments)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError) as info:
        edgecal.tune(MODEL, IMAGES, max_drop=0.5, out_dir=tmp_path / "file", try_methods=methods)
    assert "is a file, not a folder" in info.value.message  # the out_dir's error


def test_a_boards_file_given_is_read_for_a_local_device(tmp_path: Path) -> None:
    nope = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        edgecal.open_device("local", boards=nope)
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        edgecal.Devices.of(None, boards=nope)
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        edgecal.validate(MODEL, MODEL, inputs=IMAGES, boards=nope)
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        edgecal.tune(MODEL, IMAGES, max_drop=0.5, out_dir=tmp_path / "t", boards=nope)
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\n[boards.pi]\nhost = 5\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        edgecal.open_device(None, boards=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]
