"""The values every use case starts from: the model's files and its samples.

``inputs`` is one :class:`~edgecal.inputs.spec.ImageInput` or
:class:`~edgecal.inputs.spec.TensorInput` per model input (in Input layer order), or a single
one for a single-input model.  A list file's relative lines are found as ncnn's tools find
them (README: "List files").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgecal.errors import UsageError
from edgecal.files.outputs import Input, input_paths
from edgecal.files.userfile import read_text
from edgecal.inputs.labels import labels_for, parse_labels, parse_text_labels
from edgecal.inputs.model import Model, load_model
from edgecal.inputs.samples import SampleSource, make_sample_source, read_list
from edgecal.inputs.spec import (
    ImageInput,
    TensorInput,
    defaults_used,
    input_specs,
    model_channels,
)
from edgecal.quality.taskmetrics import LABELS_CLASS, LABELS_TEXT, Metric
from edgecal_agent.messages import RUNTIMES

#: A file or folder as a caller names it.
PathArg = str | os.PathLike[str]


def optional_path(p: PathArg | None) -> str | None:
    """``p`` as text (None stays None)."""
    return None if p is None else os.fspath(p)


def check_runtime(runtime: object) -> str:
    """``runtime`` (the API's argument; ``--runtime`` on the command line) when it is one of
    :data:`~edgecal_agent.messages.RUNTIMES`, else a :class:`UsageError` naming it: checked by
    every use case that takes one before any work, not by the device that would refuse it."""
    if isinstance(runtime, str) and runtime in RUNTIMES:
        return runtime
    raise UsageError(
        f"runtime {runtime!r}: not a runtime (give one of {', '.join(RUNTIMES)})",
        hint="calibration: ncnn2table's fp32 options; deployed: the options the app runs "
        "with (runtime=... or --runtime)",
    )


#: One input description, or one per model input.
Inputs = ImageInput | TensorInput | Sequence[ImageInput | TensorInput]


def as_list(inputs: Inputs) -> list[ImageInput | TensorInput]:
    return [inputs] if isinstance(inputs, (ImageInput, TensorInput)) else list(inputs)


#: A model: loaded (:func:`edgecal.load_model`), or its ``(param, bin)`` paths.
ModelArg = Model | tuple[str | os.PathLike[str], str | os.PathLike[str]]


def model_paths(model: ModelArg) -> tuple[str, str]:
    """A model's ``.param`` and ``.bin`` as given (the run documents record them so)."""
    if isinstance(model, Model):
        return str(model.param_path), str(model.bin_path)
    return os.fspath(model[0]), os.fspath(model[1])


def model_inputs(model: ModelArg, role: str = "model") -> list[Input]:
    """The model's files, as inputs no output may overwrite (``role``: how messages name it)."""
    param, binf = model_paths(model)
    return [*input_paths(f"{role} .param", [param]), *input_paths(f"{role} .bin", [binf])]


def resolve_model(model: ModelArg) -> Model:
    """``model`` loaded (and checked): ncnn's .param and .bin."""
    if isinstance(model, Model):
        return model
    param, binf = model_paths(model)
    return load_model(Path(param), Path(binf))


def list_inputs(inputs: Inputs) -> list[Input]:
    """The sample lists, as inputs no output may overwrite."""
    return input_paths("sample list", [os.fspath(i.samples) for i in as_list(inputs)])


def open_samples(
    model: Model,
    inputs: Inputs,
    *,
    ncnn_compat: bool = False,
    say: Callable[[str], None] | None = None,
    where: str = "",
) -> SampleSource:
    """The samples of ``inputs`` for ``model`` (lists read, paths checked); ``ncnn_compat``:
    relative list lines as ncnn2table looks them up (the current directory first); ``say``
    gets a note per image input whose preprocessing was left to the defaults."""
    items = as_list(inputs)
    channels = model_channels(model.param)
    specs = input_specs(str(model.param_path), model.input_blobs, items, where, channels=channels)
    if say is not None:
        for line in defaults_used(specs, items):
            say(line)
    return make_sample_source(
        specs,
        [read_list(Path(os.fspath(i.samples)), ncnn_compat=ncnn_compat) for i in items],
        channels,
    )


def n_classes(model: Model) -> int | None:
    """The class count of a classifier (its last InnerProduct's outputs), else None."""
    producer = model.param.producer(model.output_blobs[0])
    if producer is not None and producer.type == "InnerProduct":
        return producer.param_int(0, 0) or None
    return None


def load_labels(
    path: str | os.PathLike[str] | None, source: SampleSource, model: Model
) -> list[int] | None:
    """The label of every sample of ``source`` from a ``file,label`` CSV (None: no labels)."""
    if path is None:
        return None
    text = os.fspath(path)
    mapping = parse_labels(read_text(Path(text), "labels file"), text)
    return labels_for(mapping, list(source.paths[0]), text, n_classes(model))


def load_text_labels(path: str | os.PathLike[str] | None, source: SampleSource) -> list[str] | None:
    """The label text of every sample of ``source`` from a ``file,label`` CSV (None: no
    labels): what a task metric (``ctc``, the user's) is given."""
    if path is None:
        return None
    text = os.fspath(path)
    mapping = parse_text_labels(read_text(Path(text), "labels file"), text)
    return labels_for(mapping, list(source.paths[0]), text)


def load_metric_labels(
    path: str | os.PathLike[str] | None,
    source: SampleSource,
    model: Model,
    metric: Metric | None,
) -> tuple[list[int] | None, Sequence[Any] | None]:
    """The labels of ``source``'s samples from a ``file,label`` CSV: ``(class indices for the
    top-1 figures, what ``metric`` is given)``.  A metric of text labels (``ctc``, the user's)
    reads the labels as text (no class top-1 then); ``top1`` gets the class indices; one that
    takes none (``fidelity``, ``iou``) gets ``None``."""
    if metric is not None and metric.labels == LABELS_TEXT:
        return None, load_text_labels(path, source)
    classes = load_labels(path, source, model)
    return classes, classes if metric is not None and metric.labels == LABELS_CLASS else None
