"""One set of assertions for every Device kind (see conftest.DEVICE_KINDS)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import ncnn
import numpy as np
import pytest
from refcases import (
    REFERENCE,
    Case,
    capture_absmax,
    capture_histograms,
    load_case,
    read_bgr,
)

from edgecal.calib.eq import pick_pruned
from edgecal.calib.table import CalibrationTable, parse_table
from edgecal.device.base import Device
from edgecal.device.capture import (
    Comparison,
    FedVariant,
    Workload,
    absmax_request,
    eq_search_layer,
    run_outputs,
    run_shard_compared,
    run_shard_variants,
    write_shards,
)
from edgecal.device.probe import native_target
from edgecal.device.ssh.device import SshDevice
from edgecal.errors import AgentCrash, AgentError, DeviceError
from edgecal.fleet.scheduler import JOB_ERRORS, _board_fault
from edgecal.inputs.model import load_model
from edgecal.inputs.spec import InputSpec
from edgecal.int8.convert import QuantizedModel, quantize_layers
from edgecal.int8.delta import bin_patch, delta
from edgecal.quality.sensitivity import quantized_layer_names
from edgecal.quality.validation import quantized_layers
from edgecal_agent import PROTOCOL_VERSION
from edgecal_agent.messages import EQ_PRUNE_SLACK
from edgecal_agent.stats import PAIR_SUMS, pair_sums


def is_board(device: Device) -> bool:
    """An emulated board (conftest.BOARD_KINDS): its agent and work directory are not on this
    machine, and qemu makes it slow."""
    return isinstance(device, SshDevice) and device.name != "loopback"


class WorkdirView:
    """The device's work directory as the tests touch it behind the host's back: this
    machine's files (the local kinds, and the loopback ``ssh`` kind whose "board" is this
    host), else the board's, over its SFTP and shell.  Paths are relative to the workdir."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.board = is_board(device)
        #: the emulated phone: its work directory seen from this host (its root folder)
        self.phone = getattr(device, "host_view", None) is not None
        self.root = str(host_view(device))

    def _own(self, path: str) -> None:
        """On the phone: what the test made belongs to the phone's user, as the agent's do."""
        if self.phone:
            own_like_workdir(self.device, Path(path))

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def outside(self, name: str) -> str:
        """A path next to (not in) the work directory."""
        return f"{os.path.dirname(self.root)}/{name}"

    def _sftp(self):  # type: ignore[no-untyped-def]
        return self.device.link.sftp_op("a contract test")  # type: ignore[attr-defined]

    def _sh(self, *argv: str) -> None:
        res = self.device.link.run(list(argv), timeout_s=60)  # type: ignore[attr-defined]
        assert res.exit_code == 0, res

    def exists(self, path: str) -> bool:
        if not self.board:
            return os.path.lexists(path)
        with self._sftp() as sftp:
            try:
                sftp.lstat(path)
                return True
            except FileNotFoundError:
                return False

    def is_symlink(self, path: str) -> bool:
        if not self.board:
            return os.path.islink(path)
        import stat as st

        with self._sftp() as sftp:
            return st.S_ISLNK(sftp.lstat(path).st_mode or 0)

    def read(self, path: str) -> bytes:
        if not self.board:
            return Path(path).read_bytes()
        with self._sftp() as sftp, sftp.open(path, "rb") as fh:
            return bytes(fh.read())

    def write(self, path: str, data: bytes) -> None:
        if not self.board:
            Path(path).write_bytes(data)
            self._own(path)
            return
        with self._sftp() as sftp, sftp.open(path, "wb") as fh:
            fh.write(data)

    def mkdir(self, path: str) -> None:
        if not self.board:
            Path(path).mkdir(parents=True)
            self._own(path)
            return
        self._sh("mkdir", "-p", path)

    def symlink(self, target: str, path: str) -> None:
        if not self.board:
            os.symlink(target, path)
            self._own(path)
            return
        self._sh("ln", "-s", target, path)

    def remove(self, path: str) -> None:
        if not self.board:
            Path(path).unlink(missing_ok=True)
            return
        self._sh("rm", "-f", path)

    def damage(self, path: str, offset: int) -> None:
        """Flip the byte at ``offset`` (from the end when negative), size and mtime kept."""
        data = bytearray(self.read(path))
        data[offset] ^= 0xFF
        if not self.board:
            st = os.stat(path)
            Path(path).write_bytes(bytes(data))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            return
        self._sh("cp", "-p", path, path + ".mtime")
        self.write(path, bytes(data))
        self._sh("touch", "-r", path + ".mtime", path)
        self._sh("rm", "-f", path + ".mtime")

    def kill(self, pid: int) -> None:
        """SIGKILL the agent (on the board: with its shell, its pid is the board's)."""
        if not self.board:
            kill_agent(self.device, pid)
            return
        self._sh("kill", "-9", str(pid))

    def run_job(self, job_id: str) -> None:
        """The device's own agent runs the job whose request is in place (``run-job``), as a
        second agent process would while the host is away."""
        if not self.board:
            from edgecal_agent.server import run_job as agent_run_job

            with open(os.devnull, "w") as sink:
                agent_run_job(self.root, job_id, sink)
            self._own(f"{self.root}/jobs/{job_id}")
            return
        argv = self.device.agent_argv()  # type: ignore[attr-defined]
        self._sh(*("run-job" if a == "serve" else a for a in argv), job_id)


