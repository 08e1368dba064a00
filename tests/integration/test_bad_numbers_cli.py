"""Bad numbers and bad files through the CLI (issue 10, part 5): one clear error, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecal.cli.main import main

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
NPY_OPTS = ["--shape", "10,6,3"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for case in ("digits", "npy"):
        shutil.copytree(REFERENCE / case, tmp_path / case)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def calibrate_npy(extra: list[str] | None = None) -> list[str]:
    return [
        "calibrate",
        "npy/model.param",
        "npy/model.bin",
        "--npy",
        "npy/samples.txt",
        *NPY_OPTS,
        "--out",
        "out.table",
        *(extra or []),
    ]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_input_sample_is_named(
    work: Path, capsys: pytest.CaptureFixture[str], value: float
) -> None:
    path = work / "npy" / "samples" / "s03.npy"
    arr = np.load(path)
    arr[0, 0, 0] = value
    np.save(path, arr)
    code, err = run(calibrate_npy(), capsys)
    assert code == 1 and "s03.npy" in err and ("NaN" in err or "inf" in err), err
    assert not (work / "out.table").exists()


def test_overflowing_activation_names_blob_layer_and_sample(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = work / "npy" / "samples" / "s05.npy"
    np.save(path, np.full(np.load(path).shape, 3e38, np.float32))
    code, err = run(calibrate_npy(), capsys)
    assert code == 1, err
    assert "s05.npy" in err and "inf" in err and "convrelu_1" in err, err
    assert "s04.npy" not in err
    assert not (work / "out.table").exists()


def _set_weight(binf: Path, offset: int, value: float) -> None:
    data = bytearray(binf.read_bytes())
    struct.pack_into("<f", data, offset, value)
    binf.write_bytes(bytes(data))


# npy/model.bin (fp32): linear_6's weight record (tag + 4x128 floats) starts at byte 36428
LINEAR6_WEIGHT = 36432


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_calibrate_refuses_a_nonfinite_weight(
    work: Path, capsys: pytest.CaptureFixture[str], value: float
) -> None:
    """Today a -inf weight in the last layer writes `linear_6_param_0 0.000000 ...` and exits 0."""
    _set_weight(work / "npy" / "model.bin", LINEAR6_WEIGHT + 4 * 7, value)
    code, err = run(calibrate_npy(), capsys)
    assert code == 1, err
    assert "linear_6" in err and "element 7" in err and "model.param" in err, err
    assert not (work / "out.table").exists()


def _table_with(work: Path, line: int, value: str) -> Path:
    table = work / "digits" / "kl.table"
    lines = table.read_text().splitlines(keepends=True)
    key, _, rest = lines[line - 1].split(" ", 2)
    lines[line - 1] = f"{key} {value} {rest}"
    table.write_text("".join(lines))
    return table


@pytest.mark.parametrize("value", ["inf", "0.000000", "-3.5", "nan"])
@pytest.mark.parametrize("command", ["quantize", "ncnn2int8"])
def test_quantize_refuses_an_unusable_scale_naming_table_and_line(
    work: Path, capsys: pytest.CaptureFixture[str], value: str, command: str
) -> None:
    _table_with(work, 2, value)  # convdwrelu_0_param_0's first weight scale
    model = ["digits/model.param", "digits/model.bin", "o.param", "o.bin"]
    argv = [
        command,
        *model,
        *(["--table", "digits/kl.table"] if command == "quantize" else ["digits/kl.table"]),
    ]
    code, err = run(argv, capsys)
    assert code == 1, err
    assert "digits/kl.table: line 2: convdwrelu_0_param_0" in err, err
    assert "--keep-fp32 convdwrelu_0" in err
    assert not (work / "o.param").exists() and not (work / "o.bin").exists()


def test_a_bad_scale_in_a_line_the_conversion_skips_is_accepted(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _table_with(work, 2, "inf")
    argv = [
        "quantize",
        "digits/model.param",
        "digits/model.bin",
        "o.param",
        "o.bin",
        "--table",
        "digits/kl.table",
        "--keep-fp32",
        "convdwrelu_0",
    ]
    code, err = run(argv, capsys)
    assert code == 0, err
    assert (work / "o.bin").exists()


def test_huge_images_are_resized_on_the_host_and_said_once(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two 4.2 MP images for a 32x32 net: today ~25 MB of full-resolution pixels are shipped."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (2000, 2100), dtype=np.uint8)).save(
            work / f"huge{i}.png"
        )
    (work / "huge.txt").write_text("huge0.png\nhuge1.png\n")
    code = main(
        [
            "calibrate",
            "digits/model.param",
            "digits/model.bin",
            "--images",
            "huge.txt",
            "--pixel",
            "GRAY",
            "--mean",
            "0",
            "--norm",
            "0.00392157",
            "--shape",
            "32,32",
            "--out",
            "out.table",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "Warning" not in err
    said = [line for line in err.splitlines() if "resized" in line]
    assert said == [
        "edgecal: input in0: 2 image(s) resized from 2100x2000 to 32x32 as --shape "
        "asks; 2 larger than 4 MP resized on this host before shipping"
    ], err
    doc = json.loads(out)
    assert doc["bytes_pushed"] < 1_000_000, doc["bytes_pushed"]


def test_a_decompression_bomb_in_the_list_is_a_clean_error(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16 * 16)  # 32x32 = 4x the limit: a bomb
    code, err = run(
        [
            "calibrate",
            "digits/model.param",
            "digits/model.bin",
            "--images",
            "digits/images.txt",
            "--pixel",
            "GRAY",
            "--mean",
            "0",
            "--norm",
            "0.00392157",
            "--shape",
            "32,32",
            "--out",
            "out.table",
        ],
        capsys,
    )
    assert code == 1 and "calib_00.png" in err and "decompression bomb" in err, err
    assert not (work / "out.table").exists()


def test_ncnn_crashing_on_the_model_is_not_retried_as_a_board_fault(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Today: four tries, 'given up', and a hint to check that numpy and ncnn import."""
    param = work / "digits" / "model.param"
    lines = param.read_text().splitlines()
    n_layers, n_blobs = map(int, lines[1].split())
    out = [lines[0], f"{n_layers + 1} {n_blobs + 1}"]
    for text in lines[2:]:
        if text.split()[1] == "convdwrelu_0":
            out.append("Crop crop_x 1 1 1 1i 0=-100000000 1=-100000000 2=0 3=10 4=10 5=16")
            text = text.replace(" 1 1 1 2 ", " 1 1 1i 2 ", 1)
        out.append(text)
    param.write_text("\n".join(out) + "\n")
    code, err = run(
        [
            "calibrate",
            "digits/model.param",
            "digits/model.bin",
            "--images",
            "digits/images.txt",
            "--pixel",
            "GRAY",
            "--mean",
            "0",
            "--norm",
            "0.00392157",
            "--shape",
            "32,32",
            "--out",
            "out.table",
        ],
        capsys,
    )
    assert code == 1, err
    assert "retrying" not in err and "given up" not in err, err
    assert "digits/model.param" in err and "ncnn crashed" in err, err
    assert "layer 'crop_x' (Crop)" in err, err
    assert "numpy" not in err


