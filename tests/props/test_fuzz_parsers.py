"""Fuzzing every parser of user files and agent messages (issue "Fleets and faults", item 5).

Each property feeds a parser (a) random bytes or text and (b) structured mutations of real, valid
inputs (the reference cases, tests/data/layers, the sample model): flipped, deleted and inserted
bytes and tokens, truncation, duplicated lines, huge numbers, negative counts, NaN/inf, unicode,
empty files.  The parser must either return or raise one of its declared errors: an
``EdgecalError`` on the host (whose message names the file), ``ProtocolViolation`` / ``JobError``
in the device agent.  Anything else (ValueError, IndexError, KeyError, OverflowError,
zipfile.BadZipFile, MemoryError, ...) is a bug in the parser.

Example counts: the loaded hypothesis profile's ``max_examples`` (half of it for the slower
file-based properties): ``ci`` (150, derandomized) runs the file in about 20 s on 2 cores.
``EDGECAL_FUZZ_EXAMPLES=N`` runs N per property for a soak, e.g.
``EDGECAL_FUZZ_EXAMPLES=5000 pytest tests/props/test_fuzz_parsers.py``.
Temporary files come from ``tempfile`` inside each example, never from function-scoped fixtures.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecal.boards.config import load_boards, load_group, load_profile
from edgecal.calib.histogram import BlobHistogram
from edgecal.calib.table import parse_table
from edgecal.cli.ncnnargs import parse_ncnn2table
from edgecal.device.jobs import parse_response
from edgecal.errors import EdgecalError
from edgecal.inputs.labels import parse_labels
from edgecal.inputs.model import load_model
from edgecal.inputs.samples import load_npy, make_sample_source, read_list
from edgecal.inputs.spec import InputSpec
from edgecal.ncnnfmt.modelbin import encode_record, read_modelbin
from edgecal.ncnnfmt.param import parse_param
from edgecal.runs.histfile import HistogramSet, histograms_to_bytes, load_histograms
from edgecal.runs.rundir import RUN_JSON, RunDir
from edgecal_agent.errors import JobError
from edgecal_agent.messages import (
    Artifact,
    CaptureParams,
    EqLayerParams,
    ErrorInfo,
    InputDesc,
    ModelFiles,
    ProtocolViolation,
    Request,
    Response,
    SleepParams,
)
from edgecal_agent.npzio import load_npz
from edgecal_agent.shards import iter_shard, read_shard_info, write_shard

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "reference"
LAYERS = ROOT / "tests" / "data" / "layers"
SAMPLE = ROOT / "samples" / "tinted_digits"
PROFILES = ROOT / "toolchains" / "profiles"
CASES = ("digits", "npy", "multi")

T = TypeVar("T")


# -- how many examples ---------------------------------------------------------------------------
def _examples(share: float = 1.0) -> int:
    soak = os.environ.get("EDGECAL_FUZZ_EXAMPLES")
    if soak:
        return int(soak)
    return max(10, int(settings.default.max_examples * share))


def fuzz(share: float = 1.0) -> Callable[[T], T]:
    return settings(
        max_examples=_examples(share),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# -- the seeds: real, valid files ----------------------------------------------------------------
def _model_pairs() -> list[tuple[str, bytes, bytes]]:
    pairs = []
    for case in CASES:
        for stem in ("model", "int8_kl"):
            pairs.append(
                (
                    f"{case}/{stem}",
                    (REFERENCE / case / f"{stem}.param").read_bytes(),
                    (REFERENCE / case / f"{stem}.bin").read_bytes(),
                )
            )
    for param in sorted(LAYERS.glob("*.param")):
        pairs.append(
            (f"layers/{param.stem}", param.read_bytes(), param.with_suffix(".bin").read_bytes())
        )
    pairs.append(
        ("sample/model", (SAMPLE / "model.param").read_bytes(), (SAMPLE / "model.bin").read_bytes())
    )
    return pairs


MODELS = _model_pairs()
TABLES = [(REFERENCE / c / f"{m}.table").read_bytes() for c in CASES for m in ("kl", "aciq")]
LISTS = [
    (REFERENCE / "digits" / "images.txt", REFERENCE / "digits"),
    (REFERENCE / "npy" / "samples.txt", REFERENCE / "npy"),
    (REFERENCE / "multi" / "list_a.txt", REFERENCE / "multi"),
    (SAMPLE / "calib.txt", SAMPLE),
]
LABELS = [(SAMPLE / "labels.csv").read_bytes(), (SAMPLE / "calib_labels.csv").read_bytes()]
NPY_SEED = (REFERENCE / "npy" / "samples" / "s00.npy").read_bytes()
NPY_SPEC = InputSpec(blob="in0", kind="npy", shape=(10, 6, 3))
PROFILE_TEXTS = {p.stem: p.read_bytes() for p in sorted(PROFILES.glob("*.toml"))}
BOARDS_TEXT = b"""schema = 1
[boards.emu1]
host = "127.0.0.1"
port = 2222
user = "pi"
identity_file = "ssh/id_ed25519"
known_hosts = "ssh/known_hosts"
profile = "emulated-pi4"
workdir = ".cache/edgecal"
python = "python3"
connect_timeout_s = 3
command_timeout_s = 3600.5