CROSSCHECK = json.loads((REFERENCE / "crosscheck.json").read_text())


def host_view(device: Device) -> Path:
    """The device's work directory as this host sees it: the local or loopback workdir, or
    the emulated phone's folder under its root (``host_view``, set by conftest)."""
    return Path(getattr(device, "host_view", None) or str(device.workdir))  # type: ignore[attr-defined]


def own_like_workdir(device: Device, *paths: Path) -> None:
    """Give what a test made in the work directory to the device's user (the phone's shell
    user is not the host's): the agent and the host's cleanup then treat it as their own."""
    st = host_view(device).stat()
    for top in paths:
        for p in [top, *(top.rglob("*") if top.is_dir() and not top.is_symlink() else [])]:
            os.lchown(p, st.st_uid, st.st_gid)


def kill_agent(device: Device, pid: int) -> None:
    """SIGKILL the device's agent: a pid of this host, or of the phone (killed there)."""
    link = getattr(device, "link", None)
    if link is not None and hasattr(link, "kill_remote"):
        link.kill_remote(pid)
    else:
        os.kill(pid, signal.SIGKILL)


def exact_expected(device: Device, case: str) -> bool:
    """Whether this device must reproduce the reference bit for bit.

    The reference ran ncnn's AVX-512 kernels (README section 1).  ncnn's fp32 kernels round
    differently by a few ulp on another ISA (README section 5).  Measured on an AVX2-only
    x86 host: npy and multi still match exactly, digits' convolutions differ by <= 6 ulp.
    Where exactness is not expected, closeness is asserted instead.
    The native agent links its own build of the same ncnn version (another compiler, other
    contractions): measured here, digits' convolutions differ from the wheel's by a few ulp.
    """
    info = device.hello()
    features = set(info["cpu_features"])
    if info["machine"] not in ("x86_64", "AMD64"):
        return False
    if info.get("agent_kind") == "native":
        return case in ("npy", "multi")
    return "avx512f" in features or case in ("npy", "multi")


def logged_max(case: str) -> dict[str, str]:
    """layer -> the ``max = `` text ncnn2table printed (6 decimals)."""
    text = (REFERENCE / case / "logs" / "ncnn2table_kl.stderr").read_text()
    return dict(re.findall(r"^(\S+)\s+: max = (\S+)", text, re.M))


# -- hello / push --------------------------------------------------------------------------------
def test_hello_reports_protocol_and_versions(device: Device) -> None:
    info = device.hello()
    assert info["protocol"] == PROTOCOL_VERSION
    assert info["ncnn_ok"] is True
    if info["agent_kind"] == "native":
        # the ncnn it links (its version as that build stamped it); no Python, no numpy
        from edgecal.native.build import host_ncnn_version

        assert info["ncnn"] == host_ncnn_version()
        assert info["python"] is None and info["numpy"] is None
        assert info["target"] == native_target(info["machine"])  # x86_64, aarch64, armv7
    else:
        assert info["agent_kind"] == "python"
        assert info["ncnn"] == ncnn.__version__
        assert info["numpy"] == np.__version__
        assert info["python"]
    for key in ("agent_version", "machine", "cores", "cpu_features"):
        assert info[key], key


def test_push_skips_upload_when_hash_matches(device: Device, tmp_path: Path) -> None:
    src = tmp_path / "model.param"
    src.write_bytes(os.urandom(4096))
    before = device.bytes_pushed
    rel = device.push(src)
    assert device.bytes_pushed == before + 4096
    assert device.push(src) == rel
    assert device.bytes_pushed == before + 4096  # skipped
    src.write_bytes(os.urandom(4096))  # new content -> new address, uploaded
    assert device.push(src) != rel
    assert device.bytes_pushed == before + 8192


def test_push_reuploads_a_corrupted_copy(device: Device, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"x" * 100)
    rel = device.push(src)
    view = WorkdirView(device)
    stored = view.path(rel)
    assert view.exists(stored)
    view.write(stored, b"y" * 100)
    before = device.bytes_pushed
    assert device.push(src) == rel
    assert device.bytes_pushed == before + 100
    assert view.read(stored) == b"x" * 100


def test_discard_removes_a_pushed_file_and_the_next_push_uploads_it(
    device: Device, tmp_path: Path
) -> None:
    kept, dropped = tmp_path / "kept.bin", tmp_path / "variant.bin"
    kept.write_bytes(os.urandom(300))
    dropped.write_bytes(os.urandom(200))
    rel_kept, rel_dropped = device.push_many([kept, dropped])
    view = WorkdirView(device)
    folder = view.path(rel_dropped.rpartition("/")[0])
    assert view.exists(view.path(rel_dropped))
    device.discard([dropped, tmp_path / "never-pushed.bin"])
    assert not view.exists(view.path(rel_dropped)) and not view.exists(folder)
    assert view.exists(view.path(rel_kept))  # only what was named
    device.discard([dropped])  # gone already: passed over
    before = device.bytes_pushed
    assert device.push(dropped) == rel_dropped
    assert device.bytes_pushed == before + 200
    assert view.read(view.path(rel_dropped)) == dropped.read_bytes()


