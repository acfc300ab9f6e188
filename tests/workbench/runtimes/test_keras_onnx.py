"""Keras -> ONNX through tf2onnx: the file runs in the workbench's ONNX Runtime measuring."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import measure
from workbench.runtimes import litert
from workbench.runtimes.keras_onnx import keras_to_onnx

pytestmark = pytest.mark.slow


def test_keras_sample_as_onnx_matches_keras_and_its_tflite(
    tmp_path, keras_sample, digits_nhwc, tflite_files
):
    x, y = digits_nhwc
    path = keras_to_onnx(keras_sample, tmp_path / "sample.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["sample.onnx"]
    onnx_logits = measure.predict(path, x)  # the ONNX Runtime path every .onnx takes
    keras_logits = np.asarray(keras_sample(x, training=False))
    assert np.abs(onnx_logits - keras_logits).max() < 1e-4
    # Parity across runtimes: the same model as ONNX and as float TFLite.
    tflite_logits = litert.predict(tflite_files["float"], x)
    assert (onnx_logits.argmax(1) == tflite_logits.argmax(1)).all()
    assert np.abs(onnx_logits - tflite_logits).max() < 1e-3
    # The two files' statistics, counted by two independent readers, agree.
    onnx_stats, tflite_stats = measure.graph_stats(path), litert.graph_stats(tflite_files["float"])
    assert (onnx_stats.params, onnx_stats.macs) == (tflite_stats.params, tflite_stats.macs)
    lat = measure.measure_latency(path, (1, 8, 8, 1), min_runs=5, min_seconds=0.01, warmup=1)
    assert lat.n >= 5