[boards.pi5]
host = "pi5.local"
profile = "raspberry-pi-5"

[groups]
fleet = ["emu1", "pi5"]
one = ["pi5"]
"""
NCNN2TABLE_ARGV = [
    "model.param model.bin list_a.txt,list_b.txt kl.table mean=[0],[127.5,127.5,127.5] "
    "norm=[0.00392157],[0.00784314,0.00784314,0.00784314] shape=[32,32],[16,16] "
    "pixel=GRAY,RGB thread=1 method=kl",
    "model.param model.bin samples.txt aciq.table shape=[10,6,3] thread=1 method=aciq type=1",
    "model.param model.bin weights.table method=eq",
]


def _record_offsets(param: bytes, data: bytes) -> list[int]:
    """Where each weight record of a valid pair starts (tags and sizes live there)."""
    weights = read_modelbin(parse_param(param.decode()), data)
    offsets, pos = [0], 0
    for recs in weights.values():
        for rec in recs.values():
            if rec.storage == "codebook":
                return offsets
            pos += len(encode_record(rec))
            offsets.append(pos)
    return offsets


OFFSETS = {name: _record_offsets(p, b) for name, p, b in MODELS}


def _histogram_bytes(n: int) -> bytes:
    rng = np.random.default_rng(n)
    stats = {
        f"conv{i}": BlobHistogram(
            counts=rng.integers(0, 1000, 2048, dtype=np.uint64),
            absmax=np.float32(i + 0.5),
            elements_per_sample=10 * i + 1,
        )
        for i in range(n)
    }
    return histograms_to_bytes(
        HistogramSet(
            blobs={k: f"{k}_in" for k in stats},
            stats=stats,
            meta={"param": "model.param", "n_samples": 3},
        )
    )


HISTOGRAMS = [_histogram_bytes(0), _histogram_bytes(2)]
SHARD_INPUTS = (
    InputDesc("in0", "image", "GRAY", (0.0,), (1 / 255,), (8, 8)),
    InputDesc("in1", "npy", shape=(4, 3, 2)),
)


def _shard_bytes() -> bytes:
    rng = np.random.default_rng(0)
    samples = [
        (
            rng.integers(0, 256, (5 if i < 2 else 7, 6, 3), dtype=np.uint8),
            rng.standard_normal((2, 3, 4)).astype(np.float32),
        )
        for i in range(4)
    ]
    with tempfile.TemporaryDirectory() as d:
        write_shard(Path(d, "s.npz"), samples, SHARD_INPUTS, block_bytes=400)
        return Path(d, "s.npz").read_bytes()


SHARD = _shard_bytes()

VALID_REQUESTS = [
    Request(op="hello", job_id="j1").to_dict(),
    Request(op="sleep", job_id="j-2", params=SleepParams(0.5)).to_dict(),
    Request(
        op="histogram",
        job_id="20260101T000000-1-00001-histogram",
        params=CaptureParams(
            model=ModelFiles("models/m.param", "models/m.bin"),
            inputs=SHARD_INPUTS,
            shards=("shards/s0.npz", "shards/s1.npz"),
            blobs=("conv0", "relu0"),
            threads=2,
            absmax={"conv0": 1.5, "relu0": 3.0},
        ),
    ).to_dict(),
    Request(
        op="eq_layer",
        job_id="eq.1",
        params=EqLayerParams(
            model=ModelFiles("m.param", "m.bin"),
            inputs=SHARD_INPUTS[:1],
            shards=("s.npz",),
            bottom="in0",
            top="conv0",
            max_samples=7,
        ),
    ).to_dict(),
]
VALID_RESPONSES = [
    Response(
        op="absmax",
        job_id="j1",
        ok=True,
        agent_version="0.2.1",
        result={"n_samples": 4, "blobs": ["a"]},
        artifacts={"absmax.npz": Artifact("absmax.npz", "0" * 64)},
        timing_s={"total": 0.25, "load": 0.01},
        ru_maxrss_kb=12345,
    ).to_dict(),
    Response(
        op="run",
        job_id="j1",
        ok=False,
        agent_version="0.2.1",
        error=ErrorInfo("BlobNotFound", "no blob 'x'", "Traceback ..."),
    ).to_dict(),
]

# -- mutations -----------------------------------------------------------------------------------
NUMBERS = [
    "0",
    "1",
    "-1",
    "-2",
    "2147483647",
    "-2147483648",
    "4294967296",
    "-23300",
    "99999999999999999999999999999999",
    "9" * 400,
    "9" * 4400,
    "1e999999999",
    "-1e999999999",
    "1e-999999999",
    "1e39",
    "-1e39",
    "1e308",
    "1e-45",
    "3.4e38",
    "nan",
    "-nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1.5",
    "-0.0",
    "0x10",
    "1_0",
    "\u0663",
    "1e",
    ".",
    "-",
    "+",
    "e5",
]
JUNK = [
    "",
    " ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\x00",
    "\x85",
    "\u2028",
    "\ufeff",
    "é",
    "名前",
    "\udcff",
    "=",
    ",",
    "[",
    "]",
    "[]",
    '"',
    "'",
    "#",
    "\\",
    ":",
    "..",
    "/",
    "-23301=3,1,2",
    "-23330=-5,1",
    "7767517",
    "PK\x03\x04",
    "\x93NUMPY",
    "{",
    "}",
    "_param_",
    "file,label",
]
LAYER_TYPES = [
    "Convolution",
    "ConvolutionDepthWise",
    "InnerProduct",
    "LSTM",
    "GRU",
    "RNN",
    "MultiHeadAttention",
    "Gemm",
    "MemoryData",
    "Embed",
    "Scale",
    "BatchNorm",
    "Deconvolution",
    "Convolution3D",
    "Requantize",
    "Padding",
    "Input",
    "Split",
    "NoSuchLayer",
    "",
]
TOKENS = NUMBERS + JUNK + LAYER_TYPES
U32 = [
    0,
    1,
    0xFFFFFFFF,
    0x7FFFFFFF,
    0x80000000,
    0x01306B47,
    0x000D4B38,
    0x0002C056,
    0x7FC00000,
    0x7F800000,
    0xFF800000,
    0x04034B50,
    0x02014B50,
    0x06054B50,
]
_SPLIT = re.compile(r"(\s+|[=,\[\]:\"'{}()])")

any_text = st.lists(st.characters(codec="utf-8") | st.sampled_from(TOKENS), max_size=80).map(
    "".join
)
byte_tokens = st.sampled_from([t.encode("utf-8", "surrogateescape") for t in TOKENS])


def _index(draw: st.DrawFn, n: int) -> int:
    """0..n: mostly uniform (bounded ``st.integers`` favours small values, i.e. file starts)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.integers(0, n))
    return draw(st.randoms(use_true_random=False)).randint(0, n)


