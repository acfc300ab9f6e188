"""Quantization-aware training measured in LiteRT: the QAT-trained weights reach the
.tflite and its full-integer int8 holds exactly the integers they were trained on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from workbench.pipeline import _build_artifact, calibration_inputs, evaluate
from workbench.recipe import QATConfig, QuantizeConfig, Recipe
from workbench.runtimes import get_runtime
from workbench.runtimes.litert import graph_stats, read_tflite

pytestmark = pytest.mark.slow  # trains digits-cnn for one epoch and converts (~30 s)

QAT_1 = Recipe((QATConfig(epochs=1),))
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _weight_tensors(path) -> tuple[object, list[int]]:
    m = read_tflite(path)
    return m, [int(op.inputs[1]) for op in m.subgraph.operators if m.op_name(op) in WEIGHTED_OPS]


def _grid_error(float_file, int8_file) -> list[float]:
    """Per weighted layer: the largest |dequantized int8 weight - float weight| in units of
    the layer's own quantization step (0: the float weights sat on the int8 grid; up to
    0.5: ordinary rounding)."""
    f, f_idx = _weight_tensors(float_file)
    q, q_idx = _weight_tensors(int8_file)
    assert len(f_idx) == len(q_idx) > 0
    out = []
    for fi, qi in zip(f_idx, q_idx, strict=True):
        w, wq = f.buffer_array(fi), q.buffer_array(qi)
        assert wq.dtype == np.int8 and w.shape == wq.shape
        quant = q.subgraph.tensors[qi].quantization
        scale = np.asarray(quant.scale, dtype=np.float64)
        shape = [1] * wq.ndim
        if scale.size > 1:
            shape[int(quant.quantizedDimension)] = scale.size
        scale = scale.reshape(shape)
        out.append(float(np.max(np.abs(wq * scale - w) / scale)))
    return out


def test_qat_for_litert_exports_the_trained_weights_and_quantizes_them_to_int8(cnn, tmp_path):
    rt = get_runtime("litert")
    parity = calibration_inputs(cnn, 4)
    qat_work, ptq_work = tmp_path / "qat", tmp_path / "ptq"
    qat_work.mkdir()
    ptq_work.mkdir()
    artifact, _, float_file, reports = _build_artifact(cnn, QAT_1, qat_work, parity, rt)
    # The implied int8 step ran in LiteRT's converter, after the training.
    assert [r["kind"] for r in reports] == ["qat", "quantize"]
    assert reports[1]["scheme"] == "int8" and reports[1]["converter"].startswith("tf.lite")
    assert set(graph_stats(artifact).weight_dtypes) == {"int8", "int32"}
    # The float file holds the trained weights, on their int8 grid, and the int8 file
    # holds exactly those integers (every convolution and dense layer, per channel).
    assert max(_grid_error(float_file, artifact)) < 1e-3
    # Post-training int8 of the untrained weights rounds them: the check can tell.
    ptq, _, ptq_float, _ = _build_artifact(
        cnn, Recipe.of(quantize=QuantizeConfig()), ptq_work, parity, rt
    )
    assert max(_grid_error(ptq_float, ptq)) > 0.25


def test_qat_through_evaluate_in_litert(cnn, quick, session_cache):
    litert_quick = dataclasses.replace(quick, runtime="litert")
    base = evaluate(cnn, settings=litert_quick, cache=session_cache)
    r = evaluate(cnn, QAT_1, settings=litert_quick, cache=session_cache)
    assert r.runtime == "litert" and r.artifact.suffix == ".tflite"
    assert [s["kind"] for s in r.steps] == ["qat", "quantize"]
    assert r.metrics.size_bytes * 3 < base.metrics.size_bytes  # int8 weights
    assert r.metrics.accuracy >= base.metrics.accuracy - 0.02
