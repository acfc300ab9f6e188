"""The ``Model`` value every model source produces, and its content fingerprints."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from workbench.data import Preprocessing, Task

__all__ = [
    "RANDOM_INIT_SEED",
    "SOURCES",
    "Model",
    "archive_fingerprint",
    "file_fingerprint",
    "keras_weights_fingerprint",
    "weights_fingerprint",
]

# Where a Model came from; also the vocabulary of Model.source.
SOURCES = ("sample", "torchvision", "onnx", "torchscript", "pt2", "state_dict", "keras", "tflite")

# Random initialisation is seeded so a random-init model has a stable fingerprint.
RANDOM_INIT_SEED = 0

_CHUNK = 1 << 20


@dataclass(eq=False)
class Model:
    """A loaded model, ready to compress and measure.

    ``module`` is float32, on the CPU and in eval mode (None for ONNX files, whose
    ``onnx_path`` is the file itself, for Keras models, held in ``keras_model``, and
    for ``.tflite`` files, measured as they are from ``tflite_path``). The model has
    been run once on ``example_input()`` before it is handed out, so ``input_shape`` is
    known to work.
    """

    name: str  # registry name ("digits-cnn", "torchvision:resnet18") or the file path given
    source: str  # one of SOURCES
    input_shape: tuple[int, ...]  # batch-1 input shape, e.g. (1, 1, 8, 8)
    fingerprint: str  # sha256 hex of the weights (or of the file's content)
    module: torch.nn.Module | None = None  # None for ONNX files
    onnx_path: Path | None = None  # the file, for ONNX sources
    task: Task | None = None  # the labelled task the outputs mean, or None when unknown
    preprocessing: Preprocessing | None = None  # how the task's raw images become inputs
    class_names: tuple[str, ...] | None = None  # one name per output class, when known
    meta: dict = field(default_factory=dict)  # JSON-able: sample meta, weights info, file info
    keras_model: Any = None  # the keras.Model, for Keras sources (source "keras"); else None
    tflite_path: Path | None = None  # the file, for .tflite sources (source "tflite")

    def example_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """A seeded standard-normal float32 input of ``input_shape`` with ``batch`` rows."""
        if batch < 1:
            from workbench.errors import WorkbenchError

            raise WorkbenchError(f"batch must be at least 1, got {batch}", "use batch >= 1")
        generator = torch.Generator().manual_seed(seed)
        return torch.randn((batch, *self.input_shape[1:]), generator=generator)

    def describe(self) -> dict:
        """A JSON-able summary (no module) for manifests and the CLI."""
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "task": self.task.name if self.task is not None else None,
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "fingerprint": self.fingerprint,
            "onnx_path": str(self.onnx_path) if self.onnx_path is not None else None,
            "tflite_path": str(self.tflite_path) if self.tflite_path is not None else None,
            "meta": self.meta,
        }


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu()
    if t.is_quantized:
        # The integer payload plus its quantization parameters define the weights.
        params = f"{t.qscheme()}"
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            params += f"{t.q_scale()!r}{t.q_zero_point()}"
        else:
            params += repr(t.q_per_channel_scales().tolist())
            params += repr(t.q_per_channel_zero_points().tolist())
            params += str(t.q_per_channel_axis())
        return params.encode() + _tensor_bytes(t.int_repr())
    # Viewing as bytes works for every dtype (numpy has no bfloat16) and keeps the
    # exact bit pattern, so -0.0 and NaN payloads are distinguished.
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_fingerprint(state: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state_dict: sorted names, each with dtype, shape and raw bytes.

    Identical weights give an identical fingerprint whatever the module object, the
    file they came from or the order they were registered in.
    """
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue  # e.g. _extra_state objects: not weights
        header = f"{name}\0{t.dtype}\0{tuple(t.shape)}\0"
        payload = _tensor_bytes(t)
        h.update(header.encode())
        h.update(len(payload).to_bytes(8, "little"))
        h.update(payload)
    return h.hexdigest()


def keras_weights_fingerprint(keras_model: Any) -> str:
    """sha256 over a Keras model's weights: each variable's path, dtype, shape and raw
    bytes, sorted by path (the same weights give the same fingerprint whatever file or
    save date they came from)."""
    import numpy as np

    h = hashlib.sha256()
    weights = sorted(keras_model.weights, key=lambda w: w.path)
    for w in weights:
        value = np.ascontiguousarray(np.asarray(w.numpy()))
        h.update(f"{w.path}\0{value.dtype.name}\0{value.shape}\0".encode())
        payload = value.tobytes()
        h.update(len(payload).to_bytes(8, "little"))
        h.update(payload)
    return h.hexdigest()


def file_fingerprint(*paths: Path) -> str:
    """sha256 over the bytes of ``paths``, in order (e.g. an ONNX file and its data)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def archive_fingerprint(archive: zipfile.ZipFile) -> str:
    """sha256 over a PyTorch zip archive's entries, independent of the file's name.

    torch names the archive's top folder after the file, so the folder is dropped
    and entries are hashed by their path inside it, sorted: the same program saved
    to two file names has one fingerprint.
    """
    h = hashlib.sha256()
    entries = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        inner = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
        if inner.endswith(".data/serialization_id"):
            continue  # an id of the save call, not of the content
        entries[inner] = info
    for inner in sorted(entries):
        h.update(f"{inner}\0{entries[inner].file_size}\0".encode())
        with archive.open(entries[inner]) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()
