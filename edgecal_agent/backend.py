"""ncnn, driven exactly as ncnn2table drives it (spec 2.3, 2.4, 5.2).

ncnn is imported lazily so ``hello`` works (and reports the problem) where it is missing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgecal_agent.errors import (
    BlobNotFound,
    ExtractError,
    InputError,
    ModelLoadError,
    NcnnUnavailable,
)
from edgecal_agent.messages import InputDesc

_PIXEL_FROM_BGR = {
    "BGR": "PIXEL_BGR",
    "RGB": "PIXEL_BGR2RGB",
    "GRAY": "PIXEL_BGR2GRAY",
    "RGBA": "PIXEL_BGR2RGBA",
    "BGRA": "PIXEL_BGR2BGRA",
}
_CHANNELS = {"BGR": 3, "RGB": 3, "GRAY": 1, "RGBA": 4, "BGRA": 4}
#: Largest image input Mat (bytes) the agent asks ncnn to make: from_pixels_resize does not
#: check its allocation and crashes the process on a huge --shape.
MAX_INPUT_BYTES = 1 << 31


def import_ncnn() -> Any:
    try:
        import ncnn
    except ImportError as e:  # pragma: no cover - depends on the board
        raise NcnnUnavailable(
            f"the ncnn Python package cannot be imported ({e}); install it on the device "
            "(pip install ncnn)"
        ) from e
    return ncnn


def set_runtime_options(opt: Any, runtime: str, threads: int) -> None:
    """``calibration``: ncnn2table's QuantNet options.  ``deployed``: ncnn defaults + threads."""
    if runtime == "calibration":
        opt.num_threads = 1
        opt.lightmode = False
        opt.use_fp16_packed = False
        opt.use_fp16_storage = False
        opt.use_fp16_arithmetic = False
        opt.use_bf16_packed = False
        opt.use_bf16_storage = False
    else:
        opt.num_threads = threads


def to_mat(ncnn: Any, arr: np.ndarray, desc: InputDesc, where: str) -> Any:
    """One input array -> the ncnn Mat ncnn2table would feed (an owning Mat)."""
    if desc.kind == "image":
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(
                f"{where}: image input {desc.blob!r} must be uint8 (rows, cols, 3) "
                f"BGR, got {arr.dtype} {arr.shape}"
            )
        rows, cols = int(arr.shape[0]), int(arr.shape[1])
        w, h = desc.target_size(cols, rows)
        if w <= 0 or h <= 0:
            raise InputError(f"{where}: input {desc.blob!r} resizes {cols}x{rows} to {w}x{h}")
        n_ch = _CHANNELS[desc.pixel]
        if w * h * 3 * 4 > MAX_INPUT_BYTES:  # ncnn does not check this allocation: it crashes
            raise InputError(
                f"{where}: input {desc.blob!r} resizes {cols}x{rows} to {w}x{h}, "
                f"more than {MAX_INPUT_BYTES >> 30} GiB of float32 pixels"
            )
        for what, values in (("mean", desc.mean), ("norm", desc.norm)):
            if values and len(values) != n_ch:
                raise InputError(
                    f"input {desc.blob!r}: {len(values)} {what} values for "
                    f"{n_ch} channels of pixel={desc.pixel}"
                )
        pixel = getattr(ncnn.Mat.PixelType, _PIXEL_FROM_BGR[desc.pixel])
        mat = ncnn.Mat.from_pixels_resize(np.ascontiguousarray(arr), pixel, cols, rows, w, h)
        mat.substract_mean_normalize(list(desc.mean), list(desc.norm))
        return mat
    if arr.dtype != np.float32:
        raise InputError(f"{where}: npy input {desc.blob!r} must be float32, got {arr.dtype}")
    if desc.shape and tuple(arr.shape) != tuple(reversed(desc.shape)):
        raise InputError(
            f"{where}: npy input {desc.blob!r} has numpy shape {tuple(arr.shape)}, expected "
            f"{tuple(reversed(desc.shape))} (shape={list(desc.shape)} is ncnn's w,h,(d),c order)"
        )
    if not 1 <= arr.ndim <= 4:
        raise InputError(f"{where}: npy input {desc.blob!r} has {arr.ndim} dimensions (1..4)")
    keep = np.ascontiguousarray(arr)
    # Mat(ndarray) neither copies nor keeps a reference (spec 5.2): clone while keep is alive.
    mat = ncnn.Mat(keep).clone()
    del keep
    return mat


