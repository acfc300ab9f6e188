"""TensorFlow Lite Micro: the ``tflite-micro`` runtime (registered on import), and its
building blocks: run an int8 .tflite in TFLM's Python interpreter, find its exact tensor
arena, and export it as a C array for firmware.

No latency is measured here: TFLM's reference kernels on this machine say nothing
about a microcontroller's speed.
"""

from __future__ import annotations

from workbench.runtimes.tflite_micro.c_array import export_c_array, read_c_array
from workbench.runtimes.tflite_micro.runner import (
    ArenaReport,
    check_integer_model,
    predict,
    tensor_arena,
    tflm_version,
)
from workbench.runtimes.tflite_micro.runtime import TFLM_RUNTIME, TFLiteMicroRuntime, arena_of

__all__ = [
    "TFLM_RUNTIME",
    "ArenaReport",
    "TFLiteMicroRuntime",
    "arena_of",
    "check_integer_model",
    "export_c_array",
    "predict",
    "read_c_array",
    "tensor_arena",
    "tflm_version",
]