@st.composite
def mutated_text(draw: st.DrawFn, seed: str) -> str:
    """``seed`` with 1..5 token, line or character edits."""
    text = seed
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["token"] * 8
                + [
                    "dup_line",
                    "del_line",
                    "swap_lines",
                    "insert",
                    "insert",
                    "delete",
                    "truncate",
                    "empty",
                ]
            )
        )
        if op == "token":
            parts = _SPLIT.split(text)
            words = [i for i, p in enumerate(parts) if p and not _SPLIT.fullmatch(p)]
            if not words:
                continue
            i = draw(st.sampled_from(words))
            parts[i] = draw(st.sampled_from(TOKENS) | st.text(max_size=6) | st.integers().map(str))
            text = "".join(parts)
        elif op in ("dup_line", "del_line", "swap_lines"):
            lines = text.splitlines(keepends=True)
            if not lines:
                continue
            i = _index(draw, len(lines) - 1)
            j = _index(draw, len(lines) - 1)
            if op == "dup_line":
                lines.insert(j, lines[i])
            elif op == "del_line":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
        elif op == "insert":
            i = _index(draw, len(text))
            text = text[:i] + draw(st.sampled_from(TOKENS) | any_text) + text[i:]
        elif op == "delete":
            i = _index(draw, len(text))
            text = text[:i] + text[i + draw(st.integers(1, 40)) :]
        elif op == "truncate":
            text = text[: _index(draw, len(text))]
        else:
            text = ""
    return text


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes, hot: tuple[int, ...] = ()) -> bytes:
    """``seed`` with 1..5 byte edits; ``hot`` offsets (record starts) are hit more often."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 5))):
        n = len(data)
        pos = (
            draw(st.sampled_from(hot))
            if hot and draw(st.booleans())
            else _index(draw, max(n - 1, 0))
        )
        op = draw(
            st.sampled_from(["flip", "set", "u32", "insert", "delete", "truncate", "dup", "append"])
        )
        if op == "flip" and n:
            data[min(pos, n - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[min(pos, n - 1)] = draw(st.integers(0, 255))
        elif op == "u32":
            data[pos : pos + 4] = struct.pack(
                "<I", draw(st.sampled_from(U32) | st.integers(0, 2**32 - 1))
            )
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16) | byte_tokens)
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        else:
            data += draw(st.binary(max_size=16))
    return bytes(data)


def text_of(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def text_inputs(seeds: list[bytes]) -> st.SearchStrategy[str]:
    """Random text, token/line mutations of a seed, or byte mutations of it read as text."""
    texts = [text_of(s) for s in seeds]
    return st.one_of(
        any_text,
        st.sampled_from(texts).flatmap(mutated_text),
        st.sampled_from(seeds).flatmap(mutated_bytes).map(text_of),
    )


# -- the checks ----------------------------------------------------------------------------------
def edgecal_only(
    fn: Callable[..., Any], *args: Any, names: tuple[str, ...] = (), **kwargs: Any
) -> Any:
    """Call ``fn``; an EdgecalError is fine (and must name one of ``names``), nothing else is."""
    try:
        return fn(*args, **kwargs)
    except EdgecalError as exc:
        message = str(exc)
        assert message.strip(), f"{type(exc).__name__} without a message"
        if names:
            assert any(n in message for n in names), f"message names none of {names}: {message}"
        return exc


def agent_only(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; the agent's own error types are fine (they become error responses)."""
    try:
        return fn(*args, **kwargs)
    except (ProtocolViolation, JobError) as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return exc


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edgecal-fuzz-") as d:
        yield Path(d)