def raw_visited(mat: Any) -> np.ndarray | None:
    """The elements ncnn2table visits, as a zero-copy numpy view of a ``type=1`` (raw, possibly
    elempack-packed) fp32 blob; None when the Mat is not plain fp32 (fp16/bf16/int8 storage).

    Rewrites ``mat``'s header (only this Python object's, never ncnn's) to describe the same
    memory as elempack 1: a packed channel holds ``elempack`` real channels interleaved, its
    first ``w*h*elempack`` floats are exactly the first ``w*h`` floats of each of them, so
    the returned view covers the same elements as ``stats.visited`` of the ``type=0`` blob
    (in another order, which neither abs max nor a histogram sees):

    * dims 1 ``(w*pack,)``, dims 2 ``(h, w*pack)``: every element;
    * dims 3 ``(c/pack, h, w*pack)``, channel stride ``cstep*pack`` (padding skipped);
    * dims 4: ``[:, 0]`` of ``(c/pack, d, h, w*pack)``, the first depth slice (``d`` ignored).

    The view keeps ``mat`` (so ncnn's refcounted data) alive.
    """
    dims = mat.dims
    if dims == 0:  # empty
        return _EMPTY
    pack = mat.elempack
    if mat.elemsize != 4 * pack:
        return None
    if pack != 1:
        mat.w = mat.w * pack
        mat.cstep = mat.cstep * pack  # only read by the buffer for dims 3 and 4
        mat.elemsize = 4
        mat.elempack = 1
    arr = np.asarray(mat)
    if arr.dtype != _F32:
        return None
    return arr[:, 0] if dims == 4 else arr


_F32 = np.dtype(np.float32)
_EMPTY = np.zeros(0, dtype=np.float32)
_EMPTY.flags.writeable = False