def test_non_utf8_file_names_give_a_clean_error(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chdir(work)
    (work / "list.txt").write_bytes(b"digits/images/calib_00.png\nmissing_\xff\xfe.png\n")
    code, err = run(
        [
            "calibrate",
            "digits/model.param",
            "digits/model.bin",
            "--images",
            "list.txt",
            "--pixel",
            "GRAY",
            "--mean",
            "0",
            "--norm",
            "0.00392157",
            "--shape",
            "32,32",
            "--out",
            "out.table",
        ],
        capsys,
    )
    assert code == 1 and "missing_\\xff\\xfe.png" in err, err
    assert "\\udc" not in err


def test_non_utf8_output_and_model_names_over_a_strict_stdout(work: Path) -> None:
    """Today: UnicodeEncodeError printing `wrote ...` (the outputs are written, exit 1)."""
    (work / "digits" / "model.param").rename(Path(os.fsdecode(b"digits/m\xff.param")))
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecal",
            "quantize",
            os.fsdecode(b"digits/m\xff.param"),
            "digits/model.bin",
            os.fsdecode(b"q\xff.param"),
            "q.bin",
            "--table",
            "digits/kl.table",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    assert b"wrote q\xff.param and q.bin" in proc.stdout
    assert os.path.exists(os.fsdecode(bytes(work) + b"/q\xff.param"))


def test_validate_names_a_sample_whose_fp32_output_is_not_finite(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Today: exit 0 with `cosine mean nan` and no word about which sample."""
    path = work / "npy" / "samples" / "s03.npy"
    np.save(path, np.full(np.load(path).shape, 3e38, np.float32))
    code, err = run(
        [
            "validate",
            "npy/model.param",
            "npy/model.bin",
            "--table",
            "npy/kl.table",
            "--npy",
            "npy/samples.txt",
            *NPY_OPTS,
        ],
        capsys,
    )
    assert code == 1 and "s03.npy" in err and "NaN/inf" in err, err


@pytest.mark.parametrize("norm", ["nan", "inf"])
def test_a_nonfinite_norm_is_a_usage_error(
    work: Path, capsys: pytest.CaptureFixture[str], norm: str
) -> None:
    """Today: `ValueError: Out of range float values are not JSON compliant` (a traceback)."""
    code, err = run(
        [
            "calibrate",
            "digits/model.param",
            "digits/model.bin",
            "--images",
            "digits/images.txt",
            "--pixel",
            "GRAY",
            "--mean",
            "0",
            "--norm",
            norm,
            "--shape",
            "32,32",
            "--out",
            "out.table",
        ],
        capsys,
    )
    assert code == 2 and f"norm of input in0 holds {norm}" in err, err


def test_a_norm_overflowing_float32_is_reported_as_nonfinite_activations(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1e39 is finite for Python but inf in float32: every sample's activations are NaN/inf;
    today the NaN ones vanish from the abs-max and the run stops with 'zero on every sample'
    or crashes on the JSON of an inf abs-max."""
    code, err = run(
        [
            "calibrate",
            "digits/model.param",
            "digits/model.bin",
            "--images",
            "digits/images.txt",
            "--pixel",
            "GRAY",
            "--mean",
            "0",
            "--norm",
            "1e39",
            "--shape",
            "32,32",
            "--out",
            "out.table",
        ],
        capsys,
    )
    assert code == 1 and ("NaN" in err or "inf" in err) and "calib_00.png" in err, err
    assert "zero on every" not in err