# -- .param --------------------------------------------------------------------------------------
param_seeds = [p for _, p, _ in MODELS]


@st.composite
def mutated_param(draw: st.DrawFn, seed: str) -> str:
    """Mostly edits of the layer lines (the magic and counts lines kept), sometimes anywhere."""
    if draw(st.integers(0, 3)) == 0:
        return draw(mutated_text(seed))
    lines = seed.splitlines(keepends=True)
    head = "".join(lines[:2])
    return head + draw(mutated_text("".join(lines[2:])))


@fuzz()
@given(
    text_inputs(param_seeds)
    | st.sampled_from([text_of(s) for s in param_seeds]).flatmap(mutated_param)
)
def test_parse_param(text: str) -> None:
    pf = edgecal_only(parse_param, text, "fuzz.param", names=("fuzz.param",))
    if not isinstance(pf, EdgecalError):
        pf.blob_names()
        pf.input_blobs()


# -- .bin (and .param) through load_model --------------------------------------------------------
def _load_pair(param: bytes, data: bytes) -> None:
    with scratch() as d:
        (d / "m.param").write_bytes(param)
        (d / "m.bin").write_bytes(data)
        edgecal_only(
            load_model, d / "m.param", d / "m.bin", names=(str(d / "m.param"), str(d / "m.bin"))
        )


