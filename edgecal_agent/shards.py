"""The sample shard format: samples for the agent, stacked into blocks in one ``.npz``.

Written by the host (:func:`write_shard`), read by the agent (:func:`read_shard_info`,
:func:`iter_shard`) and by the host's crash-site tools.  Stdlib + numpy only; Python 3.9.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from edgecal_agent.messages import InputDesc, ProtocolViolation
from edgecal_agent.npzio import NpzArchive, NpzWriter, describe, load_npz

SHARD_SCHEMA = 1

#: A shard stores runs of consecutive samples as one array per input ("blocks"), so the agent
#: reads a few members per shard instead of one per sample: same-shape samples stacked, samples
#: of different shapes (images of varied sizes) concatenated flat with their shapes beside.
BLOCK_BYTES = 8 << 20


def block_key(k: int, j: int) -> str:
    """Member name of block ``k``, input ``j`` (indices only, never blob names)."""
    return f"b{k:05d}_{j}"


def shapes_key(k: int, j: int) -> str:
    """Member holding the per-sample shapes of a ragged block ``k``, input ``j``."""
    return f"b{k:05d}_{j}_shapes"


def write_shard(
    path: str | os.PathLike[str],
    samples: Sequence[Sequence[Any]],
    inputs: Sequence[InputDesc],
    block_bytes: int = BLOCK_BYTES,
) -> None:
    """Write one shard: per sample and per input one array, plus the input descriptions.

    Image inputs: uint8 ``(rows, cols, 3)`` BGR.  npy inputs: float32, C order.
    Layout (schema 1): ``schema``, ``inputs`` (JSON text), ``n_samples``, ``block_sizes``
    (int64, samples per block) and ``b<k>_<j>``: block ``k`` of input ``j``, the block's
    samples stacked on a new first axis -- or, when their shapes differ (a ragged block),
    concatenated flat (1-D) with ``b<k>_<j>_shapes`` (int64, one row of dimensions per sample).
    """
    arrays = []
    for i, sample in enumerate(samples):
        if len(sample) != len(inputs):
            raise ProtocolViolation(f"sample {i} has {len(sample)} arrays for {len(inputs)} inputs")
        arrays.append(
            tuple(check_sample_array(a, d, f"sample {i}") for a, d in zip(sample, inputs))
        )
    blocks: list[list[tuple[np.ndarray, ...]]] = []
    size = 0
    for sample in arrays:
        nbytes = sum(a.nbytes for a in sample)
        if (
            not blocks
            or size + nbytes > block_bytes
            or any(a.ndim != b.ndim for a, b in zip(sample, blocks[-1][0]))
        ):
            blocks.append([])
            size = 0
        blocks[-1].append(sample)
        size += nbytes
    with NpzWriter(path) as w:
        w.add("schema", np.int64(SHARD_SCHEMA))
        w.add("inputs", np.array(json.dumps([d.to_dict() for d in inputs], sort_keys=True)))
        w.add("n_samples", np.int64(len(arrays)))
        w.add("block_sizes", np.array([len(b) for b in blocks], dtype=np.int64))
        for k, block in enumerate(blocks):
            for j in range(len(inputs)):
                parts = [sample[j] for sample in block]
                if all(a.shape == parts[0].shape for a in parts):
                    w.add(block_key(k, j), np.stack(parts))
                else:
                    w.add(block_key(k, j), np.concatenate([a.reshape(-1) for a in parts]))
                    w.add(shapes_key(k, j), np.array([a.shape for a in parts], dtype=np.int64))


def check_sample_array(arr: Any, desc: InputDesc, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if desc.kind == "image":
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ProtocolViolation(
                f"{where}, input {desc.blob!r}: image inputs are uint8 (rows, cols, 3) BGR, "
                f"got {a.dtype} {a.shape}"
            )
    elif a.dtype != np.float32:
        raise ProtocolViolation(
            f"{where}, input {desc.blob!r}: npy inputs are float32, got {a.dtype} {a.shape}"
        )
    return a


@dataclass(frozen=True)
class ShardInfo:
    inputs: tuple[InputDesc, ...]
    n_samples: int
    block_sizes: tuple[int, ...]


def _int_scalar(npz: NpzArchive, key: str, where: str) -> int:
    arr = npz[key]
    if arr.shape != () or arr.dtype.kind not in "iu":
        raise ProtocolViolation(
            f"{where}: member {key!r} must be an integer scalar, got {arr.dtype} {arr.shape}"
        )
    return int(arr)


def read_shard_info(path: str | os.PathLike[str] | IO[bytes], name: str | None = None) -> ShardInfo:
    """A shard's header (reads no sample data)."""
    name = name or describe(path)
    where = f"shard {name}"
    with load_npz(path, name) as npz:
        try:
            schema = _int_scalar(npz, "schema", where)
            if schema != SHARD_SCHEMA:
                raise ProtocolViolation(
                    f"{where}: schema {schema}, this agent reads {SHARD_SCHEMA}"
                )
            text = npz["inputs"]
            if text.shape != () or text.dtype.kind != "U":
                raise ProtocolViolation(f"{where}: member 'inputs' must be JSON text")
            try:
                descs = json.loads(str(text))
            except (ValueError, RecursionError) as e:
                raise ProtocolViolation(f"{where}: member 'inputs' is not JSON ({e})") from None
            if not isinstance(descs, list):
                raise ProtocolViolation(f"{where}: member 'inputs' must be a JSON list")
            inputs = tuple(
                InputDesc.from_dict(d, f"{where}: input {i}") for i, d in enumerate(descs)
            )
            n_samples = _int_scalar(npz, "n_samples", where)
            sizes = npz["block_sizes"]
            if sizes.ndim != 1 or (sizes.size and sizes.dtype.kind not in "iu"):
                raise ProtocolViolation(f"{where}: member 'block_sizes' must be a list of counts")
            info = ShardInfo(inputs, n_samples, tuple(int(n) for n in sizes))
        except KeyError as e:
            raise ProtocolViolation(f"{where}: missing member {e}") from None
    if info.n_samples < 0 or any(n < 0 for n in info.block_sizes):
        raise ProtocolViolation(f"{where}: negative sample counts")
    if sum(info.block_sizes) != info.n_samples:
        raise ProtocolViolation(f"{where}: block sizes do not add up")
    return info


