"""The agent's wire format and job-dir mechanics, without ncnn work (except ``hello``)."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import edgecal_agent
from edgecal.device.jobs import parse_response
from edgecal.device.package import agent_zipapp_bytes, agent_zipapp_name, build_agent_zipapp
from edgecal.errors import ProtocolError
from edgecal_agent import PROTOCOL_VERSION, fileio, server
from edgecal_agent.jobs import cpu_features
from edgecal_agent.messages import (
    Artifact,
    CaptureParams,
    ErrorInfo,
    InputDesc,
    ModelFiles,
    ProtocolMismatch,
    ProtocolViolation,
    Request,
    Response,
    SleepParams,
    check_relpath,
)
from edgecal_agent.npzio import NpzWriter, load_npz, names_array
from edgecal_agent.shards import iter_shard, read_shard_info, write_shard

ROOT = Path(__file__).resolve().parents[2]

# -- strategies ----------------------------------------------------------------------------------
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
relpaths = st.lists(
    st.from_regex(r"[a-z0-9_.-]{1,8}", fullmatch=True).filter(lambda s: s not in (".", "..")),
    min_size=1,
    max_size=3,
).map("/".join)
floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
inputs = st.builds(
    InputDesc,
    blob=names,
    kind=st.sampled_from(["image", "npy"]),
    pixel=st.sampled_from(["BGR", "RGB", "GRAY", "RGBA", "BGRA"]),
    mean=st.lists(floats32, max_size=4).map(tuple),
    norm=st.lists(floats32, max_size=4).map(tuple),
    shape=st.lists(st.integers(-1, 4096), max_size=4).map(tuple),
)
capture_params = st.builds(
    CaptureParams,
    model=st.builds(ModelFiles, param=relpaths, bin=relpaths),
    inputs=st.lists(inputs, min_size=1, max_size=3).map(tuple),
    shards=st.lists(relpaths, max_size=4).map(tuple),
    blobs=st.lists(names, max_size=6).map(tuple),
    runtime=st.sampled_from(["calibration", "deployed"]),
    threads=st.integers(1, 64),
    absmax=st.none() | st.dictionaries(names, floats32, max_size=4),
)
job_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


@given(params=capture_params, job_id=job_ids, op=st.sampled_from(["absmax", "run"]))
def test_request_round_trips_through_json(params: CaptureParams, job_id: str, op: str) -> None:
    request = Request(op=op, job_id=job_id, params=params)
    again = Request.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request


@given(
    ok=st.booleans(),
    result=st.dictionaries(names, st.integers() | names | floats32, max_size=4),
    artifacts=st.dictionaries(
        names,
        st.builds(Artifact, file=relpaths, sha256=st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
        max_size=3,
    ),
    rss=st.integers(0, 2**40),
)
def test_response_round_trips_through_json(
    ok: bool, result: dict, artifacts: dict, rss: int
) -> None:
    response = Response(
        op="absmax",
        job_id="j1",
        ok=ok,
        agent_version="0.1.0",
        result=result,
        artifacts=artifacts if ok else {},
        error=None if ok else ErrorInfo("BlobNotFound", "no blob", "tb"),
        timing_s={"total": 0.5},
        ru_maxrss_kb=rss,
    )
    assert Response.from_dict(json.loads(json.dumps(response.to_dict()))) == response


@pytest.mark.parametrize(
    "bad",
    [
        {"protocol": PROTOCOL_VERSION, "op": "nope", "job_id": "a"},
        {"protocol": PROTOCOL_VERSION, "op": "hello", "job_id": "../x"},
        {
            "protocol": PROTOCOL_VERSION,
            "op": "histogram",
            "job_id": "a",
            "params": {
                "model": {"param": "m.param", "bin": "m.bin"},
                "inputs": [{"blob": "in0"}],
                "shards": [],
                "blobs": ["in0"],
            },
        },  # histogram without absmax
        {
            "protocol": PROTOCOL_VERSION,
            "op": "absmax",
            "job_id": "a",
            "params": {
                "model": {"param": "/etc/passwd", "bin": "m.bin"},
                "inputs": [{"blob": "in0"}],
                "shards": [],
                "blobs": [],
            },
        },
        {
            "protocol": PROTOCOL_VERSION,
            "op": "absmax",
            "job_id": "a",
            "params": {
                "model": {"param": "m.param", "bin": "m.bin"},
                "inputs": [{"blob": "in0"}],
                "shards": [],
                "blobs": [],
                "threads": True,
            },
        },
        {"protocol": PROTOCOL_VERSION, "op": "sleep", "job_id": "a", "params": {"seconds": -1}},
    ],
)
def test_request_validation_refuses(bad: dict) -> None:
    with pytest.raises(ProtocolViolation):
        Request.from_dict(bad)


@pytest.mark.parametrize("path", ["", "/abs", "a/../../b", "..", "a\\b"])
def test_relpath_refuses_escapes(path: str) -> None:
    with pytest.raises(ProtocolViolation):
        check_relpath(path, "x")


# -- versions ------------------------------------------------------------------------------------
def test_other_major_protocol_is_refused_naming_both_versions() -> None:
    other = PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolMismatch) as info:
        Request.from_dict({"protocol": other, "op": "hello", "job_id": "a"})
    assert f"protocol {other}" in str(info.value)
    assert f"protocol {PROTOCOL_VERSION}" in str(info.value)


def test_agent_answers_other_protocol_with_a_mismatch_error(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "j1"
    job.mkdir(parents=True)
    (job / "request.json").write_text(
        json.dumps({"protocol": PROTOCOL_VERSION + 1, "op": "hello", "job_id": "j1"})
    )
    response = server.run_job(str(tmp_path), "j1", io.StringIO())
    assert not response.ok and response.error is not None
    assert response.error.kind == "ProtocolMismatch"
    assert str(PROTOCOL_VERSION + 1) in response.error.message
    assert (job / "response.json").exists()


def test_agent_answers_a_too_deeply_nested_request_with_bad_request(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "j1"
    job.mkdir(parents=True)
    (job / "request.json").write_text(
        '{"op": "hello", "job_id": "j1", "params": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    response = server.run_job(str(tmp_path), "j1", io.StringIO())
    assert response.error is not None and response.error.kind == "BadRequest"


def test_eq_layer_with_an_empty_bottom_scale_is_a_bad_request(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "j1"
    job.mkdir(parents=True)
    (job / "probe.param").write_text("7767517\n0 0\n")
    (job / "probe.bin").write_bytes(b"")
    np.savez(
        job / "cand.npz",
        candidates=np.ones((2, 3), np.float32),
        weight_scales=np.ones(1, np.float32),
        bottom_scale=np.zeros(0, np.float32),
    )
    request = {
        "protocol": PROTOCOL_VERSION,
        "op": "eq_layer",
        "job_id": "j1",
        "params": {
            "model": {"param": "m.param", "bin": "m.bin"},
            "inputs": [],
            "shards": [],
            "layer": "conv",
            "bottom": "a",
            "top": "b",
            "probe_param": "probe.param",
            "probe_prefix": "probe.bin",
            "candidates": "cand.npz",
        },
    }
    (job / "request.json").write_text(json.dumps(request))
    response = server.run_job(str(tmp_path), "j1", io.StringIO())
    assert response.error is not None, response
    assert response.error.kind == "BadRequest", response.error.message
    assert "bottom_scale" in response.error.message or "index" in response.error.message


def test_host_refuses_response_of_other_protocol() -> None:
    raw = Response(op="hello", job_id="j1", ok=True).to_dict()
    raw["protocol"] = PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError) as info:
        parse_response(json.dumps(raw), "board-a", "j1")
    assert "board-a" in str(info.value)
    assert str(PROTOCOL_VERSION + 1) in str(info.value) and str(PROTOCOL_VERSION) in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        "[]",
        '{"protocol": 1}',
        '{"protocol": 1, "op": "hello", "job_id": "j1", "ok": "yes"}',
    ],
)
def test_host_reports_malformed_response(raw: str) -> None:
    with pytest.raises(ProtocolError):
        parse_response(raw, "board-a", "j1")


# -- npz -----------------------------------------------------------------------------------------
def test_npz_writer_never_pickles(tmp_path: Path) -> None:
    with pytest.raises(ProtocolViolation), NpzWriter(tmp_path / "a.npz") as w:
        w.add("x", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "a.npz").exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_load_npz_refuses_pickled_members(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with load_npz(path) as npz, pytest.raises(ValueError, match="allow_pickle"):
        npz["x"]


def test_load_npz_refuses_a_zip_bomb_member(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros(80 << 20, np.uint8))  # 80 MiB in ~80 KiB
    assert bomb.stat().st_size < 1 << 20
    with load_npz(bomb) as npz, pytest.raises(ProtocolViolation, match="zip bomb"):
        npz["x"]
    fine = tmp_path / "fine.npz"
    np.savez_compressed(fine, x=np.zeros(1 << 20, np.uint8))  # small: any ratio is fine
    with load_npz(fine) as npz:
        assert npz["x"].size == 1 << 20


def test_blob_names_are_data_not_member_names(tmp_path: Path) -> None:
    blobs = ["../evil", "conv/1", "名前", "x.npy"]
    with NpzWriter(tmp_path / "a.npz") as w:
        w.add("names", names_array(blobs))
    assert zipfile.ZipFile(tmp_path / "a.npz").namelist() == ["names.npy"]
    with load_npz(tmp_path / "a.npz") as npz:
        assert [str(n) for n in npz["names"]] == blobs


def test_shard_round_trip_keeps_samples_and_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    descs = [
        InputDesc("in0", "image", "GRAY", (0.0,), (1.0,), (8, 8)),
        InputDesc("in1", "npy", shape=(4, 3, 2)),
    ]
    samples = []
    for i in range(7):
        rows = 5 if i < 3 else 9  # a shape change starts a new block
        samples.append(
            (
                rng.integers(0, 256, (rows, 6, 3), dtype=np.uint8),
                rng.standard_normal((2, 3, 4)).astype(np.float32),
            )
        )
    write_shard(tmp_path / "s.npz", samples, descs, block_bytes=600)
    info = read_shard_info(tmp_path / "s.npz")
    assert info.inputs == tuple(descs) and info.n_samples == 7 and len(info.block_sizes) > 2
    got = list(iter_shard(tmp_path / "s.npz", info))
    assert len(got) == 7
    for (a, b), (ga, gb) in zip(samples, got, strict=True):
        np.testing.assert_array_equal(a, ga)
        np.testing.assert_array_equal(b, gb)


def test_shard_of_varied_image_sizes_is_one_ragged_block(tmp_path: Path) -> None:
    """Images of different sizes share a block (flat + shapes): one member per input, not
    one per sample; the samples come back equal, in order."""
    rng = np.random.default_rng(1)
    descs = [InputDesc("in0", "image", "BGR", (0.0,) * 3, (1.0,) * 3, (8, 8))]
    samples = [(rng.integers(0, 256, (3 + i % 4, 5 + i, 3), dtype=np.uint8),) for i in range(9)]
    write_shard(tmp_path / "s.npz", samples, descs)
    info = read_shard_info(tmp_path / "s.npz")
    assert info.block_sizes == (9,)
    members = zipfile.ZipFile(tmp_path / "s.npz").namelist()
    assert "b00000_0_shapes.npy" in members and "b00000_0.npy" in members
    got = list(iter_shard(tmp_path / "s.npz", info))
    assert len(got) == 9
    for (a,), (g,) in zip(samples, got, strict=True):
        np.testing.assert_array_equal(a, g)


@pytest.mark.parametrize(
    "shapes",
    [
        [[2, 2, 3], [1, 1, 3]],  # too few elements for the shapes
        [[1, 1, 3]],  # fewer shapes than samples
        [[-1, 2, 3], [1, 1, 3]],
        [[1, 1, 3], [1, 1, 3], [1, 1, 3]],  # more shapes than samples
        [[1 << 40, 1 << 40, 0], [1, 1, 3]],  # dimensions whose product overflows
    ],
)
def test_a_malformed_ragged_block_is_a_protocol_violation(
    tmp_path: Path, shapes: list[list[int]]
) -> None:
    descs = [InputDesc("in0", "image", "BGR", (0.0,) * 3, (1.0,) * 3, (8, 8))]
    with NpzWriter(tmp_path / "s.npz") as w:
        w.add("schema", np.int64(1))
        w.add("inputs", np.array(json.dumps([d.to_dict() for d in descs], sort_keys=True)))
        w.add("n_samples", np.int64(2))
        w.add("block_sizes", np.array([2], dtype=np.int64))
        w.add("b00000_0", np.zeros(9, np.uint8))
        w.add("b00000_0_shapes", np.array(shapes, dtype=np.int64))
    info = read_shard_info(tmp_path / "s.npz")
    with pytest.raises(ProtocolViolation):
        list(iter_shard(tmp_path / "s.npz", info))


# -- atomic response -----------------------------------------------------------------------------
def test_response_is_written_atomically_and_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tmp_path / "jobs" / "j1"
    job.mkdir(parents=True)
    (job / "request.json").write_text(
        json.dumps(Request(op="sleep", job_id="j1", params=SleepParams(0.0)).to_dict())
    )

    def failing_replace(src: str, dst: str, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    with pytest.raises(OSError):
        server.run_job(str(tmp_path), "j1", io.StringIO())
    assert sorted(p.name for p in job.iterdir()) == ["request.json"]  # nothing half-written
    monkeypatch.undo()
    response = server.run_job(str(tmp_path), "j1", io.StringIO())
    assert response.ok
    assert Response.from_dict(json.loads((job / "response.json").read_text())) == response
    assert response.ru_maxrss_kb > 0


# -- hello facts, packaging, layering --------------------------------------------------------------
def test_cpu_features_from_arm_and_x86_cpuinfo() -> None:
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimdhp asimddp i8mm fphp\n"
    x86 = "flags\t\t: fpu sse2 avx avx2 fma f16c avx512f\n"
    assert cpu_features(arm) == ["asimd", "asimdhp", "asimddp", "fphp", "i8mm"]
    assert cpu_features(x86) == ["sse2", "avx", "avx2", "fma", "f16c", "avx512f"]
    assert cpu_features("") == []


def test_zipapp_is_deterministic_and_named_by_its_hash(tmp_path: Path) -> None:
    data = agent_zipapp_bytes()
    assert data == agent_zipapp_bytes()
    path = build_agent_zipapp(tmp_path)
    assert path.name == agent_zipapp_name(data) and path.read_bytes() == data
    names = zipfile.ZipFile(path).namelist()
    modules = {f"edgecal_agent/{p.name}" for p in Path(edgecal_agent.__file__).parent.glob("*.py")}
    assert "__main__.py" in names and {
        "edgecal_agent/messages.py",
        "edgecal_agent/npzio.py",
        "edgecal_agent/shards.py",
    } <= modules <= set(names)
    assert not any("__pycache__" in n or "edgecal/" in n for n in names)


def test_zipapp_runs_hello(tmp_path: Path) -> None:
    path = build_agent_zipapp(tmp_path)
    out = subprocess.run(
        [sys.executable, str(path), "hello"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["protocol"] == PROTOCOL_VERSION and info["ncnn_ok"] is True


def test_edgecal_agent_imports_only_stdlib_numpy_ncnn() -> None:
    allowed = {"numpy", "ncnn", "edgecal_agent"}
    for path in (ROOT / "edgecal_agent").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{path.name}: {mod}"
