"""The ``litert`` runtime (:class:`LiteRT`, registered on import) and its building blocks:
Keras -> .tflite export, the flatbuffer's graph statistics and I/O signature, batch-1
prediction, latency and memory in LiteRT.

Import is light (numpy and the flatbuffer schema); TensorFlow is imported only by
:func:`export_tflite` / :func:`convert_keras`, through :mod:`workbench._tf`.
"""

from __future__ import annotations

from workbench.runtimes.litert.export import IO_TYPES, TFLITE_SCHEMES, convert_keras, export_tflite
from workbench.runtimes.litert.flatbuffer import (
    TensorSpec,
    TFLiteGraphStats,
    graph_stats,
    io_signature,
    read_tflite,
)
from workbench.runtimes.litert.footprint import FOOTPRINT_CATEGORIES, Footprint, footprint
from workbench.runtimes.litert.memory import measure_memory
from workbench.runtimes.litert.runtime import LiteRT
from workbench.runtimes.litert.session import (
    Delegation,
    delegation,
    delegation_of,
    dequantize,
    litert_version,
    make_interpreter,
    measure_latency,
    operator_profile,
    predict,
    quantize,
    versions,
)
from workbench.runtimes.litert.slim import DEFAULT_NAME_MODE, NAME_MODES, slim_tflite

__all__ = [
    "DEFAULT_NAME_MODE",
    "FOOTPRINT_CATEGORIES",
    "IO_TYPES",
    "NAME_MODES",
    "TFLITE_SCHEMES",
    "Delegation",
    "Footprint",
    "LiteRT",
    "TFLiteGraphStats",
    "TensorSpec",
    "convert_keras",
    "delegation",
    "delegation_of",
    "dequantize",
    "export_tflite",
    "footprint",
    "graph_stats",
    "io_signature",
    "litert_version",
    "make_interpreter",
    "measure_latency",
    "measure_memory",
    "operator_profile",
    "predict",
    "quantize",
    "read_tflite",
    "slim_tflite",
    "versions",
]