def test_a_damaged_input_is_refused_removed_and_pushed_again(
    device: Device, cases: dict[str, Case], tmp_path: Path
) -> None:
    """Uploads are checked where they are used: the agent hashes a pushed input against the
    sha256 it was pushed under.  A copy damaged in place after the push (same size and mtime,
    which the host's cheap checks on a board cannot see) fails the job as a board fault and is
    removed; the next push uploads it again."""
    case = cases["digits"]
    shard = write_shards(case.samples[:3], case.specs, tmp_path)[0]
    params = absmax_request(device, Workload(case.param, case.bin, case.specs, [shard], case.blobs))
    rel = params["shards"][0]
    view = WorkdirView(device)
    stored = view.path(rel)
    assert view.exists(stored)
    view.damage(stored, -40)
    with pytest.raises(AgentError) as info:
        device.run_job("absmax", params)
    assert info.value.kind == "InputCorrupt" and info.value.kind not in JOB_ERRORS
    assert rel in str(info.value) and device.name in str(info.value)
    assert not view.exists(stored)
    got = capture_absmax(device, case.param, case.bin, case.specs, [shard], case.blobs)
    assert view.read(stored) == shard.read_bytes() and set(got) == set(case.blobs)


# -- capture against the reference ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["digits", "npy", "multi"])
def test_capture_absmax_reproduces_reference(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]], name: str
) -> None:
    case = cases[name]
    got = capture_absmax(device, case.param, case.bin, case.specs, case_shards[name], case.blobs)
    assert list(got) == list(case.blobs)
    printed = logged_max(name)
    for layer, blob in zip(case.layers, case.blobs, strict=True):
        ref = CROSSCHECK[name][layer]
        absmax, per_sample = got[blob]
        assert isinstance(absmax, np.float32)
        assert per_sample == ref["elements_per_sample"]
        if exact_expected(device, name):
            assert absmax.tobytes()[::-1].hex() == ref["absmax_float32_hex"], layer
            assert f"{absmax:f}" == printed[layer], layer
        else:
            assert absmax == pytest.approx(ref["absmax"], rel=2e-6), layer
            assert float(absmax) == pytest.approx(float(printed[layer]), abs=2e-5), layer


@pytest.mark.parametrize("name", ["digits", "npy", "multi"])
def test_histograms_reproduce_reference(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]], name: str
) -> None:
    case = cases[name]
    ranges = {
        blob: CROSSCHECK[name][layer]["absmax"]
        for layer, blob in zip(case.layers, case.blobs, strict=True)
    }
    got = capture_histograms(
        device, case.param, case.bin, case.specs, case_shards[name], case.blobs, ranges
    )
    for layer, blob in zip(case.layers, case.blobs, strict=True):
        ref = CROSSCHECK[name][layer]
        expected = np.zeros(2048, np.uint64)
        expected[ref["histogram_bins"]] = ref["histogram_counts"]
        counts = got[blob]
        assert counts.dtype == np.uint64 and counts.shape == (2048,)
        if exact_expected(device, name):
            np.testing.assert_array_equal(counts, expected, err_msg=layer)
        else:
            # a few-ulp kernel difference moves rare values by one bin (and can push a value a
            # hair past the reference absmax into the last bin); the count of non-zeros holds
            assert counts.sum() == expected.sum(), layer
            moved = np.abs(counts.astype(np.int64) - expected.astype(np.int64)).sum()
            assert moved <= max(4, 2e-4 * expected.sum()), layer


def test_histograms_add_up_over_shards(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]]
) -> None:
    case, shards = cases["digits"], case_shards["digits"]
    absmax = {
        b: v
        for b, (v, _) in capture_absmax(
            device, case.param, case.bin, case.specs, shards, case.blobs
        ).items()
    }
    whole = capture_histograms(device, case.param, case.bin, case.specs, shards, case.blobs, absmax)
    parts = [
        capture_histograms(device, case.param, case.bin, case.specs, [s], case.blobs, absmax)
        for s in shards
    ]
    for blob in case.blobs:
        np.testing.assert_array_equal(whole[blob], sum(p[blob] for p in parts))


def test_progress_is_reported(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]]
) -> None:
    case = cases["digits"]
    seen: list[tuple[int, int]] = []
    capture_absmax(
        device,
        case.param,
        case.bin,
        case.specs,
        case_shards["digits"],
        case.blobs,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[0] == (0, 40) and seen[-1] == (40, 40)


def test_run_outputs_match_direct_ncnn(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]]
) -> None:
    case = cases["digits"]
    outs = list(
        run_outputs(
            device, Workload(case.param, case.bin, case.specs, case_shards["digits"], ["out0", "3"])
        )
    )
    assert len(outs) == 40
    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.load_param(str(case.param))
    net.load_model(str(case.bin))
    for i in (0, 17, 39):
        mat = ncnn.Mat.from_pixels_resize(
            case.samples[i][0], ncnn.Mat.PixelType.PIXEL_BGR2GRAY, 32, 32, 32, 32
        )
        mat.substract_mean_normalize([0.0], [0.00392157])
        ex = net.create_extractor()
        ex.input("in0", mat)
        expected = np.array(ex.extract("out0")[1])
        del ex
        if exact_expected(device, "digits"):
            np.testing.assert_array_equal(outs[i]["out0"], expected)
        else:  # another ncnn build (the native agent's) or ISA: a few ulp
            np.testing.assert_allclose(outs[i]["out0"], expected, rtol=1e-5, atol=1e-5)
        assert outs[i]["3"].shape == (32, 16, 16)


