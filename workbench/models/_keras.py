"""Keras and TFLite models in: the Keras samples, Keras files and ``.tflite`` files.

A Keras model (a ``.keras`` or full-model ``.h5`` file, a SavedModel folder, or a
Keras sample) becomes a :class:`Model` with ``source == "keras"``, ``keras_model``
set and ``module`` None; it is loaded with Keras' safe mode on (no code from the file
runs; see :mod:`workbench.runtimes.keras_io`). A ``.tflite`` file becomes a Model with
``source == "tflite"`` and ``tflite_path`` set: it is measured as it is (LiteRT or
TensorFlow Lite Micro), and steps that need a trainable or convertible model are
refused.

TensorFlow is imported only here, and only when a Keras model is loaded; a ``.tflite``
file is read from its flatbuffer without TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.data import Preprocessing, get_task
from workbench.errors import WorkbenchError
from workbench.models.model import Model, file_fingerprint, keras_weights_fingerprint

__all__ = [
    "KERAS_SAMPLE_ROOT",
    "TFLITE_SUFFIX",
    "guess_layout",
    "keras_sample_names",
    "load_keras_file",
    "load_keras_sample",
    "load_tflite_file",
]

# Where the Keras samples live: sample_models/keras/<name>/{model.keras, meta.json}.
KERAS_SAMPLE_ROOT = Path(__file__).resolve().parents[2] / "sample_models" / "keras"
_META_FILE = "meta.json"
TFLITE_SUFFIX = ".tflite"


def keras_sample_names() -> list[str]:
    """The shipped Keras samples (folders of sample_models/keras with a meta.json), sorted."""
    return sorted(p.parent.name for p in KERAS_SAMPLE_ROOT.glob(f"*/{_META_FILE}"))


def guess_layout(shape: tuple[int, ...], default: str = "NHWC") -> str:
    """NCHW or NHWC for a 4-D image input ``shape``: the axis holding 1 or 3 channels
    beside two equal spatial axes decides; ``default`` when the shape does not say."""
    if len(shape) == 4:
        nchw = shape[1] in (1, 3) and shape[2] == shape[3]
        nhwc = shape[3] in (1, 3) and shape[1] == shape[2]
        if nchw and not nhwc:
            return "NCHW"
        if nhwc and not nchw:
            return "NHWC"
    return default


def _keras_input_shape(keras_model: Any, display: str, given: tuple[int, ...] | None) -> tuple:
    if len(keras_model.inputs) != 1:
        raise WorkbenchError(
            f"{display} takes {len(keras_model.inputs)} inputs; the workbench handles models "
            "with one image input",
            "save a model with a single input",
        )
    dims = [None if d is None else int(d) for d in keras_model.inputs[0].shape[1:]]
    if given is not None:
        if len(given) != len(dims) + 1 or any(
            d is not None and d != g for d, g in zip(dims, given[1:], strict=False)
        ):
            shown = tuple(["?", *("?" if d is None else d for d in dims)])
            raise WorkbenchError(
                f"{display} takes input shape {shown} (? = any), not {tuple(given)}",
                "drop input_shape or give one that fits the model's input (Keras: NHWC)",
            )
        return tuple(given)
    if any(d is None for d in dims):
        raise WorkbenchError(
            f"{display}'s input has unknown sizes {tuple(['?', *dims])}",
            "pass input_shape=(1, H, W, C) (CLI: --input-shape 1,H,W,C)",
        )
    return (1, *dims)


def _keras_model(keras_model: Any, display: str, fmt: str, path: Path, given: Any) -> Model:
    shape = _keras_input_shape(keras_model, display, given)
    # The weights decide the fingerprint, not the file: a .keras file's bytes hold its
    # save date. A model with no weights of its own (none tracked) falls back to the file.
    fingerprint = (
        keras_weights_fingerprint(keras_model)
        if keras_model.weights
        else file_fingerprint(*sorted(p for p in path.rglob("*") if p.is_file()))
        if path.is_dir()
        else file_fingerprint(path)
    )
    meta = {
        "file": str(path.resolve()),
        "format": fmt,
        "bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size,
        "framework": "keras",
        "parameters": int(keras_model.count_params()),
        "input_layout": guess_layout(shape),
    }
    return Model(
        name=display,
        source="keras",
        keras_model=keras_model,
        input_shape=shape,
        fingerprint=fingerprint,
        meta=meta,
    )


def load_keras_file(path: Path, display: str, input_shape: Any, fmt: str) -> Model:
    """A ``.keras``/``.h5`` file or SavedModel folder as a Model (Keras safe mode on)."""
    from workbench.runtimes.keras_io import load_keras

    try:
        keras_model = load_keras(path)
    except WorkbenchError as e:  # name the file as the user gave it
        raise WorkbenchError(e.problem.replace(path.name, display, 1), e.fix) from None
    return _keras_model(keras_model, display, fmt, path, input_shape)


def load_tflite_file(path: Path, display: str, input_shape: Any) -> Model:
    """A ``.tflite`` file as a Model measured as it is (no TensorFlow import)."""
    from workbench.runtimes.litert.flatbuffer import io_signature, read_tflite

    try:
        parsed = read_tflite(path)
    except WorkbenchError as e:
        raise WorkbenchError(e.problem.replace(path.name, display, 1), e.fix) from None
    inputs, outputs = io_signature(parsed)
    if len(inputs) != 1:
        raise WorkbenchError(
            f"{display} takes {len(inputs)} inputs; the workbench handles models with one "
            "image input",
            "convert a model with a single input",
        )
    dims = inputs[0].shape
    if dims and dims[0] not in (None, 1):
        raise WorkbenchError(
            f"{display} was converted for a fixed batch of {dims[0]}; the workbench runs batch 1",
            "convert it again with batch 1",
        )
    if input_shape is not None:
        if len(input_shape) != len(dims) or any(
            d is not None and d != g for d, g in zip(dims[1:], input_shape[1:], strict=False)
        ):
            raise WorkbenchError(
                f"{display} takes input shape {tuple('?' if d is None else d for d in dims)} "
                f"(? = any), not {tuple(input_shape)}",
                "drop input_shape or give one that fits the file's input",
            )
        shape = tuple(input_shape)
    elif any(d is None for d in dims[1:]) or not dims:
        raise WorkbenchError(
            f"{display}'s input has unknown sizes {tuple('?' if d is None else d for d in dims)}",
            "pass input_shape=(1, H, W, C) (CLI: --input-shape 1,H,W,C)",
        )
    else:
        shape = (1, *(int(d) for d in dims[1:]))
    meta = {
        "file": str(path.resolve()),
        "format": "tflite",
        "bytes": path.stat().st_size,
        "input": inputs[0].to_dict(),
        "outputs": [o.to_dict() for o in outputs],
        "input_layout": guess_layout(shape),
    }
    return Model(
        name=display,
        source="tflite",
        tflite_path=path,
        input_shape=shape,
        fingerprint=file_fingerprint(path),
        meta=meta,
    )


def load_keras_sample(
    name: str,
    *,
    pretrained: bool,
    input_shape: tuple[int, ...] | None,
    preprocessing: Preprocessing | None,
) -> Model:
    """Keras sample ``name`` with its trained weights, task and (NHWC) preprocessing."""
    folder = KERAS_SAMPLE_ROOT / name
    meta = json.loads((folder / _META_FILE).read_text(encoding="utf-8"))
    shape = tuple(int(d) for d in meta["input_shape"])
    prep = Preprocessing.from_dict(meta["preprocessing"])
    if not pretrained:
        raise WorkbenchError(
            f"random weights are offered for PyTorch samples and torchvision, not the Keras "
            f"sample {name}",
            "drop pretrained=False (CLI: --random-init)",
        )
    if input_shape is not None and tuple(input_shape) != shape:
        raise WorkbenchError(
            f"sample {name} takes input shape {shape}, not {tuple(input_shape)}",
            "drop input_shape (the sample's shape is used)",
        )
    if preprocessing is not None and preprocessing != prep:
        raise WorkbenchError(
            f"sample {name} was trained with preprocessing {prep}, not {preprocessing}",
            "drop preprocessing (the sample's own is used)",
        )
    model = load_keras_file(folder / meta["model_file"], name, None, "keras")
    task = get_task(meta["task"])
    model.meta = {**meta, **{k: model.meta[k] for k in ("file", "format", "bytes")}}
    model.meta["sample"] = True
    model.task = task
    model.preprocessing = prep
    model.class_names = tuple(str(c) for c in meta.get("class_names") or task.class_names)
    if model.input_shape != shape:
        raise WorkbenchError(
            f"the Keras sample {name}'s file takes {model.input_shape}, its meta.json says {shape}",
            "retrain it: python -m sample_models.train_keras",
        )
    return model