class NcnnModel:
    """A loaded net plus the allocators its extractors use.  Keep it alive while extracting."""

    def __init__(
        self,
        param: str,
        bin_: str,
        *,
        runtime: str = "calibration",
        threads: int = 1,
        labels: tuple[str, str] | None = None,
    ) -> None:
        """``labels``: the names of ``param`` and ``bin_`` in messages (default: the paths;
        the agent passes the files by descriptor paths and names them as the request did)."""
        self.ncnn = ncnn = import_ncnn()
        label_param, label_bin = labels or (param, bin_)
        for path, label in ((param, label_param), (bin_, label_bin)):
            try:
                path.encode("utf-8")  # ncnn takes UTF-8 paths; a lone surrogate is a TypeError
            except UnicodeEncodeError:
                raise ModelLoadError(
                    f"model file name {label!r} is not UTF-8 text; push it under a UTF-8 name"
                ) from None
            if not os.path.isfile(path):
                raise ModelLoadError(f"model file {label} does not exist on the device")
        self.param = label_param
        self.net = ncnn.Net()
        set_runtime_options(self.net.opt, runtime, threads)
        self.blob_allocator = ncnn.UnlockedPoolAllocator()
        self.workspace_allocator = ncnn.PoolAllocator()
        name_param, name_bin = os.path.basename(label_param), os.path.basename(label_bin)
        if self.net.load_param(param) != 0:
            raise ModelLoadError(f"ncnn cannot parse {name_param} (load_param failed)")
        if self.net.load_model(bin_) != 0:
            raise ModelLoadError(
                f"ncnn cannot load {name_bin} for {name_param} "
                "(load_model failed: truncated .bin or .param/.bin mismatch)"
            )
        self.blob_names = [b.name for b in self.net.blobs()]
        self.input_names = list(self.net.input_names())
        # fp32 storage is certain only with ncnn2table's options: there the raw (packed) blob
        # is read in place; the deployed runtime may store fp16/bf16, so ncnn converts it.
        self.raw_extract = runtime == "calibration"

    def producer(self, blob: str) -> str:
        """``"layer 'x' (Type)"``, the layer whose output ``blob`` is, or ``""``."""
        try:
            index = self.blob_names.index(blob)
            for layer in self.net.layers():
                if index in list(layer.tops):
                    return f"layer {layer.name!r} ({layer.type})"
        except (ValueError, AttributeError, TypeError):
            pass
        return ""

    def extract_error(self, where: str, blob: str, ret: int) -> ExtractError:
        """ncnn's failure to compute ``blob``, naming the model and the layer that makes it."""
        made_by = self.producer(blob)
        why = (
            " (-100: ncnn could not allocate a blob: a layer's output is too large for "
            "this device -- check that layer's shape parameters and --shape)"
            if ret == -100
            else ""
        )
        return ExtractError(
            f"{where}: ncnn could not compute blob {blob!r} of {os.path.basename(self.param)}"
            + (f", the output of {made_by} or a layer before it" if made_by else "")
            + f": extract returned {ret}{why}"
        )

    def check_blobs(self, blobs: Sequence[str]) -> None:
        known = set(self.blob_names)
        missing = [b for b in blobs if b not in known]
        if missing:
            raise BlobNotFound(
                f"blob(s) {', '.join(map(repr, missing))} not in the model; "
                f"it has {', '.join(self.blob_names)}"
            )

    def check_inputs(self, inputs: Sequence[InputDesc]) -> None:
        self.check_blobs([d.blob for d in inputs])

    def extract(
        self,
        sample: Sequence[np.ndarray],
        inputs: Sequence[InputDesc],
        blobs: Sequence[str],
        where: str = "sample",
        *,
        light_mode: bool = True,
    ) -> Iterator[tuple[str, Any]]:
        """Feed one sample, then yield ``(blob, Mat)`` for each blob in order (fp32, elempack 1).

        ``light_mode`` (ncnn2table's choice) frees intermediate blobs as soon as they are
        consumed, so blobs must be asked in network order; pass False for an arbitrary order
        (all blobs of this one sample are then kept until the next sample).
        """
        with self._fed(sample, inputs, where, light_mode) as ex:
            for name in blobs:
                ret, out = ex.extract(name)
                if ret != 0:
                    raise self.extract_error(where, name, ret)
                yield name, out

    @contextlib.contextmanager
    def _fed(
        self,
        sample: Sequence[np.ndarray],
        inputs: Sequence[InputDesc],
        where: str,
        light_mode: bool = True,
    ) -> Iterator[Any]:
        """An extractor (this net's allocators) with one sample fed to every input; the input
        Mats live as long as the extractor does."""
        mats = [to_mat(self.ncnn, arr, d, where) for arr, d in zip(sample, inputs)]
        ex = self.net.create_extractor()
        try:
            ex.set_light_mode(light_mode)
            ex.set_blob_allocator(self.blob_allocator)
            ex.set_workspace_allocator(self.workspace_allocator)
            for mat, d in zip(mats, inputs):
                ex.input(d.blob, mat)
            yield ex
        finally:
            del ex
            del mats

    @contextlib.contextmanager
    def kept(
        self, sample: Sequence[np.ndarray], inputs: Sequence[InputDesc], where: str = "sample"
    ) -> Iterator[Any]:
        """An extractor fed one sample that keeps every blob it computes (not light mode), for
        :meth:`raw_blob`."""
        with self._fed(sample, inputs, where, light_mode=False) as ex:
            yield ex

    def raw_blob(self, ex: Any, name: str, where: str = "sample") -> Any:
        """Blob ``name`` of extractor ``ex`` as ncnn holds it (``extract`` type 1: its packing,
        its fp16/bf16 storage, its int8 codes), shared with ``ex``, for :meth:`extract_fed`."""
        out = self.ncnn.Mat()
        ret = ex.extract(name, out, 1)
        if ret != 0:
            raise self.extract_error(where, name, ret)
        return out

    def extract_fed(
        self, fed: Sequence[tuple[str, Any]], blobs: Sequence[str], where: str = "sample"
    ) -> Iterator[tuple[str, Any]]:
        """A fresh light-mode extractor given the Mats ``fed`` (blob name, Mat: e.g. another
        net's :meth:`raw_blob`) instead of the sample; yield ``(blob, Mat)`` for each of
        ``blobs`` (fp32, elempack 1).  ncnn computes only the layers between the fed blobs and
        ``blobs``; a layer working in place copies a fed blob first (it is shared)."""
        ex = self.net.create_extractor()
        try:
            ex.set_light_mode(True)
            ex.set_blob_allocator(self.blob_allocator)
            ex.set_workspace_allocator(self.workspace_allocator)
            for name, mat in fed:
                ex.input(name, mat)
            for name in blobs:
                ret, out = ex.extract(name)
                if ret != 0:
                    raise self.extract_error(where, name, ret)
                yield name, out
        finally:
            del ex

    def time_extract(
        self,
        sample: Sequence[np.ndarray],
        inputs: Sequence[InputDesc],
        blob: str,
        where: str = "sample",
        *,
        keep: bool = False,
    ) -> tuple[float, np.ndarray | None]:
        """Seconds a fresh (light-mode) extractor takes to compute ``blob`` from one sample:
        the ``extract`` call only, with the net's threads (input conversion excluded); with
        ``keep``, also the blob's values (fp32, elempack 1, as :meth:`extract` gives them)."""
        with self._fed(sample, inputs, where) as ex:
            t0 = time.perf_counter()
            ret, out = ex.extract(blob)
            elapsed = time.perf_counter() - t0
            if ret != 0:
                raise self.extract_error(where, blob, ret)
            values = np.array(out, dtype=np.float32) if keep else None
            del out
            return elapsed, values

    def for_each_visited(
        self,
        sample: Sequence[np.ndarray],
        inputs: Sequence[InputDesc],
        blobs: Sequence[str],
        fn: Callable[[int, np.ndarray], None],
        where: str = "sample",
    ) -> None:
        """Feed one sample (light mode, blobs in network order) and call ``fn(b, values)`` for
        each blob ``b``: ``values`` are the elements ncnn2table visits (``stats.visited``
        semantics, any order), a read-only view valid only during the call.

        Calibration runtime: ``extract(name, mat, 1)`` hands out ncnn's own blob (no
        unpacking, no clone) and :func:`raw_visited` views it; the view is dropped before the
        next blob is computed, so ncnn's in-place layers find the blob unshared as usual.
        """
        with self._fed(sample, inputs, where) as ex:
            new_mat = self.ncnn.Mat
            raw = self.raw_extract
            for b, name in enumerate(blobs):
                out = new_mat()
                values = None
                if raw:
                    ret = ex.extract(name, out, 1)
                    if ret == 0:
                        values = raw_visited(out)
                if values is None:
                    out = new_mat()
                    ret = ex.extract(name, out, 0)
                    if ret == 0:
                        values = _visited_unpacked(out)
                if ret != 0:
                    raise self.extract_error(where, name, ret)
                assert values is not None  # one of the extracts above returned 0
                fn(b, values)
                del values, out


def _visited_unpacked(mat: Any) -> np.ndarray:
    """``stats.visited`` of a ``type=0`` (elempack 1, fp32) blob, as a view."""
    if mat.dims == 0 or mat.w * mat.h * mat.d * mat.c == 0:
        return np.zeros(0, dtype=np.float32)
    arr = np.asarray(mat, dtype=np.float32)
    return arr[:, 0] if arr.ndim == 4 else arr
