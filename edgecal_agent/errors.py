"""Errors a job can fail with.  The class name travels to the host as the error ``kind``."""

from __future__ import annotations

from typing import Any


class JobError(Exception):
    """A job failed for a reason the agent understands; ``kind`` names it on the wire,
    ``details`` (JSON data) travel with it for the host."""

    details: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance, never mutated

    @property
    def kind(self) -> str:
        return type(self).__name__


class BadRequest(JobError):
    """The request is malformed, refers to missing files, or is of another protocol."""


class InputCorrupt(JobError):
    """A pushed input does not hash to the sha256 it was pushed under (a damaged upload or
    disk); the agent removed it, so the host's next push uploads it again."""


class NcnnUnavailable(JobError):
    """The ncnn Python package cannot be imported on this device."""


class ModelLoadError(JobError):
    """ncnn refused the .param or .bin file."""


class BlobNotFound(JobError):
    """A requested blob is not in the model."""


class InputError(JobError):
    """A sample does not fit its input description (shape, channels, dtype)."""


class ExtractError(JobError):
    """ncnn failed to compute a blob."""


class ArtifactMissing(JobError):
    """A file the job wrote vanished (or was replaced) before the agent could answer with it."""


class WorkdirRefused(JobError):
    """The work directory is not one the agent may work in (``/``, outside the user's home or
    the configured root)."""


class DeviceFileError(JobError):
    """A file operation in the work directory failed (disk full, permissions, something in the
    way); the message names the file and the system's reason."""


class NonFiniteActivation(JobError):
    """A calibrated blob holds NaN or inf on some samples (``details["samples"]``: per sample
    index within the job and blob, the NaN and inf counts)."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class OutOfMemory(JobError):
    """The job needed more memory than the device could give (a ``MemoryError``): the model or
    its inputs, not the board's state, so it is not retried."""


class BlobMismatch(JobError):
    """A blob compared with the reference model (``run`` with ``compare``) has another shape
    there: the two models are not the same network (``details``: ``blob``, ``sample`` (the
    job's index), ``shape`` and ``ref_shape``)."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details
