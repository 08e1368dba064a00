"""Calibration inputs on the host: list files, image decoding (as ``cv::imread`` would), npy.

Images are decoded with Pillow into the uint8 BGR ``(rows, cols, 3)`` array that OpenCV's
``cv::imread(path, IMREAD_COLOR)`` returns, which is what ncnn2table feeds to
``Mat::from_pixels_resize``.  PNG and BMP are lossless, so the pixels are identical.  JPEG:
Pillow and OpenCV both decode with libjpeg(-turbo)'s default integer IDCT and fancy upsampling,
and both apply the EXIF orientation; builds that link a different libjpeg version, or ncnn's
stb_image based ``simpleocv``, can differ by a level or two on some pixels.
"""

from __future__ import annotations

import math
import os
import tokenize
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecal.errors import ImageError, InputFileError, UsageError
from edgecal.files.userfile import not_a_file, read_text
from edgecal.inputs.imagefit import ResizeNotes, fit_image
from edgecal.inputs.listfile import list_lines, resolve_list
from edgecal.inputs.spec import InputSpec, ModelChannels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


#: What a file given as a list starts with when it is a sample itself: (magic, what it is).
SAMPLE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "an image"),
    (b"\xff\xd8\xff", "an image"),  # JPEG
    (b"GIF87a", "an image"),
    (b"GIF89a", "an image"),
    (b"II*\x00", "an image"),  # TIFF, little endian
    (b"MM\x00*", "an image"),  # TIFF, big endian
    (b"\x93NUMPY", "an .npy array"),
)
LIST_HINT = "a single sample goes in a list file of one line"


def sample_magic(head: bytes) -> str | None:
    """What a file starting with ``head`` is when it is an image or an ``.npy`` array rather
    than text ("an image", "an .npy array"), from its first bytes; None: not one of them."""
    for magic, kind in SAMPLE_MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "an image"
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":  # BMP: reserved zeros
        return "an image"
    return None


def _binary(text: str) -> bool:
    """``text`` (decoded with ``surrogateescape``) holds a NUL or bytes that are not UTF-8."""
    return any(c == "\0" or "\udc80" <= c <= "\udcff" for c in text)


def sample_not_list(path: Path, kind: str) -> str:
    """The message for a sample given where a list file is expected."""
    return (
        f"{path} is {kind}, not a list file: give a list file (one path per line) or a "
        "folder of images"
    )