def iter_shard(
    path: str | os.PathLike[str] | IO[bytes], info: ShardInfo, name: str | None = None
) -> Iterator[tuple[np.ndarray, ...]]:
    """One sample at a time; one block (at most ``BLOCK_BYTES``-ish) is in memory."""
    name = name or describe(path)
    where = f"shard {name}"
    with load_npz(path, name) as npz:
        members = set(npz.files)
        for k, n in enumerate(info.block_sizes):
            try:
                block = [
                    _ragged(npz, k, j, n, where)
                    if shapes_key(k, j) in members
                    else npz[block_key(k, j)]
                    for j in range(len(info.inputs))
                ]
            except KeyError as e:
                raise ProtocolViolation(f"{where}: missing member {e}") from None
            if any(
                (b.ndim == 0 or b.shape[0] != n) if isinstance(b, np.ndarray) else len(b) != n
                for b in block
            ):
                raise ProtocolViolation(f"{where}: block {k} is not {n} long")
            for i in range(n):
                yield tuple(b[i] for b in block)
            del block


def _ragged(npz: NpzArchive, k: int, j: int, n: int, where: str) -> list[np.ndarray]:
    """The ``n`` samples of ragged block ``k``, input ``j``: views of its flat member."""
    flat, shapes = npz[block_key(k, j)], npz[shapes_key(k, j)]
    if (
        flat.ndim != 1
        or shapes.ndim != 2
        or shapes.shape[0] != n
        or shapes.dtype.kind not in "iu"
        or (shapes.size and int(shapes.min()) < 0)
    ):
        raise ProtocolViolation(f"{where}: ragged block {k} of input {j} is malformed")
    dims = [tuple(int(d) for d in row) for row in shapes.tolist()]
    out: list[np.ndarray] = []
    start = 0
    for shape in dims:  # Python integers: no overflow
        end = start + math.prod(shape)
        if end > flat.size:
            break
        try:
            out.append(flat[start:end].reshape(shape))
        except ValueError:  # dimensions numpy refuses (their product overflows)
            break
        start = end
    if len(out) != n or start != flat.size:
        raise ProtocolViolation(f"{where}: ragged block {k} of input {j} does not add up")
    return out