def test_an_int8_model_s_blobs_come_back_as_their_values_in_the_deployed_runtime(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]]
) -> None:
    """The int8 digits model in the deployed runtime: on ARM, ncnn chains int8 layers and a
    blob between them holds int8 values (elemsize 1).  It comes back as those values widened
    to float32 (as ``numpy.array(mat, dtype=float32)``), close in direction to the fp32
    model's blob -- never its bytes read as floats (the native agent did: cosine 0.02)."""
    case = cases["digits"]
    shards = case_shards["digits"][:1]
    blobs = ["1", "2", "3", "out0"]
    int8 = Workload(
        REFERENCE / "digits" / "int8_kl.param",
        REFERENCE / "digits" / "int8_kl.bin",
        case.specs,
        shards,
        blobs,
        runtime="deployed",
    )
    fp32 = Workload(case.param, case.bin, case.specs, shards, blobs)
    for got, want in zip(run_outputs(device, int8), run_outputs(device, fp32), strict=True):
        for blob in blobs:
            a, b = got[blob].ravel().astype(np.float64), want[blob].ravel().astype(np.float64)
            cosine = a @ b / np.sqrt((a @ a) * (b @ b))
            assert np.all(np.isfinite(a)) and cosine > 0.99, (blob, cosine)


def test_run_compare_answers_the_sums_of_the_blobs_it_keeps(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]]
) -> None:
    """``run`` with ``compare`` (validate's per-layer figures): the agent compares the int8
    digits model's quantized tops with the fp32 model's on the device and answers, per sample
    and top, the four sums of the blobs themselves -- requantized tops (int8 codes) at their
    scale -- bit for bit what the host computes from the blobs a plain run sends; the blobs
    themselves never come back.  Deployed runtime: int8 blobs between layers on ARM."""
    case = cases["digits"]
    shards = case_shards["digits"][:1]
    int8_files = (REFERENCE / "digits" / "int8_kl.param", REFERENCE / "digits" / "int8_kl.bin")
    int8_model = load_model(*int8_files)
    qlayers = quantized_layers(int8_model.param, int8_model.weights, str(int8_files[1]))
    pairs = [(q.top, q.top_scale if q.requantized else None) for q in qlayers]
    assert any(s is not None for _, s in pairs) and any(s is None for _, s in pairs)
    int8 = Workload(*int8_files, case.specs, shards, ["out0"], runtime="deployed")
    fp32 = Workload(case.param, case.bin, case.specs, shards, ["out0"], runtime="deployed")
    outs, secs, sums = run_shard_compared(device, int8, Comparison(case.param, case.bin, pairs))
    tops = [b for b, _ in pairs]
    got = list(run_outputs(device, replace(int8, blobs=tops)))
    want = list(run_outputs(device, replace(fp32, blobs=tops)))
    assert len(outs) == len(secs) == len(got) == sums.shape[0] > 0
    assert sums.shape == (len(got), len(pairs), len(PAIR_SUMS))
    for s, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(outs[s]["out0"], g["out0"])
        for j, (blob, scale) in enumerate(pairs):
            np.testing.assert_array_equal(sums[s, j], pair_sums(w[blob], g[blob], scale))


def test_run_variants_answers_each_variant_s_whole_forward(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]], tmp_path: Path
) -> None:
    """``run`` with ``variants`` (tune's incremental scoring): each variant of the int8 digits
    model, computed on the device from the base model's unchanged blobs, gives bit for bit the
    outputs of its own whole forward, and its whole forward is timed on the first samples.
    Deployed runtime (on ARM: fp16 storage, int8 blobs between layers, fed as ncnn holds
    them): a layer kept in fp32, a layer's scale changed (which changes its producer too, by
    the requantize fusion), the one layer of the float model put in int8, an intermediate
    output that some variants leave as it is.  Each variant's ``.bin`` is pushed whole, or
    made on the device from the base's and the pushed changed layers' bytes (only those
    pushed)."""
    case = cases["digits"]
    model = load_model(case.param, case.bin)
    table = parse_table((REFERENCE / "digits" / "kl.table").read_text())
    layers = quantized_layer_names(model, table)
    rescaled = table.without(())
    rescaled.records["convrelu_2"] = table.records["convrelu_2"] * np.float32(0.8)
    files: dict[str, tuple[Path, Path]] = {}

    def write(name: str, t: CalibrationTable, keep: Sequence[str]) -> QuantizedModel:
        q = quantize_layers(model.param, model.weights, t, keep_fp32=sorted(keep))
        files[name] = (tmp_path / f"{name}.param", tmp_path / f"{name}.bin")
        files[name][0].write_text(q.param_text)
        files[name][1].write_bytes(q.bin_bytes)
        return q

    blobs = ["3", "out0"]
    shards = case_shards["digits"][:1]
    for base_name, base, variants in (
        (
            "int8",
            (table, ()),
            {
                "keep_first": (table, (layers[0],)),
                "keep_last": (table, (layers[-1],)),
                "rescaled": (rescaled, ()),
            },
        ),
        ("float", (table, layers), {"only_2": (table, [x for x in layers if x != layers[2]])}),
    ):
        qb = write(base_name, *base)
        fed = []
        for k, (name, (t, keep)) in enumerate(variants.items()):
            q = write(name, t, keep)
            d = delta(qb, q, blobs)
            assert d is not None and d.feed and len(d.recomputed) < len(model.param.layers)
            if k == 0:  # the whole .bin
                fed.append(FedVariant(files[name][0], d.feed, bin=files[name][1]))
                continue
            data, pieces = bin_patch(qb, q)
            patch = tmp_path / f"{name}.patch"
            patch.write_bytes(data)
            assert 0 < len(data) < len(q.bin_bytes) and len(pieces) > 1
            digest = hashlib.sha256(q.bin_bytes).hexdigest()
            fed.append(
                FedVariant(files[name][0], d.feed, patch=patch, pieces=pieces, sha256=digest)
            )
        work = Workload(*files[base_name], case.specs, shards, blobs, runtime="deployed")
        answers = run_shard_variants(device, work, fed, 3)
        for (name, _), (outs, secs) in zip(variants.items(), answers, strict=True):
            whole = list(
                run_outputs(device, replace(work, param=files[name][0], bin=files[name][1]))
            )
            assert len(outs) == len(whole) > 3 and len(secs) == 3 and min(secs) > 0
            for got, want in zip(outs, whole, strict=True):
                for blob in blobs:
                    np.testing.assert_array_equal(got[blob], want[blob], err_msg=f"{name} {blob}")