@st.composite
def pair_with_mutated_bin(draw: st.DrawFn) -> tuple[bytes, bytes]:
    name, param, data = draw(st.sampled_from(MODELS))
    return param, draw(mutated_bytes(data, tuple(OFFSETS[name])))


@fuzz()
@given(pair_with_mutated_bin())
def test_load_model_mutated_bin(pair: tuple[bytes, bytes]) -> None:
    _load_pair(*pair)


@st.composite
def pair_with_mutated_param(draw: st.DrawFn) -> tuple[bytes, bytes]:
    _, param, data = draw(st.sampled_from(MODELS))
    if draw(st.integers(0, 4)):
        text = draw(mutated_param(param.decode()))
        return text.encode("utf-8", "surrogateescape"), data
    return draw(mutated_bytes(param)), data


@fuzz()
@given(pair_with_mutated_param())
def test_load_model_mutated_param(pair: tuple[bytes, bytes]) -> None:
    _load_pair(*pair)


# -- calibration table ---------------------------------------------------------------------------
@fuzz()
@given(text_inputs(TABLES))
def test_parse_table(text: str) -> None:
    edgecal_only(parse_table, text, "fuzz.table", names=("fuzz.table",))


# -- npy samples ---------------------------------------------------------------------------------
def _npy_file(descr: str, fortran: str, shape: str, data: bytes, version: int) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    raw = header.encode("utf-8", "surrogateescape")
    raw += b" " * (-(len(raw) + 11 + 2 * (version > 1)) % 64) + b"\n"
    size = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes([version, 0]) + size + raw + data


dims = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**40, 2**63, 2**64 + 1, 10**30]))
forged_npy = st.builds(
    _npy_file,
    descr=st.sampled_from(
        [
            "'<f4'",
            "'>f4'",
            "'<f8'",
            "'|u1'",
            "'<U3'",
            "'O'",
            "'V8'",
            "'<f2'",
            "[('a', '<f4')]",
            "'<f0'",
            "'<U999999999999'",
            "5",
            "None",
            "'xyz'",
        ]
    ),
    fortran=st.sampled_from(["False", "True", "0", "'no'"]),
    shape=st.one_of(
        st.lists(dims, max_size=4).map(lambda s: "(" + "".join(f"{d}, " for d in s) + ")"),
        st.sampled_from(
            [
                "()",
                "(3, 6, 10)",
                "[3, 6, 10]",
                "(1.5,)",
                "None",
                "'x'",
                "((1,),)",
                "(" * 50 + ")" * 50,
                "1e999",
            ]
        ),
    ),
    data=st.binary(max_size=800),
    version=st.sampled_from([1, 2, 3]),
)
npy_inputs = st.one_of(
    st.binary(max_size=300),
    forged_npy,
    mutated_bytes(NPY_SEED, (0, 8, 10)),
    st.sampled_from([b"", b"\x93NUMPY", HISTOGRAMS[1][:100], SHARD]),
)


@fuzz()
@given(npy_inputs, st.sampled_from([NPY_SPEC, InputSpec(blob="x", kind="npy")]))
def test_load_npy(data: bytes, spec: InputSpec) -> None:
    with scratch() as d:
        path = d / "s.npy"
        path.write_bytes(data)
        arr = edgecal_only(load_npy, path, spec, names=(str(path),))
        if isinstance(arr, np.ndarray):
            assert arr.dtype == np.float32


# -- list files ----------------------------------------------------------------------------------
@fuzz(0.5)
@given(
    st.sampled_from(LISTS).flatmap(
        lambda lst: st.tuples(
            st.just(lst[1]),
            st.one_of(
                st.binary(max_size=200),
                mutated_bytes(lst[0].read_bytes()),
                mutated_text(lst[0].read_text()).map(
                    lambda t: t.encode("utf-8", "surrogateescape")
                ),
            ),
        )
    ),
    st.booleans(),
)
def test_read_list(case: tuple[Path, bytes], ncnn_compat: bool) -> None:
    folder, data = case
    with scratch() as d:
        path = d / "list.txt"
        path.write_bytes(data)
        with contextlib.chdir(folder):
            paths = edgecal_only(read_list, path, ncnn_compat=ncnn_compat, names=(str(path),))
            if isinstance(paths, list):
                spec = InputSpec(blob="in0")
                edgecal_only(make_sample_source, [spec], [paths])


