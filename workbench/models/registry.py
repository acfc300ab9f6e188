"""The model registry: ``list_models()`` and ``load_model()``.

Three kinds of source: the trained samples in ``sample_models/`` (PyTorch, and Keras
in ``sample_models/keras/``), torchvision's classification architectures
(``torchvision:<arch>``) and the user's own files (ONNX, TorchScript, torch.export
``.pt2``, state_dict + ``arch``, Keras ``.keras``/``.h5``/SavedModel, ``.tflite``). Every model is run
once on its input shape before it is returned, so a wrong shape fails here, with a
message, rather than in the middle of a sweep.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from workbench.data import Preprocessing, Task, get_task
from workbench.errors import WorkbenchError
from workbench.models import _files, _keras, _sample, _torchvision
from workbench.models.model import Model

__all__ = ["input_layout", "list_models", "load_model", "unknown_name_error"]

_WILDCARDS = "*?["


def _may_match_prefix(pattern: str, prefix: str) -> bool:
    # The pattern's literal head decides whether any name starting with `prefix` can
    # match; skipping torchvision's import (about 2 s) when none can keeps
    # list_models("digits*") instant.
    cut = min((pattern.find(c) for c in _WILDCARDS if c in pattern), default=len(pattern))
    literal = pattern[:cut]
    return literal.startswith(prefix) or prefix.startswith(literal)


def list_models(pattern: str = "*") -> list[str]:
    """Registry names matching the shell-style ``pattern``: PyTorch samples first, then
    Keras samples, then torchvision.

    Example: ``list_models("torchvision:mobilenet*")``.
    """
    names = [*_sample.sample_names(), *_keras.keras_sample_names()]
    if _may_match_prefix(pattern, _torchvision.PREFIX):
        names += [_torchvision.PREFIX + a for a in _torchvision.torchvision_archs()]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def unknown_name_error(name: str, what: str = "model") -> WorkbenchError:
    """The error for a name that is neither a registry entry nor an existing file."""
    names = list_models()
    # Match bare torchvision names too: "resnet18" should suggest "torchvision:resnet18".
    candidates = {n.removeprefix(_torchvision.PREFIX): n for n in names} | {n: n for n in names}
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    close = list(dict.fromkeys(candidates[c] for c in close))
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return WorkbenchError(
        f"unknown {what} {name!r}",
        f"{hint}run `workbench models` to list the registry's names, or pass the path "
        "of a model file",
    )


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text
        or os.sep in text
        or text.startswith(("~", "."))
        or Path(text).suffix.lower() in _files.FILE_SUFFIXES
    )


def _shape(input_shape: Sequence[int] | None) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) < 2 or any(d < 1 for d in shape) or shape[0] != 1:
        raise WorkbenchError(
            f"input_shape {input_shape!r} is not a batch-1 shape",
            "give the shape of one input, batch first, e.g. (1, 3, 224, 224)",
        )
    return shape


def _preprocessing(value: Preprocessing | dict | None) -> Preprocessing | None:
    if value is None or isinstance(value, Preprocessing):
        return value
    if isinstance(value, dict):
        return Preprocessing.from_dict(value)
    raise WorkbenchError(
        f"preprocessing must be a Preprocessing or a dict, not {type(value).__name__}",
        "pass workbench.data.Preprocessing(size=..., channels=...)",
    )


def _task(value: Task | str | None) -> Task | None:
    if value is None or isinstance(value, Task):
        return value
    if isinstance(value, str):
        return get_task(value)
    raise WorkbenchError(
        f"task must be a task name or a Task, not {type(value).__name__}",
        "pass task='digits'",
    )


def _short(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else type(e).__name__).rstrip(". ")


def _shape_error(model: Model, e: BaseException) -> WorkbenchError:
    return WorkbenchError(
        f"{model.name} does not run on input shape {model.input_shape}: {_short(e)}",
        "pass input_shape= the shape the model takes, batch first (CLI: --input-shape)",
    )


def _output_shape(model: Model) -> tuple[int, ...]:
    """Run ``model`` once on ``example_input()``; the output's shape."""
    x = model.example_input()
    if model.keras_model is not None:
        try:
            out = model.keras_model(x.numpy(), training=False)
        except Exception as e:  # Keras and TensorFlow raise many types for a bad shape
            raise _shape_error(model, e) from None
        if isinstance(out, (list, tuple, dict)):
            raise WorkbenchError(
                f"{model.name} returns {len(out)} outputs, not one tensor of logits",
                "save a model whose only output is the logits",
            )
        return tuple(int(d) for d in out.shape)
    if model.tflite_path is not None:
        from workbench.runtimes.litert.session import predict

        return tuple(int(d) for d in predict(model.tflite_path, x.numpy()).shape)
    if model.module is None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a smoke run; leave the cores to others
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(model.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            from workbench.measure.runtime import too_new_for_runtime

            too_new = too_new_for_runtime(model.name, str(e))
            if too_new is not None:
                raise too_new from None
            raise WorkbenchError(
                f"ONNX Runtime cannot load {model.name}: {_short(e)}",
                "re-export the model with standard operators (torch.onnx.export, opset 17+)",
            ) from None
        try:
            outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        except Exception as e:
            raise _shape_error(model, e) from None
        return tuple(int(d) for d in outputs[0].shape)
    try:
        with torch.no_grad():
            out = model.module(x)
    except Exception as e:  # any failure of the forward pass is a bad input shape or model
        raise _shape_error(model, e) from None
    if not isinstance(out, torch.Tensor):
        raise WorkbenchError(
            f"{model.name} returns a {type(out).__name__}, not one tensor of logits",
            "wrap the model so that forward returns the logits tensor only",
        )
    return tuple(out.shape)


def _attach(
    model: Model, task: Task | None, preprocessing: Preprocessing | None, output: tuple[int, ...]
) -> Model:
    """Attach the requested task and preprocessing, checking they fit the model."""
    if preprocessing is not None and preprocessing.input_shape != model.input_shape:
        raise WorkbenchError(
            f"preprocessing makes inputs of shape {preprocessing.input_shape} "
            f"({preprocessing.layout}) but {model.name} takes {model.input_shape}",
            "give preprocessing whose size, channels and layout match the model's input "
            "(Keras and TFLite models usually take NHWC: layout='NHWC')",
        )
    if task is None:
        if preprocessing is not None:
            model.preprocessing = preprocessing
        _check_outputs(model, output)
        return model
    if model.task is not None and model.task != task:
        raise WorkbenchError(
            f"{model.name} is a {model.task.name} model, not {task.name}",
            "drop task= (the model's own task is used)",
        )
    prep = preprocessing or model.preprocessing
    if prep is None:
        shape = model.input_shape
        layout = input_layout(model)
        h, w = (1, 2) if layout == "NHWC" else (2, 3)
        if len(shape) != 4 or shape[h] != shape[w] or shape[h] % 8:
            raise WorkbenchError(
                f"{model.name}'s input shape {shape} cannot take the {task.name} task: its "
                "8x8 images are enlarged by whole blocks to (1, C, S, S) or (1, S, S, C), "
                "S a multiple of 8",
                "use a model with such an input, or pass preprocessing= explicitly",
            )
        prep = Preprocessing.for_input_shape(shape, layout)
    model.task = task
    model.preprocessing = prep
    model.class_names = model.class_names or task.class_names
    _check_outputs(model, output)
    return model


def input_layout(model: Model) -> str:
    """The layout a model's image input most likely has: NCHW for PyTorch and ONNX
    models; for Keras and TFLite models NHWC unless the shape says channels first
    (a TFLite file converted from PyTorch keeps NCHW)."""
    if model.source in ("keras", "tflite"):
        return _keras.guess_layout(tuple(model.input_shape), "NHWC")
    return "NCHW"


def _check_outputs(model: Model, output: tuple[int, ...]) -> None:
    task = model.task
    if task is not None and (len(output) != 2 or output[1] != task.num_classes):
        raise WorkbenchError(
            f"{model.name} outputs shape {output}, but the {task.name} task needs "
            f"(batch, {task.num_classes}) logits",
            f"use a model with {task.num_classes} outputs (replace and fine-tune its "
            "classifier), or load it without task=",
        )


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    pretrained: bool = True,
    task: Task | str | None = None,
    input_shape: Sequence[int] | None = None,
    preprocessing: Preprocessing | dict | None = None,
) -> Model:
    """Load a registry model or a model file, run it once, and return it as a Model.

    Args:
        name_or_path: a sample name ("digits-cnn", "digits-cnn-keras"),
            "torchvision:<arch>", or a file: ONNX, TorchScript, torch.export .pt2, a
            state_dict (needs ``arch``), a Keras ``.keras``/full-model ``.h5`` file or
            SavedModel folder (loaded in Keras' safe mode: no code runs), or a
            ``.tflite`` file (measured as it is). Files are recognised by content.
        arch: for state_dict files, a sample name or "torchvision:<arch>".
        pretrained: False gives seeded random weights (torchvision archs and samples);
            True uses weights already on this machine and never downloads.
        task: "digits" (or a Task) to attach: the model must output 10 classes.
        input_shape: batch-1 input shape; required where the file does not record it
            (TorchScript), otherwise it overrides the source's default.
        preprocessing: how task images become inputs; inferred from ``input_shape``
            (mean 0, std 1) when a task is given without it.

    Raises:
        WorkbenchError: unknown name, missing/empty/damaged/unknown file, a pickle
            that would run code, missing arch or input shape, a shape the model does
            not run on, or a task the outputs do not fit.
    """
    shape = _shape(input_shape)
    # A preprocessing dict that does not name its layout takes the model's own (NHWC for
    # a Keras model), decided once the model is loaded.
    layout_from_model = isinstance(preprocessing, dict) and "layout" not in preprocessing
    prep = None if layout_from_model else _preprocessing(preprocessing)
    wanted_task = _task(task)
    if shape is None and prep is not None:
        shape = prep.input_shape

    if isinstance(name_or_path, os.PathLike):
        display, kind = os.fspath(name_or_path), "file"
    elif isinstance(name_or_path, str):
        display = name_or_path
        if display.startswith(_torchvision.PREFIX):
            kind = "torchvision"
        elif display in _sample.sample_names():
            kind = "sample"
        elif display in _keras.keras_sample_names():
            kind = "keras_sample"
        elif display and (Path(display).expanduser().exists() or _looks_like_path(display)):
            kind = "file"
        else:
            raise unknown_name_error(display)
    else:
        raise WorkbenchError(
            f"expected a model name or path, got {type(name_or_path).__name__}",
            "pass a name from `workbench models` or the path of a model file",
        )
    if arch is not None and kind != "file":
        raise WorkbenchError(
            f"arch= applies to state_dict files only, not to {display}",
            "drop arch (CLI: --arch)",
        )

    model = _SOURCES[kind](display, pretrained=pretrained, arch=arch, input_shape=shape, prep=prep)
    if layout_from_model:
        prep = Preprocessing.from_dict({**preprocessing, "layout": input_layout(model)})
        if kind in ("sample", "keras_sample") and prep != model.preprocessing:
            raise WorkbenchError(
                f"sample {display} was trained with preprocessing {model.preprocessing}, "
                f"not {prep}",
                "drop preprocessing (the sample's own is used)",
            )
    output = _output_shape(model)
    model.meta["output_shape"] = list(output)
    if model.module is not None:
        model.meta["parameters"] = sum(p.numel() for p in model.module.parameters())
    return _attach(model, wanted_task, prep, output)


def _load_sample(display: str, *, pretrained: bool, input_shape: Any, prep: Any, **_: Any) -> Model:
    return _sample.load_sample(
        display, pretrained=pretrained, input_shape=input_shape, preprocessing=prep
    )


def _load_keras_sample(
    display: str, *, pretrained: bool, input_shape: Any, prep: Any, **_: Any
) -> Model:
    return _keras.load_keras_sample(
        display, pretrained=pretrained, input_shape=input_shape, preprocessing=prep
    )


def _load_torchvision(display: str, *, pretrained: bool, input_shape: Any, **_: Any) -> Model:
    arch = display[len(_torchvision.PREFIX) :]
    return _torchvision.load_torchvision(arch, pretrained=pretrained, input_shape=input_shape)


def _load_path(display: str, *, arch: str | None, input_shape: Any, **_: Any) -> Model:
    path = Path(display).expanduser()
    return _files.load_file(path, display, arch=arch, input_shape=input_shape)


# Source kind -> loader: a new source is one entry here.
_SOURCES = {
    "sample": _load_sample,
    "keras_sample": _load_keras_sample,
    "torchvision": _load_torchvision,
    "file": _load_path,
}