def test_run_compare_refuses_a_reference_of_another_shape(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]], tmp_path: Path
) -> None:
    """A reference whose blob has another shape (another network): an error naming the blob,
    its two shapes and the sample, never figures."""
    case = cases["digits"]
    models = []
    for name, kernel in (("half", 2), ("same", 1)):  # blob "p": (1, 16, 16) and (1, 32, 32)
        param = tmp_path / f"{name}.param"
        param.write_text(
            f"7767517\n2 2\nInput in0 0 1 in0\nPooling pool 1 1 in0 p 0=0 1={kernel} 2={kernel}\n"
        )
        (tmp_path / f"{name}.bin").write_bytes(b"")
        models.append((param, tmp_path / f"{name}.bin"))
    run = Workload(*models[0], case.specs, case_shards["digits"][:1], ["p"])
    with pytest.raises(AgentError) as err:
        run_shard_compared(device, run, Comparison(*models[1], [("p", None)]))
    assert err.value.kind == "BlobMismatch", err.value
    assert "blob 'p' is (1, 16, 16) in" in err.value.message, err.value.message
    assert err.value.details == {
        "blob": "p",
        "sample": 0,
        "shape": [1, 16, 16],
        "ref_shape": [1, 32, 32],
    }


# -- eq_layer ------------------------------------------------------------------------------------
def _npy_probe() -> tuple[str, bytes, np.ndarray, np.float32]:
    """A probe of npy's convrelu_0 (fp32 weights): param text, .bin prefix, table scales."""
    folder = REFERENCE / "npy"
    param = (
        "7767517\n2 2\n"
        "Input                    in0                      0 1 in0\n"
        "Convolution              convrelu_0               1 1 in0 1 0=8 1=3 11=3 12=1 13=1 "
        "14=1 2=1 3=1 4=1 5=1 6=216 8=1 9=1\n"
    )
    prefix = (folder / "model.bin").read_bytes()[: 4 + 216 * 4 + 8 * 4]  # tag, weights, bias
    assert prefix[:4] == b"\0\0\0\0"
    table = {
        line.split()[0]: [float(v) for v in line.split()[1:]]
        for line in (folder / "kl.table").read_text().splitlines()
        if line.strip()
    }
    return (
        param,
        prefix,
        np.array(table["convrelu_0_param_0"], np.float32),
        np.float32(table["convrelu_0"][0]),
    )


def _probe_cosine_sum(
    param: str, prefix: bytes, ws: np.ndarray, bottom: np.float32, ins: list, refs: list[np.ndarray]
) -> float:
    """An independent EQ similarity: the probe loaded from files, cosine in float64."""
    net = ncnn.Net()
    net.opt.use_packing_layout = False
    net.load_param_mem(param)
    model = prefix + ws.astype("<f4").tobytes() + np.array([bottom], "<f4").tobytes()
    net.load_model_mem(model)
    total = 0.0
    for mat, ref in zip(ins, refs, strict=True):
        ex = net.create_extractor()
        ex.input("in0", mat)
        out = np.array(ex.extract("1")[1], dtype=np.float64).ravel()
        del ex
        r = ref.astype(np.float64).ravel()
        total += float(r @ out / np.sqrt(r @ r) / np.sqrt(out @ out))
    return total