# -- labels CSV ----------------------------------------------------------------------------------
@fuzz()
@given(text_inputs(LABELS))
def test_parse_labels(text: str) -> None:
    edgecal_only(parse_labels, text, "fuzz.csv", names=("fuzz.csv",))


# -- histogram files -----------------------------------------------------------------------------
npy_members = st.one_of(
    forged_npy,
    st.sampled_from(
        [
            np.int64(1),
            np.array([1, 2]),
            np.array("x"),
            np.array(["a", "b"]),
            np.zeros((2, 2048), np.uint64),
            np.zeros((0, 2048)),
            np.array(1.5),
            np.array(-1),
            np.array('{"a": 1}'),
            np.array("[" * 5000),
            np.zeros(3, np.float32),
            np.array([b"xy"]),
        ]
    ).map(lambda a: _npy_bytes(a)),
)


def _npy_bytes(arr: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@st.composite
def mutated_npz(draw: st.DrawFn, seed: bytes) -> bytes:
    """Either raw byte edits of the archive, or a well-formed zip with edited members."""
    if draw(st.booleans()):
        return draw(mutated_bytes(seed))
    with zipfile.ZipFile(io.BytesIO(seed)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    for _ in range(draw(st.integers(1, 3))):
        names = sorted(members)
        op = draw(st.sampled_from(["replace", "mutate", "delete", "add"]))
        if op == "add" or not names:
            members[draw(st.sampled_from([*names, "x.npy", "schema.npy", "extra"]))] = draw(
                npy_members | st.binary(max_size=40)
            )
            continue
        name = draw(st.sampled_from(names))
        if op == "replace":
            members[name] = draw(npy_members)
        elif op == "mutate":
            members[name] = draw(mutated_bytes(members[name], (0, 8, 10)))
        else:
            del members[name]
    buf = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@fuzz()
@given(
    st.one_of(
        st.binary(max_size=200),
        st.sampled_from([NPY_SEED, b""]),
        st.sampled_from(HISTOGRAMS).flatmap(mutated_npz),
    )
)
def test_load_histograms(data: bytes) -> None:
    with scratch() as d:
        path = d / "h.npz"
        path.write_bytes(data)
        edgecal_only(load_histograms, path, names=(str(path),))


# -- boards files and profiles -------------------------------------------------------------------
@fuzz(0.5)
@given(
    text_inputs([BOARDS_TEXT])
    | st.binary(max_size=100).map(text_of)
    | st.just("schema = 1\na = " + "[" * 3000 + "]" * 3000)
)
def test_load_boards(text: str) -> None:
    with scratch() as d:
        path = d / "boards.toml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        edgecal_only(load_boards, path, names=(str(path),))
        edgecal_only(load_group, path, "fleet", names=(str(path),))


@fuzz(0.5)
@given(
    st.sampled_from(sorted(PROFILE_TEXTS)).flatmap(
        lambda name: st.tuples(st.just(name), text_inputs([PROFILE_TEXTS[name]]))
    )
)
def test_load_profile(case: tuple[str, str]) -> None:
    name, text = case
    with scratch() as d:
        path = d / f"{name}.toml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        edgecal_only(load_profile, name, d, names=(str(path),))


# -- run directories -----------------------------------------------------------------------------
def _run_json() -> bytes:
    with scratch() as d:
        RunDir.create(d, "validate", ["edgecal", "validate", "m.param"], {"param": "0" * 64})
        return (d / RUN_JSON).read_bytes()


RUN_JSON_SEED = _run_json()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@fuzz(0.5)
@given(
    st.one_of(
        text_inputs([RUN_JSON_SEED]).map(lambda t: t.encode("utf-8", "surrogateescape")),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.just(b"[" * 100000 + b"]" * 100000),
        st.just(b"9" * 5000),
    )
)
def test_run_dir(data: bytes) -> None:
    with scratch() as d:
        (d / RUN_JSON).write_bytes(data)
        run = edgecal_only(RunDir.open, d, names=(str(d),))
        edgecal_only(RunDir.create, d, "tune", ["edgecal", "tune"], names=(str(d),))
        if isinstance(run, RunDir):
            edgecal_only(run.read_json, RUN_JSON, names=(str(d),))


# -- ncnn2table key=value arguments --------------------------------------------------------------
@fuzz(0.5)
@given(
    st.one_of(
        st.lists(st.text(max_size=20), max_size=8),
        st.sampled_from(NCNN2TABLE_ARGV).flatmap(mutated_text).map(str.split),
        st.sampled_from(NCNN2TABLE_ARGV)
        .map(str.split)
        .flatmap(
            lambda argv: st.tuples(
                st.just(argv), st.integers(0, len(argv) - 1), st.sampled_from(TOKENS)
            )
        )
        .map(lambda c: [*c[0][: c[1]], c[0][c[1]].split("=")[0] + "=" + c[2], *c[0][c[1] + 1 :]]),
    )
)
def test_parse_ncnn2table(argv: list[str]) -> None:
    edgecal_only(parse_ncnn2table, argv)


# -- agent messages ------------------------------------------------------------------------------
@st.composite
def mutated_message(draw: st.DrawFn, seed: Any) -> Any:
    """A JSON-like message with 1..4 values replaced, keys removed or added, deep in the tree."""
    msg = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, 4))):
        node, path = msg, []
        while isinstance(node, (dict, list)) and node and (not path or draw(st.integers(0, 2))):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            path.append((node, key))
            node = node[key]
        if not path:
            msg = draw(json_values)
            continue
        parent, key = path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent[key] = draw(
                json_values
                | st.sampled_from(
                    [
                        10**400,
                        -(10**400),
                        float("nan"),
                        float("inf"),
                        "",
                        "../x",
                        "/abs",
                        "a\x00b",
                        2**63,
                        -1,
                        0,
                        True,
                        [],
                        {},
                        "\udcff",
                    ]
                )
            )
    return msg