def read_list(path: Path, *, ncnn_compat: bool = False) -> list[Path]:
    """The sample paths of a list file, or of a folder of images.

    Which file each line names is :mod:`edgecal.inputs.listfile`'s rule: a relative line is
    looked up relative to the list file's folder and relative to the current directory (the one that
    exists; both existing as different files is an error), so ncnn2table's lists work
    unchanged.  ``ncnn_compat=False`` (``edgecal calibrate`` ...): one path per line, spaces
    allowed, ``#`` starts a comment; a line naming no file is tried as its first word.
    ``ncnn_compat=True`` (the ``ncnn2table`` drop-in): ncnn2table's reading -- the first word
    of each line, relative to the current directory first.  Blank lines are skipped either way.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputFileError(
                f"folder {path} holds no images", hint=f"supported: {' '.join(IMAGE_SUFFIXES)}"
            )
        for p in files:
            if p.is_symlink() and not p.exists():
                raise ImageError(
                    f"{p} in the images folder {path} is a broken symlink (it points to "
                    f"{os.readlink(p)}, which does not exist)",
                    hint=f"fix the link, or remove it from {path}",
                )
            kind = not_a_file(p)
            if kind is not None:
                raise ImageError(
                    f"{p} in the images folder {path} is {kind}, not an image file",
                    hint=f"remove it from {path}, or give a list file of the images",
                )
        return files
    text = read_text(path, "list file")
    kind = sample_magic(text[:16].encode("utf-8", errors="surrogateescape"))
    if kind is None and path.suffix.lower() in IMAGE_SUFFIXES and _binary(text[:512]):
        kind = "an image"  # one sample_magic does not know (PGM, PPM) or a damaged one
    if kind is not None:
        raise InputFileError(sample_not_list(path, kind), hint=LIST_HINT)
    lines = list_lines(text, ncnn_compat=ncnn_compat)
    if not lines:
        raise InputFileError(f"list file {path} names no samples")
    return resolve_list(path, lines, cwd_first=ncnn_compat)


def decode_image_bgr(path: Path) -> np.ndarray:
    """``cv::imread(path, IMREAD_COLOR)``: uint8 ``(rows, cols, 3)`` in BGR order."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        # Pillow's own warnings (DecompressionBombWarning, bad EXIF, palette transparency)
        # are not the user's business: what matters is raised below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                img = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise ImageError(f"image {path} does not exist") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{path} is refused as a decompression bomb: {exc}",
            hint="shrink the image, or remove it from the list",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(
            f"{path} is not a readable image ({exc.__class__.__name__})",
            hint="remove it from the list, or use --npy for tensor inputs",
        ) from None
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # OpenCV scales 16-bit images to 8 bits by dropping the low byte.
        arr16 = np.asarray(img, dtype=np.uint32)
        grey = (
            (arr16 >> 8).astype(np.uint8)
            if mode != "I"
            else np.clip(arr16, 0, 255).astype(np.uint8)
        )
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in ("1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "F"):
        img = img.convert("L" if mode in ("1", "L", "LA", "F") else "RGB")
    if img.mode == "L":
        grey = np.asarray(img, dtype=np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if img.mode != "RGB":
        img = img.convert("RGB")
    # Pillow writes the channels in BGR order itself: one pass, no strided numpy copy
    cols, rows = img.size
    return np.frombuffer(bytearray(img.tobytes("raw", "BGR")), dtype=np.uint8).reshape(
        rows, cols, 3
    )


def _check_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of ``path``'s header; refuse what is not a single ``.npy`` array,
    or whose header claims more data than the file holds (a forged shape would otherwise make
    numpy allocate it, or overflow)."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        magic = fh.read(len(fmt.MAGIC_PREFIX))
        if magic.startswith(b"PK"):
            raise ImageError(f"{path} is an .npz archive, not a single .npy array")
        if magic != fmt.MAGIC_PREFIX:
            raise ImageError(
                f"{path} is not a .npy file (no NUMPY magic at its start)",
                hint="save samples with numpy.save",
            )
        fh.seek(0)
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ImageError(f"{path}: unsupported .npy format version {version}")
        have = os.fstat(fh.fileno()).st_size - fh.tell()
    need = math.prod(shape) * dtype.itemsize
    if not dtype.hasobject and need > have:
        raise ImageError(
            f"{path} is truncated or damaged: its header says {dtype.str} {tuple(shape)}, "
            f"{need} bytes of data, the file holds {have}"
        )
    return tuple(int(n) for n in shape), dtype


def npy_channels(shape: Sequence[int]) -> int:
    """The channels ncnn gives a sample of numpy ``shape``: ``(c, (d), h, w)``, a 1- or
    2-dimensional array one channel."""
    return int(shape[0]) if len(shape) >= 3 else 1


def check_npy_sample(
    path: Path,
    shape: tuple[int, ...],
    dtype: np.dtype,
    spec: InputSpec,
    channels: ModelChannels | None = None,
) -> None:
    """What an ``.npy`` sample's header says, against its input: float32, at least one value
    in at least one dimension (ncnn has no scalar or empty Mat), at most 4 dimensions, the
    shape ``spec.shape`` reversed (when given) and the ``channels`` the model takes (when
    known)."""
    if dtype != np.dtype("<f4"):
        raise ImageError(
            f"{path} has dtype {dtype.str}, expected float32 ('<f4')",
            hint="save it with arr.astype(np.float32)",
        )
    if not shape:
        raise ImageError(
            f"npy sample {path} is a scalar (shape ()): input {spec.blob} needs an array",
            hint="save the sample as an array in ncnn's (c, h, w) order, or remove it from the "
            "list",
        )
    if math.prod(shape) == 0:
        raise ImageError(
            f"npy sample {path} is empty (shape {shape}): input {spec.blob} needs values",
            hint="save the sample with its values, or remove it from the list",
        )
    want = tuple(reversed(spec.shape))
    if spec.shape and shape != want:
        raise ImageError(
            f"{path} has shape {shape}, expected {want} for input {spec.blob}",
            hint=f"--shape is given in ncnn order w,h,(d),c: {','.join(map(str, spec.shape))}"
            f" means a numpy array of shape {want}",
        )
    if len(shape) > 4:
        raise ImageError(
            f"npy sample {path} has {len(shape)} dimensions {shape}: ncnn takes at most 4 "
            "((c, d, h, w))",
            hint="save the sample without its batch dimension, in ncnn's (c, (d), h, w) order",
        )
    got = npy_channels(shape)
    if channels is not None and got != channels.count:
        hwc = len(shape) == 3 and shape[-1] == channels.count
        raise ImageError(
            f"npy sample {path} has {got} channel(s) (numpy shape {shape}: ncnn reads it as "
            f"(c, (d), h, w)), but input {spec.blob} takes {channels.count} ({channels.source})",
            hint=(
                "the array looks like (h, w, c): save it as arr.transpose(2, 0, 1)"
                if hwc
                else f"save the samples with {channels.count} channel(s) first: (c, (d), h, w)"
            ),
        )


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """:func:`_check_npy_header` with a missing or unreadable file as an :class:`ImageError`."""
    try:
        return _check_npy_header(path)
    except FileNotFoundError:
        raise ImageError(f"npy file {path} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"npy sample {path} is a folder, not a .npy file") from None
    except (ValueError, OSError, EOFError, OverflowError, SyntaxError, tokenize.TokenError) as exc:
        # SyntaxError, TokenError: numpy parsing a garbled header dict; OverflowError: a
        # dimension beyond int64 in an otherwise empty array
        raise ImageError(f"{path} is not a readable .npy file ({exc})") from None


def load_npy(path: Path, spec: InputSpec) -> np.ndarray:
    """A float32 npy sample whose shape is ``spec.shape`` reversed (ncnn's w,h,(d),c order)
    (:func:`check_npy_sample`)."""
    shape, dtype = read_npy_header(path)
    check_npy_sample(path, shape, dtype, spec)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ImageError(f"npy file {path} does not exist") from None
    except (ValueError, OSError, EOFError, OverflowError, SyntaxError, tokenize.TokenError) as exc:
        raise ImageError(f"{path} is not a readable .npy file ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ImageError(f"{path} is an .npz archive, not a single .npy array")
    # the file changed since its header was read: checked again, as loaded
    check_npy_sample(path, tuple(arr.shape), arr.dtype, spec)
    check_finite_sample(arr, path)
    return np.ascontiguousarray(arr)


def check_finite_sample(arr: np.ndarray, path: Path) -> None:
    """Refuse a float sample holding NaN or inf: ncnn would carry it into every activation
    (a NaN sample is never dropped silently, an inf one never widens a blob's range)."""
    finite = np.isfinite(arr)
    if finite.all():
        return
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(arr.size - np.count_nonzero(finite)) - n_nan
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    what = ", ".join(f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "inf")) if n)
    raise ImageError(
        f"npy sample {path} holds {what} value(s) (first at index {first}); calibration "
        "needs finite inputs",
        hint="fix the sample (e.g. numpy.nan_to_num) or remove it from the list",
    )


@dataclass(frozen=True)
class SampleSource:
    """The calibration samples of a model: for each input, one path per sample."""

    specs: tuple[InputSpec, ...]
    paths: tuple[tuple[Path, ...], ...]  # paths[input][sample]
    #: which image sizes were resized to the input size (said once per run)
    notes: ResizeNotes = field(default_factory=ResizeNotes, compare=False, repr=False)

    @property
    def n_samples(self) -> int:
        return len(self.paths[0]) if self.paths else 0

    def sample_names(self) -> list[str]:
        return [str(p) for p in self.paths[0]]

    def load(self, index: int) -> tuple[np.ndarray, ...]:
        out = []
        for spec, paths in zip(self.specs, self.paths, strict=True):
            p = paths[index]
            out.append(
                fit_image(decode_image_bgr(p), spec, self.notes)
                if spec.kind == "image"
                else load_npy(p, spec)
            )
        return tuple(out)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        for i in range(self.n_samples):
            yield self.load(i)

    def subset(self, indices: Sequence[int]) -> SampleSource:
        return SampleSource(
            self.specs,
            tuple(tuple(paths[i] for i in indices) for paths in self.paths),
            self.notes,
        )


def check_finite_preprocessing(specs: Sequence[InputSpec]) -> None:
    """Refuse a NaN or inf ``--mean``/``--norm`` value: every activation would be NaN."""
    for spec in specs:
        for what, values in (("mean", spec.mean), ("norm", spec.norm)):
            bad = [v for v in values if not math.isfinite(v)]
            if bad:
                raise UsageError(
                    f"{what} of input {spec.blob} holds {bad[0]!r}: every activation would be "
                    "NaN/inf",
                    hint=f"give finite {what} values (--{what} or {what}=[...], one per channel)",
                )


def make_sample_source(
    specs: Sequence[InputSpec],
    lists: Sequence[Sequence[Path]],
    channels: Mapping[str, ModelChannels] | None = None,
) -> SampleSource:
    """Pair the lists (one per input, sample i = line i of every list) and check them: every
    sample exists, every ``.npy`` sample's header fits its input (:func:`check_npy_sample`;
    ``channels``: what the model says its inputs take, from
    :func:`~edgecal.inputs.spec.model_channels`)."""
    check_finite_preprocessing(specs)
    if len(lists) != len(specs):
        raise UsageError(
            f"the model has {len(specs)} input(s) ({', '.join(s.blob for s in specs)}) "
            f"but {len(lists)} sample list(s) were given",
            hint="give one list per input, in the order of the model's Input layers",
        )
    lengths = {len(x) for x in lists}
    if len(lengths) > 1:
        detail = ", ".join(f"{s.blob}: {len(x)}" for s, x in zip(specs, lists, strict=True))
        raise UsageError(
            f"the sample lists have different lengths ({detail})",
            hint="sample i is line i of every list; make the lists equally long",
        )
    for paths in lists:
        for p in paths:
            if os.path.islink(p) and not os.path.exists(p):
                raise ImageError(
                    f"sample {p} is a broken symlink (it points to {os.readlink(p)}, which "
                    "does not exist)",
                    hint="fix the link, or its line in the list file",
                )
            if not os.path.exists(p):
                raise ImageError(f"sample {p} does not exist", hint="fix the list file")
            kind = not_a_file(p)  # a FIFO would block the reading (and hashing) forever
            if kind is not None:
                raise ImageError(
                    f"sample {p} is {kind}, not an image or .npy file", hint="fix the list file"
                )
    known = channels or {}
    for spec, paths in zip(specs, lists, strict=True):
        if spec.kind == "npy":  # before any work: ncnn has no Mat for a bad one
            for p in paths:
                shape, dtype = read_npy_header(p)
                check_npy_sample(p, shape, dtype, spec, known.get(spec.blob))
    return SampleSource(tuple(specs), tuple(tuple(x) for x in lists))