def test_eq_layer_search(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]]
) -> None:
    case = cases["npy"]
    param, prefix, ws, bottom = _npy_probe()
    steps = 6
    factors = np.float32(0.5) + np.arange(steps, dtype=np.float32) * np.float32(0.25)
    candidates = np.vstack([np.append(ws, bottom)[:, None] * factors[None, :]]).astype(np.float32)
    result = eq_search_layer(
        device,
        Workload(case.param, case.bin, case.specs, case_shards["npy"]),
        "in0",
        "1",
        param,
        prefix,
        candidates,
        ws,
        bottom,
        max_samples=12,
    )
    assert result.sim.shape == candidates.shape and result.sim.dtype == np.float64
    assert np.all(np.isfinite(result.sim)) and np.all(result.sim <= 12 + 1e-6)
    # the bottom scale's candidates are pruned exactly (the weight rows never are)
    counts = result.sim_samples
    assert counts is not None and result.n_samples == 12
    assert (counts[:-1] == 12).all() and ((counts[-1] >= 1) & (counts[-1] <= 12)).all()
    # the greedy choice: per row the first strict maximum above 0 (of the complete sums)
    for j in range(len(ws)):
        assert result.weight_scales[j] == candidates[j, int(np.argmax(result.sim[j]))]
    best = pick_pruned(result.sim[-1], counts[-1], 12, EQ_PRUNE_SLACK)
    assert best is not None and result.bottom_scale == candidates[-1, best]

    # independent check of the last row's sums (every weight scale already chosen)
    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.load_param(str(case.param))
    net.load_model(str(case.bin))
    ins, refs = [], []
    for (arr,) in case.samples[:12]:
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(arr).clone())
        ins.append(ex.extract("in0")[1])
        refs.append(np.array(ex.extract("1")[1]))
        del ex
    # ncnn's ARM fp32 kernels round otherwise than the host's (measured on the emulated
    # phone's cortex-a76: 6e-6 relative over the 12 samples' sum)
    rel = 1e-6 if device.hello()["machine"] in ("x86_64", "AMD64") else 1e-4
    for k in (0, best, steps - 1):  # a pruned candidate's sum covers its first samples
        t = int(counts[-1, k])
        expected = _probe_cosine_sum(
            param, prefix, result.weight_scales, candidates[-1, k], ins[:t], refs[:t]
        )
        assert result.sim[-1, k] == pytest.approx(expected, rel=rel)


# -- failures ------------------------------------------------------------------------------------
def test_failing_job_raises_agent_error_with_remote_kind(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]]
) -> None:
    case = cases["digits"]
    with pytest.raises(AgentError) as info:
        capture_absmax(
            device, case.param, case.bin, case.specs, case_shards["digits"], ["no_such_blob"]
        )
    assert info.value.kind == "BlobNotFound"
    assert "no_such_blob" in str(info.value) and device.name in str(info.value)
    assert "Traceback" in info.value.remote_traceback
    assert device.hello()["protocol"] == PROTOCOL_VERSION  # the agent survives


def test_wrong_input_shape_is_an_input_error(
    device: Device, cases: dict[str, Case], tmp_path: Path
) -> None:
    case = cases["npy"]
    bad = write_shards([(np.zeros((3, 10, 6), np.float32),)], case.specs, tmp_path)
    with pytest.raises(AgentError) as info:
        capture_absmax(device, case.param, case.bin, case.specs, bad, case.blobs)
    assert info.value.kind == "InputError"


def test_nonfinite_activation_is_a_job_error_naming_blob_and_sample(
    device: Device, cases: dict[str, Case], tmp_path: Path
) -> None:
    """A finite but huge input overflows the first conv to inf: the abs-max job fails with
    per-sample, per-blob counts (today: inf abs-max, then a JSON ValueError on the host)."""
    case = cases["npy"]
    samples = [case.samples[0], (np.full((3, 6, 10), 3e38, np.float32),), case.samples[1]]
    shards = write_shards(samples, case.specs, tmp_path)
    with pytest.raises(AgentError) as info:
        capture_absmax(device, case.param, case.bin, case.specs, shards, case.blobs)
    e = info.value
    assert e.kind == "NonFiniteActivation" and e.kind in JOB_ERRORS
    entries = e.details["samples"]
    assert entries and {entry[0] for entry in entries} == {1}  # only the second sample
    assert {entry[1] for entry in entries} <= set(case.blobs)
    assert all(entry[2] + entry[3] > 0 for entry in entries)
    assert "inf" in str(e)
    # the clean samples alone still work on the same agent
    clean = write_shards([case.samples[0]], case.specs, tmp_path / "clean")
    got = capture_absmax(device, case.param, case.bin, case.specs, clean, case.blobs)
    assert all(np.isfinite(v[0]) for v in got.values())


def test_job_timeout_raises_device_error(device: Device) -> None:
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as info:
        device.run_job("sleep", {"seconds": 30}, timeout_s=0.5)
    assert not isinstance(info.value, AgentError)
    assert "0.5 s" in str(info.value) and device.name in str(info.value)
    assert time.monotonic() - t0 < 10
    assert device.hello()["protocol"] == PROTOCOL_VERSION  # a new agent took over


def test_killed_agent_is_detected(fresh_device) -> None:  # type: ignore[no-untyped-def]
    dev = fresh_device()
    dev.hello()
    pid = dev.agent_pid
    if pid is None:
        pytest.skip("device kind exposes no agent pid")
    threading.Timer(0.5, WorkdirView(dev).kill, (pid,)).start()
    with pytest.raises(DeviceError) as info:
        dev.run_job("sleep", {"seconds": 30}, timeout_s=20)
    assert "SIGKILL" in str(info.value)
    assert dev.hello()["protocol"] == PROTOCOL_VERSION  # restarted on the next job
    assert dev.agent_pid != pid


