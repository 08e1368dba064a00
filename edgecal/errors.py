"""The one exception hierarchy of edgecal.

Every error a user can cause or meet carries a message that names the file, layer or board
involved, and where possible a ``hint`` saying how to fix it.  Only ``edgecal.cli`` turns these
into exit codes; library code raises, never prints or exits.
"""

from __future__ import annotations


class EdgecalError(Exception):
    """Root of every error edgecal raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"

    @property
    def headline(self) -> str:
        """What went wrong, without the detail below it (e.g. an agent's last stderr lines)."""
        return self.message.partition("\n")[0]


class UsageError(EdgecalError):
    """Bad command-line arguments or option values."""

    exit_code = 2


class InputFileError(EdgecalError):
    """A file the user named is missing, unreadable or not what it should be."""


class ModelFormatError(InputFileError):
    """A .param or .bin file is malformed, or the two do not match."""


class UnsupportedLayerError(ModelFormatError):
    """A layer type with weights that the .bin reader does not know."""


class TableError(InputFileError):
    """A calibration table is malformed or does not fit the model."""


class ImageError(InputFileError):
    """An image or npy calibration input cannot be used."""


class HistogramFileError(InputFileError):
    """A saved histogram file is malformed or of an unknown version."""


class CalibrationError(EdgecalError):
    """The calibration maths cannot produce a scale (e.g. no data at all)."""


class ConversionError(EdgecalError):
    """The int8 conversion cannot proceed."""


class DeviceError(EdgecalError):
    """Something went wrong on or with a device (local subprocess or board)."""


class ProtocolError(DeviceError):
    """The agent's reply is malformed or of an incompatible protocol version."""


class AgentError(DeviceError):
    """A job failed inside the device agent; carries the agent's error kind."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "",
        remote_traceback: str = "",
        hint: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.remote_traceback = remote_traceback
        self.details = dict(details or {})


class AgentCrash(DeviceError):
    """The agent died of a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) while running a
    job: ncnn crashed on the job's model or input.  The job would crash on every try and every
    board, so it is not retried as a board fault."""


class ConfigError(InputFileError):
    """A boards file or board profile is malformed (the message names the file and key)."""


class TransportError(DeviceError):
    """The board cannot be reached or talked to over SSH (connect, auth, transfer, command)."""


class HostKeyError(TransportError):
    """The board's SSH host key is unknown or has changed: refused."""


class BoardSetupError(DeviceError):
    """The board lacks what the agent needs (python3, numpy, ncnn, a writable work directory)."""


class NativeBuildError(EdgecalError):
    """The native agent (or the libncnn it links) cannot be fetched or built."""
