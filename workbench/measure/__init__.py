"""Measurement: every number the workbench shows is measured here, on an exported
ONNX artifact in ONNX Runtime (size, weights, MACs, accuracy, latency, memory,
per-operator time) together with the environment it was measured in.
"""

from __future__ import annotations

from workbench.measure.accuracy import accuracy, agreement, top1
from workbench.measure.artifact import GraphStats, file_sizes, graph_stats
from workbench.measure.environment import cpu_features, environment, has_int8_dot_product
from workbench.measure.memory import measure_memory
from workbench.measure.profile import profile_operators
from workbench.measure.runtime import (
    InterleavedTiming,
    ModelInput,
    check_input_shape,
    make_session,
    measure_latency,
    measure_latency_interleaved,
    model_input,
    predict,
    random_input,
)

__all__ = [
    "GraphStats",
    "InterleavedTiming",
    "ModelInput",
    "accuracy",
    "agreement",
    "check_input_shape",
    "cpu_features",
    "environment",
    "file_sizes",
    "graph_stats",
    "has_int8_dot_product",
    "make_session",
    "measure_latency",
    "measure_latency_interleaved",
    "measure_memory",
    "model_input",
    "predict",
    "profile_operators",
    "random_input",
    "top1",
]