# -- memory --------------------------------------------------------------------------------------
def test_agent_peak_rss_does_not_grow_with_images(fresh_device, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    case = load_case("digits")
    image = read_bgr(REFERENCE / "digits" / "images" / "calib_00.png")
    big = np.ascontiguousarray(np.tile(image, (8, 8, 1)))  # 256x256, fed at native size
    spec = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), ())
    blobs = ["in0", "1", "2", "3"]  # the convolutions: ~7 MB of activations per image
    peaks = []
    # under qemu 100 images take 1-1.5 min: 24 there (holding 20 more would still add ~140 MB)
    for n in (4, 24 if is_board(fresh_device()) else 100):
        # shards of 4 images both times: a shard's pixels are read as one block, so 50-image
        # shards put ~24 MiB more on the peak of the SSH kind's agent (23.8 MiB here, 24.2 in
        # CI; 2.7 MiB with 4-image shards) -- not growth with the number of images
        shards = write_shards(((big,) for _ in range(n)), [spec], tmp_path / str(n), shard_size=4)
        dev = fresh_device()
        job = dev.run_job(
            "absmax",
            {
                "model": {"param": dev.push(case.param), "bin": dev.push(case.bin)},
                "inputs": [spec.to_dict()],
                "shards": [dev.push(s) for s in shards],
                "blobs": blobs,
            },
            timeout_s=120,
        )
        assert job.result["n_samples"] == n
        peaks.append(job.ru_maxrss_kb)
    assert peaks[0] > 0
    # holding the activations of 96 (boards: 20) more images would add ~700 MB (~140 MB)
    assert peaks[1] - peaks[0] < 24 * 1024, peaks


# -- interrupted jobs ----------------------------------------------------------------------------
def test_collect_job_finds_an_answer_written_while_the_host_was_away(device: Device) -> None:
    """An agent that finished a job whose answer never reached the host (a cut link): the
    response it wrote atomically is collected later, under the same job id."""
    from edgecal.device.jobs import build_request
    from edgecal_agent.messages import JOBS_DIR, REQUEST_FILE, dumps

    job_id = f"collect-{device.name}-{os.getpid()}-{time.monotonic_ns()}"
    assert device.collect_job(job_id) is None
    view = WorkdirView(device)
    request = build_request(device.name, "hello", {}, job_id)
    job_dir = view.path(f"{JOBS_DIR}/{job_id}")
    view.mkdir(job_dir)
    view.write(f"{job_dir}/{REQUEST_FILE}", dumps(request).encode("utf-8"))
    view.run_job(job_id)
    got = device.collect_job(job_id)
    assert got is not None and got.response["job_id"] == job_id
    assert got.result["protocol"] == PROTOCOL_VERSION


def test_recover_replaces_a_killed_agent(fresh_device) -> None:  # type: ignore[no-untyped-def]
    dev = fresh_device()
    dev.hello()
    pid = dev.agent_pid
    if pid is None:
        pytest.skip("device kind exposes no agent pid")
    WorkdirView(dev).kill(pid)
    dev.recover()
    assert dev.hello()["protocol"] == PROTOCOL_VERSION
    assert dev.agent_pid not in (None, pid)


def test_run_job_takes_the_callers_job_id(device: Device) -> None:
    job_id = f"mine-{os.getpid()}-{time.monotonic_ns()}"
    got = device.run_job("hello", {}, job_id=job_id)
    assert got.response["job_id"] == job_id


@pytest.mark.parametrize("how", ["vanished", "symlink"])
def test_a_vanished_artifact_is_a_device_error_naming_board_and_job(
    device: Device, tmp_path: Path, how: str
) -> None:
    """A response that names an artifact which is not (or no longer, or not really) in the job
    folder: a ``ProtocolError`` naming the board and the job, never ``FileNotFoundError``, and
    never a file read through a symlink."""
    from edgecal.errors import ProtocolError
    from edgecal_agent.messages import JOBS_DIR, RESPONSE_FILE, Artifact, Response, dumps

    job_id = f"vanish-{how}-{os.getpid()}-{time.monotonic_ns()}"
    view = WorkdirView(device)
    job_dir = view.path(f"{JOBS_DIR}/{job_id}")
    view.mkdir(job_dir)
    secret = tmp_path / "secret.npz"
    secret.write_bytes(b"not the device's")
    planted = view.outside(f"secret-{job_id}.npz") if view.board else str(secret)
    if view.board:
        view.write(planted, secret.read_bytes())
    if how == "symlink":
        view.symlink(planted, f"{job_dir}/absmax.npz")
    import hashlib

    response = Response(
        op="absmax",
        job_id=job_id,
        ok=True,
        result={"n_samples": 0},
        artifacts={
            "absmax.npz": Artifact("absmax.npz", hashlib.sha256(secret.read_bytes()).hexdigest())
        },
    )
    view.write(f"{job_dir}/{RESPONSE_FILE}", dumps(response).encode("utf-8"))
    with pytest.raises(ProtocolError) as info:
        device.collect_job(job_id)
    if view.board:
        view.remove(planted)
    assert device.name in str(info.value) and job_id in str(info.value)
    assert "absmax.npz" in str(info.value)