@fuzz()
@given(st.one_of(json_values, st.sampled_from(VALID_REQUESTS).flatmap(mutated_message)))
def test_agent_parses_requests(raw: Any) -> None:
    agent_only(Request.from_dict, raw)


@fuzz()
@given(st.one_of(json_values, st.sampled_from(VALID_RESPONSES).flatmap(mutated_message)))
def test_agent_protocol_parses_responses(raw: Any) -> None:
    agent_only(Response.from_dict, raw)


@fuzz(0.5)
@given(
    st.one_of(
        json_values, st.sampled_from([d.to_dict() for d in SHARD_INPUTS]).flatmap(mutated_message)
    )
)
def test_agent_parses_input_descriptions(raw: Any) -> None:
    agent_only(InputDesc.from_dict, raw)


def _response_texts() -> st.SearchStrategy[str]:
    valid = [json.dumps(r) for r in VALID_RESPONSES]
    return st.one_of(
        any_text,
        st.sampled_from(VALID_RESPONSES)
        .flatmap(mutated_message)
        .map(lambda m: json.dumps(m, allow_nan=True)),
        st.sampled_from(valid).flatmap(mutated_text),
        st.sampled_from(["[" * 100000 + "]" * 100000, "9" * 5000, '{"protocol": 1e999}']),
    )


@fuzz()
@given(_response_texts())
def test_host_parses_responses(raw: str) -> None:
    edgecal_only(parse_response, raw, "board-a", "j1", names=("board-a",))


@fuzz()
@given(
    st.one_of(
        st.binary(max_size=200), st.sampled_from([NPY_SEED, HISTOGRAMS[1]]), mutated_npz(SHARD)
    )
)
def test_agent_reads_shards(data: bytes) -> None:
    with scratch() as d:
        path = d / "s.npz"
        path.write_bytes(data)
        info = agent_only(read_shard_info, path)
        if isinstance(info, ProtocolViolation):
            return
        agent_only(lambda: sum(1 for _ in iter_shard(path, info)))


@fuzz(0.5)
@given(
    st.one_of(st.binary(max_size=200), st.sampled_from([*HISTOGRAMS, SHARD]).flatmap(mutated_npz))
)
def test_agent_loads_npz(data: bytes) -> None:
    """Every member of any npz reads as an array or fails with ProtocolViolation/KeyError."""
    with scratch() as d:
        path = d / "a.npz"
        path.write_bytes(data)
        npz = agent_only(load_npz, path)
        if isinstance(npz, ProtocolViolation):
            return
        with npz:
            for name in list(npz.files):
                agent_only(lambda n=name: npz[n])
