"""Loading a user's Keras model: ``.keras``, full-model ``.h5`` and SavedModel folders.

Loading never executes code from the file: Keras' safe mode stays on, so a ``Lambda``
layer holding Python code is refused with the reason, not run. A SavedModel folder
holds a TensorFlow graph (no Python) and is wrapped as an inference-only Keras model
(``keras.layers.TFSMLayer`` on its ``serving_default`` signature), which the TFLite
export (:func:`workbench.runtimes.litert.export_tflite`) converts like any other.

Every failure is one WorkbenchError naming the problem and the fix: a weights-only
``.h5``, a custom layer that is not registered, a Lambda layer, a truncated file, an
unsupported format.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from workbench._tf import keras, tensorflow
from workbench.errors import WorkbenchError

__all__ = ["KERAS_SUFFIXES", "load_keras"]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_SAVED_MODEL_FILE = "saved_model.pb"
_SIGNATURE = "serving_default"


def load_keras(path: str | os.PathLike):
    """The Keras model stored at ``path`` (a ``.keras``/``.h5`` file or a SavedModel folder).

    Raises:
        WorkbenchError: missing path, unsupported format, weights-only file,
            unregistered custom layer, Lambda layer, truncated or corrupt file, or a
            SavedModel without a single-input ``serving_default`` signature.
    """
    p = Path(path)
    if p.is_dir():
        if (p / _SAVED_MODEL_FILE).is_file():
            return _load_saved_model(p)
        raise WorkbenchError(
            f"{p} is a folder without {_SAVED_MODEL_FILE}, so it is not a SavedModel",
            "pass a .keras or .h5 file, or a SavedModel folder (model.export(folder))",
        )
    if not p.is_file():
        raise WorkbenchError(f"{p} does not exist", "check the path")
    suffix = p.suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise WorkbenchError(
            f"{p.name} is not a Keras model file (expected {', '.join(KERAS_SUFFIXES)} or a "
            "SavedModel folder)",
            "save the model with model.save('model.keras')",
        )
    if suffix == ".keras" and not zipfile.is_zipfile(p):
        raise WorkbenchError(
            f"{p.name} is not a readable .keras file (a .keras file is a zip archive; this "
            "one is truncated, corrupt or another format)",
            "save the model again with model.save('model.keras')",
        )
    try:
        return keras().models.load_model(p, compile=False, safe_mode=True)
    except Exception as e:
        raise _explain(p, e) from e


def _explain(p: Path, e: Exception) -> WorkbenchError:
    msg = str(e)
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", msg)
    if missing:
        return WorkbenchError(
            f"{p.name} uses the custom object {missing.group(1)!r}, which is not registered "
            "in this process",
            "import the module that defines it (decorated with "
            "@keras.saving.register_keras_serializable()) before loading, or save the model "
            "with built-in layers only",
        )
    if "Lambda" in msg and "arbitrary code execution" in msg:
        return WorkbenchError(
            f"{p.name} contains a Lambda layer holding Python code, and loading it would run "
            "that code",
            "replace the Lambda layer with built-in layers; if you trust the file, load it "
            "yourself with keras.models.load_model(path, safe_mode=False) and pass the model",
        )
    if "No model config found" in msg:
        return WorkbenchError(
            f"{p.name} holds weights only, no model (architecture) to load",
            "save the whole model with model.save('model.keras'), or build the architecture "
            "in code and load these weights into it yourself",
        )
    first = next((s.strip() for s in msg.splitlines() if s.strip()), type(e).__name__)
    return WorkbenchError(
        f"{p.name} could not be loaded as a Keras model ({first[:300]})",
        "save the model again with model.save('model.keras'); the file may be truncated or corrupt",
    )


def _load_saved_model(p: Path):
    tf = tensorflow()
    k = keras()
    try:
        signatures = tf.saved_model.load(str(p)).signatures
    except Exception as e:
        first = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise WorkbenchError(
            f"{p.name} could not be loaded as a SavedModel ({first[:300]})",
            "export the model again with model.export(folder) or tf.saved_model.save",
        ) from e
    if _SIGNATURE not in signatures:
        raise WorkbenchError(
            f"the SavedModel {p.name} has no {_SIGNATURE!r} signature (it has: "
            f"{', '.join(signatures) or 'none'})",
            "export it with model.export(folder), which writes a serving_default signature",
        )
    args, kwargs = signatures[_SIGNATURE].structured_input_signature
    specs = [*args, *kwargs.values()]
    if len(specs) != 1:
        raise WorkbenchError(
            f"the SavedModel {p.name} takes {len(specs)} inputs; the workbench handles one",
            "export a model with a single image input",
        )
    spec = specs[0]
    inp = k.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, name="input")
    out = k.layers.TFSMLayer(str(p), call_endpoint=_SIGNATURE)(inp)
    if isinstance(out, dict):  # one entry per named output: take the first by name
        out = out[sorted(out)[0]]
    return k.Model(inp, out, name=p.name)
