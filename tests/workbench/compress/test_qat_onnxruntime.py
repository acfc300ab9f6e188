"""Quantization-aware training measured in ONNX Runtime: the static QDQ int8 file holds
exactly the integers the QAT weights were trained on (BatchNorm folded by the exporter
scales each output channel by a constant, which per-channel symmetric int8 follows)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from workbench.pipeline import _build_artifact, calibration_inputs
from workbench.recipe import QATConfig, QuantizeConfig, Recipe
from workbench.runtimes import get_runtime


def _conv_weights(path) -> list[np.ndarray]:
    """The weight of every Conv/Gemm in graph order, dequantized where it is int8."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        dq = producer.get(node.input[1])
        if dq is None:
            out.append(inits[node.input[1]].astype(np.float64))
            continue
        assert dq.op_type == "DequantizeLinear"
        q = inits[dq.input[0]].astype(np.float64)
        scale = inits[dq.input[1]].astype(np.float64)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        out.append((q, scale.reshape(shape)))
    return out


def _grid_error(float_file, int8_file) -> float:
    """Largest |dequantized int8 weight - float weight| over all layers, in units of the
    layer's own quantization step (0: on the grid; up to 0.5: ordinary rounding)."""
    floats, quants = _conv_weights(float_file), _conv_weights(int8_file)
    assert len(floats) == len(quants) > 0
    worst = 0.0
    for w, (q, scale) in zip(floats, quants, strict=True):
        assert w.shape == q.shape
        worst = max(worst, float(np.max(np.abs(q * scale - w) / scale)))
    return worst


@pytest.mark.slow  # trains digits-cnn for one epoch and quantizes twice (~30 s)
def test_qat_int8_onnx_holds_the_trained_weight_grid(cnn, tmp_path):
    rt = get_runtime("onnxruntime")
    parity = calibration_inputs(cnn, 4)
    (tmp_path / "qat").mkdir()
    (tmp_path / "ptq").mkdir()
    qat_file, _, qat_float, reports = _build_artifact(
        cnn, Recipe((QATConfig(epochs=1),)), tmp_path / "qat", parity, rt
    )
    assert [r["kind"] for r in reports] == ["qat", "quantize"]
    # Every layer, the first included (the post-training default gives it 7-bit weights).
    assert _grid_error(qat_float, qat_file) < 1e-3
    ptq_file, _, ptq_float, _ = _build_artifact(
        cnn, Recipe.of(quantize=QuantizeConfig()), tmp_path / "ptq", parity, rt
    )
    assert _grid_error(ptq_float, ptq_file) > 0.25


def test_qat_with_frozen_batchnorm_keeps_the_running_statistics(cnn):
    import copy

    import torch

    from workbench.compress.qat import qat_

    def stats(module):
        return [
            b.running_mean.clone()
            for b in module.modules()
            if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)
        ]

    before = stats(cnn.module)
    frozen, free = copy.deepcopy(cnn.module), copy.deepcopy(cnn.module)
    qat_(frozen, QATConfig(epochs=1, batch_size=256, freeze_bn=True), cnn)
    qat_(free, QATConfig(epochs=1, batch_size=256), cnn)
    assert all(torch.equal(a, b) for a, b in zip(before, stats(frozen), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, stats(free), strict=True))
    assert QATConfig(freeze_bn=True).label() == "qat-int8-2ep-frozenbn"
