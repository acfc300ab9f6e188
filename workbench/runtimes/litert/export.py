"""Keras model -> ``.tflite`` through the TFLite converter: float, fp16, dynamic int8, full int8.

The schemes use the workbench's quantization scheme names (``workbench.recipe.QUANT_SCHEMES``)
plus ``"float"`` for no quantization:

- ``"float"``: float32 weights and activations.
- ``"fp16"``: float16 weights (DEQUANTIZE to float32 at load), float32 compute.
- ``"dynamic"``: dynamic-range int8: int8 weights, activations quantized on the fly.
- ``"int8"``: full-integer int8: weights and activations int8, scales from a
  representative dataset drawn from the training part only; the model's input and
  output are int8 (``io="int8"``, what a microcontroller wants) or float32 with
  QUANTIZE/DEQUANTIZE inside (``io="float"``).

The model is converted with a fixed batch of 1 (a wrapper model with a batch-1 input
around the same layers): the file then has static shapes throughout, which TFLite Micro
needs and which saves the SHAPE/STRIDED_SLICE/PACK operators a dynamic batch adds.

The converter's bytes are then re-serialized by
:func:`workbench.runtimes.litert.slim.slim_tflite` (every scheme alike, so size ratios
compare like with like): identical vectors stored once (the per-channel zero-point
arrays of a full-int8 file are most of it), empty buffers dropped, and inner tensor
names compacted to their layer's name (``names="keep"`` or ``"strip"`` to choose).
Every weight, scale, zero point, shape and operator is unchanged: LiteRT and TFLite
Micro give bit-identical outputs on the slimmed and the converter's file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import uuid
import warnings
from io import StringIO
from pathlib import Path

import numpy as np

from workbench._tf import keras, tensorflow
from workbench.errors import WorkbenchError
from workbench.recipe import QUANT_SCHEMES
from workbench.runtimes.litert.slim import DEFAULT_NAME_MODE, NAME_MODES, slim_tflite

__all__ = ["IO_TYPES", "TFLITE_SCHEMES", "c_stderr_held", "convert_keras", "export_tflite"]

TFLITE_SCHEMES = ("float", *QUANT_SCHEMES)
IO_TYPES = ("int8", "float")


def _check(scheme: str, io: str, calibration: np.ndarray | None, names: str) -> None:
    if scheme not in TFLITE_SCHEMES:
        raise WorkbenchError(
            f"unknown TFLite scheme {scheme!r}", f"use one of: {', '.join(TFLITE_SCHEMES)}"
        )
    if io not in IO_TYPES:
        raise WorkbenchError(
            f"unknown input/output type {io!r}", f"use one of: {', '.join(IO_TYPES)}"
        )
    if names not in NAME_MODES:
        raise WorkbenchError(
            f"unknown tensor-name mode {names!r}", f"use one of: {', '.join(NAME_MODES)}"
        )
    if scheme == "int8" and (calibration is None or len(calibration) == 0):
        raise WorkbenchError(
            "full-integer int8 needs a representative dataset and none was given",
            "pass calibration= images from the training part (e.g. Task.calibration(...)), "
            "in the model's input layout",
        )


@contextlib.contextmanager
def c_stderr_held():
    """Hold what C code writes to file descriptor 2 during the block; let it out on failure.

    The TFLite converter's C++ side prints its settings (``fully_quantize: 0,
    inference_type: 6, ...``) and absl log lines straight to fd 2, past ``sys.stderr``,
    so they land in the terminal, the CLI's output and the notebook's log on every
    conversion. Here fd 2 points at a temporary file for the block and is restored
    after it; if the block raises, what was held is written to the real stderr first,
    since it then explains the failure. Python's own writes to ``sys.stderr`` during the
    block are held the same way.
    """
    _flush_stderr()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                text = held.read().decode(errors="replace")
                if text and sys.stderr is not None:
                    sys.stderr.write(text)
                    _flush_stderr()


def _flush_stderr() -> None:
    if sys.stderr is not None:  # None under pythonw
        sys.stderr.flush()


def convert_keras(
    model,
    scheme: str = "float",
    *,
    calibration: np.ndarray | None = None,
    io: str = "int8",
    per_channel: bool = True,
    names: str = DEFAULT_NAME_MODE,
    slim: bool = True,
) -> bytes:
    """The ``.tflite`` bytes of a Keras model under ``scheme`` (see the module docstring).

    Args:
        model: a built Keras 3 model with one input.
        calibration: for ``"int8"``: float32 inputs in the model's layout (e.g. NHWC),
            from the training part; each row is fed once to the converter.
        io: for ``"int8"``: ``"int8"`` (integer input and output) or ``"float"``.
        per_channel: for the int8 schemes: one weight scale per output channel (the
            converter's default) or, False, one per tensor.
        names: inner tensor names, one of ``NAME_MODES`` (see ``slim.NAME_MODES``);
            inputs and outputs always keep theirs.
        slim: False returns the converter's bytes as they are (``names`` is then moot).

    Raises:
        WorkbenchError: unknown scheme, io or names, no calibration for int8, more than one
            input, or the converter failed (its first line is in the message).
    """
    _check(scheme, io, calibration, names)
    tf = tensorflow()
    if len(model.inputs) != 1:
        raise WorkbenchError(
            f"the model has {len(model.inputs)} inputs; TFLite export handles one",
            "export a model with a single image input",
        )
    shape = [1, *[int(d) for d in model.inputs[0].shape[1:]]]

    # A wrapper with a fixed batch of 1 around the same layers (no weights copied).
    # from_keras_model freezes the weights into the file; a tf.function over the model
    # would keep them as resource variables (VAR_HANDLE / READ_VARIABLE), which the
    # calibrator and TFLite Micro cannot run.
    k = keras()
    inp = k.Input(batch_shape=tuple(shape), name="input")
    fixed = k.Model(inp, model(inp, training=False))
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    if scheme != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if scheme in ("int8", "dynamic") and not per_channel:
        # The converter's switch for per-tensor weight scales (TF 2.21: experimental).
        converter._experimental_disable_per_channel = True
    if scheme == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if scheme == "int8":
        rows = np.asarray(calibration, dtype=np.float32)
        if tuple(rows.shape[1:]) != tuple(shape[1:]):
            raise WorkbenchError(
                f"calibration rows have shape {list(rows.shape[1:])}, the model's input "
                f"{shape[1:]}",
                "pass calibration images in the model's input layout (NHWC for Keras)",
            )

        def representative():
            for row in rows:
                yield [row[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        # Keras prints its export signature to stdout while converting; that would mix
        # into the CLI's --json output.
        # Its UserWarning about "statistics for quantized inputs" concerns int8 inputs
        # fed without scales, which predict() never does (it quantizes with the file's).
        # The converter's C++ settings lines go to fd 2: held, and shown only on failure.
        with (
            contextlib.redirect_stdout(StringIO()),
            warnings.catch_warnings(),
            c_stderr_held(),
        ):
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            data = bytes(converter.convert())
    except Exception as e:
        detail = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise WorkbenchError(
            f"the TFLite converter could not convert the model ({detail[:300]})",
            "use layers with TFLite builtin operators (see the LiteRT op compatibility list)",
        ) from e
    return slim_tflite(data, names=names) if slim else data


def export_tflite(
    model,
    path: str | os.PathLike,
    scheme: str = "float",
    *,
    calibration: np.ndarray | None = None,
    io: str = "int8",
    per_channel: bool = True,
    names: str = DEFAULT_NAME_MODE,
    slim: bool = True,
) -> Path:
    """Convert ``model`` (see :func:`convert_keras`) and write the file atomically to ``path``."""
    data = convert_keras(
        model,
        scheme,
        calibration=calibration,
        io=io,
        per_channel=per_channel,
        names=names,
        slim=slim,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
