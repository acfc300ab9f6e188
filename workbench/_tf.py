"""The one door to TensorFlow and Keras: imported on first use, safe beside PyTorch.

``import tensorflow`` costs about 5 s, so nothing in the workbench imports it at module
level: PyTorch-only work, ``import workbench`` and the CLI's start never pay for it.
Call :func:`tensorflow` or :func:`keras` where a TensorFlow feature is used.

Why the order matters: TensorFlow and triton (which PyTorch loads for
``torch.export``, ``torch.compile`` and its optimizers' fused paths) both carry
native libraries built from LLVM. When TensorFlow's libraries are loaded first,
loading triton's ``libtriton`` afterwards crashes the process with a segmentation
fault (measured with TensorFlow 2.21 and triton 3.8, torch 2.14.1). Loaded the other
way round both work. So before TensorFlow is imported, this module loads
``triton._C.libtriton`` (0.15 s) when triton is installed; one process can then use
both frameworks in any order. ``tests/workbench/runtimes/test_tf_import.py`` proves it
in fresh processes.

Anything that imports TensorFlow itself (``tf2onnx``, ``keras``) must be imported
after :func:`tensorflow` has been called.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

from workbench.errors import WorkbenchError

__all__ = ["keras", "load_triton_first", "tensorflow", "tensorflow_loaded"]

_state: dict[str, ModuleType] = {}


def tensorflow_loaded() -> bool:
    """Whether TensorFlow has been imported in this process (by anyone)."""
    return "tensorflow" in sys.modules


def load_triton_first() -> bool:
    """Load triton's native library if triton is installed; True if it is loaded.

    Must run before TensorFlow's libraries are loaded (see the module docstring). Safe
    to call any number of times.
    """
    if "triton._C.libtriton" in sys.modules:
        return True
    if importlib.util.find_spec("triton") is None:
        return False
    importlib.import_module("triton._C.libtriton")
    return True


def tensorflow() -> ModuleType:
    """The ``tensorflow`` module, imported on first call with triton loaded before it.

    Raises:
        WorkbenchError: TensorFlow is not installed, or it was imported before triton
            (by code outside the workbench) and triton has not been loaded yet, which
            would crash the process on the next ``torch.export`` or ``torch.compile``.
    """
    if "tensorflow" in _state:
        return _state["tensorflow"]
    if tensorflow_loaded() and "triton._C.libtriton" not in sys.modules:
        if importlib.util.find_spec("triton") is not None:
            raise WorkbenchError(
                "TensorFlow was imported before PyTorch's triton in this process; loading "
                "triton now (torch.export, torch.compile, torch.optim) would crash it",
                "restart the kernel and use TensorFlow through the workbench, or run "
                "`import triton._C.libtriton` before `import tensorflow`",
            )
    load_triton_first()
    # INFO lines (oneDNN notices) would clutter notebooks and the CLI; the user's own
    # setting wins, and warnings and errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise WorkbenchError(
            f"TensorFlow is not installed ({e})",
            "install the workbench with its dependencies: pip install -e . (or make)",
        ) from e
    _state["tensorflow"] = tf
    return tf


def keras() -> ModuleType:
    """The ``keras`` (Keras 3) module, imported after :func:`tensorflow`."""
    if "keras" not in _state:
        tensorflow()
        import keras as k

        _state["keras"] = k
    return _state["keras"]
