"""Keras model -> ONNX, so a Keras model can be measured in ONNX Runtime too.

Through ``tf2onnx.convert.from_function`` on a ``tf.function`` that calls the model in
inference mode (``tf2onnx.convert.from_keras`` fails under Keras 3). The batch
dimension stays symbolic, the input keeps the Keras layout (NHWC; tf2onnx inserts the
transposes ONNX's NCHW convolutions need), and the output is the model's first output.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from io import StringIO
from pathlib import Path

from workbench._tf import keras, tensorflow
from workbench.errors import WorkbenchError

__all__ = ["ONNX_OPSET", "keras_to_onnx"]

ONNX_OPSET = 17  # the opset the workbench's PyTorch exports use


def keras_to_onnx(model, path: str | os.PathLike, *, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` (a built Keras 3 model with one input) as ONNX to ``path``, atomically.

    Raises:
        WorkbenchError: more than one input, or tf2onnx could not convert the model.
    """
    tf = tensorflow()
    keras()  # imported through the accessor before tf2onnx imports it
    import tf2onnx

    if len(model.inputs) != 1:
        raise WorkbenchError(
            f"the model has {len(model.inputs)} inputs; ONNX export handles one",
            "export a model with a single image input",
        )
    shape = [None, *[int(d) for d in model.inputs[0].shape[1:]]]
    spec = (tf.TensorSpec(shape, tf.float32, name="input"),)
    serve = tf.function(lambda x: model(x, training=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # tf2onnx logs its progress on stdout/stderr; keep the CLI's --json output clean.
        with contextlib.redirect_stdout(StringIO()):
            tf2onnx.convert.from_function(
                serve, input_signature=spec, opset=opset, output_path=str(tmp)
            )
        os.replace(tmp, path)
    except Exception as e:
        detail = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise WorkbenchError(
            f"tf2onnx {tf2onnx.__version__} could not convert the Keras model ({detail[:300]})",
            "use layers with standard TensorFlow operators, or measure the model in LiteRT",
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return path