def test_a_planted_temp_name_is_never_written_through_by_a_push(
    device: Device, tmp_path: Path
) -> None:
    """The host's push stages a file in the work directory; a symlink planted under the
    temp name it uses points outside and is never written through."""
    import hashlib

    from edgecal_agent.messages import FILES_DIR

    src = tmp_path / f"model-{time.monotonic_ns()}.bin"
    src.write_bytes(os.urandom(4096))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    rel = f"{FILES_DIR}/{digest}/{src.name}"
    view = WorkdirView(device)
    folder = view.path(f"{FILES_DIR}/{digest}")
    view.mkdir(folder)
    victim = view.outside(f"victim-{digest[:12]}.txt") if view.board else str(tmp_path / "v.txt")
    view.write(victim, b"precious")
    staging = getattr(device, "staging_rel", None)
    planted = [f"{folder}/.{src.name}.tmp{os.getpid()}"]  # the local device's name on 9c5bc55
    if staging is not None:
        planted.append(view.path(staging(rel)))
    for p in planted:
        view.symlink(victim, p)
    assert device.push(src) == rel
    assert view.read(victim) == b"precious"
    assert view.read(f"{folder}/{src.name}") == src.read_bytes()
    assert not view.is_symlink(f"{folder}/{src.name}")
    if view.board:
        view.remove(victim)


#: ncnn does not check Crop's offsets: this one reads ~400 MB before the blob (a segfault).
CRASHING_CROP = "Crop crop_x 1 1 1 1i 0=-100000000 1=-100000000 2=0 3=10 4=10 5=16"


def _digits_with_layer_after_conv0(tmp_path: Path, line: str) -> tuple[Path, Path]:
    """The digits model with ``line`` (bottom ``1``, top ``1i``) between convrelu_0 and
    convdwrelu_0."""
    lines = (REFERENCE / "digits" / "model.param").read_text().splitlines()
    n_layers, n_blobs = map(int, lines[1].split())
    out = [lines[0], f"{n_layers + 1} {n_blobs + 1}"]
    for text in lines[2:]:
        if text.split()[1] == "convdwrelu_0":
            out.append(line)
            text = text.replace(" 1 1 1 2 ", " 1 1 1i 2 ", 1)
        out.append(text)
    param = tmp_path / "model.param"
    param.write_text("\n".join(out) + "\n")
    return param, REFERENCE / "digits" / "model.bin"


def test_ncnn_crashing_on_a_model_is_an_agent_crash_not_a_board_fault(
    fresh_device,
    cases: dict[str, Case],
    case_shards: dict[str, list[Path]],  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A Crop whose offsets ncnn does not check makes ncnn read far outside the blob and
    segfault: the model's fault (today a DeviceError, retried four times as a board fault)."""
    param, binf = _digits_with_layer_after_conv0(tmp_path, CRASHING_CROP)
    case = cases["digits"]
    device = fresh_device()
    with pytest.raises(AgentCrash) as info:
        capture_absmax(device, param, binf, case.specs, case_shards["digits"], ["1i"])
    assert "SIGSEGV" in str(info.value) or "Segmentation fault" in str(info.value)
    assert "numpy" not in str(info.value)
    assert not _board_fault(info.value)


def test_a_blob_ncnn_cannot_allocate_names_its_layer(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]], tmp_path: Path
) -> None:
    param, binf = _digits_with_layer_after_conv0(
        tmp_path, "Interp interp_x 1 1 1 1i 0=2 3=100000 4=100000"
    )
    case = cases["digits"]
    if device.hello()["machine"].startswith("armv7"):
        # 32-bit: ncnn's Mat::create computes the 100000x100000 blob's size in a 32-bit size_t,
        # which wraps, so the allocation succeeds and the layer writes past it: a crash, reported
        # as such (not retried, not the board's fault), where a 64-bit ncnn fails to allocate
        with pytest.raises(AgentCrash) as crash:
            capture_absmax(device, param, binf, case.specs, case_shards["digits"], ["1i"])
        assert "SIGSEGV" in str(crash.value) and device.name in str(crash.value)
        assert not _board_fault(crash.value)
        return
    with pytest.raises(AgentError) as info:
        capture_absmax(device, param, binf, case.specs, case_shards["digits"], ["1i"])
    e = info.value
    assert e.kind == "ExtractError" and e.kind in JOB_ERRORS
    assert "interp_x" in str(e) and "model.param" in str(e) and "numpy" not in str(e)


def test_a_huge_shape_is_an_input_error_not_a_crash(
    device: Device, cases: dict[str, Case], tmp_path: Path
) -> None:
    case = cases["digits"]
    spec = InputSpec("in0", "image", "GRAY", (0.0,), (0.00392157,), (100000, 100000))
    shards = write_shards(case.samples[:2], [spec], tmp_path)
    with pytest.raises(AgentError) as info:
        capture_absmax(device, case.param, case.bin, [spec], shards, case.blobs)
    assert info.value.kind == "InputError" and "100000x100000" in str(info.value)


def test_a_model_file_name_that_is_not_utf8_works(
    device: Device, cases: dict[str, Case], case_shards: dict[str, list[Path]], tmp_path: Path
) -> None:
    """``m\\xff.param`` (bytes that are not UTF-8): today ncnn's load_param gets a lone
    surrogate (TypeError, retried as a board fault) or SFTP fails to encode the path."""
    case = cases["digits"]
    param = Path(os.fsdecode(bytes(tmp_path) + b"/m\xff\xfe.param"))
    binf = Path(os.fsdecode(bytes(tmp_path) + b"/m\xff.bin"))
    param.write_bytes(case.param.read_bytes())
    binf.write_bytes(case.bin.read_bytes())
    got = capture_absmax(device, param, binf, case.specs, case_shards["digits"][:1], case.blobs)
    want = capture_absmax(
        device, case.param, case.bin, case.specs, case_shards["digits"][:1], case.blobs
    )
    assert got == want
