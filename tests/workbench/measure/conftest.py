"""Tiny ONNX models, built with onnx.helper so their weights and MACs are known by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

# Conv(1->4, 3x3, pad 1) on 1x8x8 -> Relu -> Flatten -> Gemm(256 -> 10)
CONV_W = (4, 1, 3, 3)
FC_W = (10, 256)  # Gemm with transB=1, as torch exports nn.Linear
# params: 4*1*3*3 + 4 + 10*256 + 10
CONV_LINEAR_PARAMS = 36 + 4 + 2560 + 10
# MACs: conv = out elements (4*8*8) * Cin*kH*kW (1*3*3); gemm = M*N*K = 1*10*256
CONV_LINEAR_MACS = 256 * 9 + 10 * 256


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # |w| in [0.5, 1]: int8 quantization then maps no weight to zero by rounding,
    # so the non-zero count of a quantized model is exact.
    return (rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 1.0, size=shape)).astype(
        np.float32
    )


def conv_linear_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": _away_from_zero(rng, CONV_W),
        "conv.bias": _away_from_zero(rng, (4,)),
        "fc.weight": _away_from_zero(rng, FC_W) / 16,
        "fc.bias": _away_from_zero(rng, (10,)),
    }


def write_conv_linear(
    path: Path,
    weights: dict[str, np.ndarray] | None = None,
    *,
    batch: int | str = "N",
    dtype: type = np.float32,
) -> Path:
    """Save the Conv+Linear model; ``batch`` is a fixed size or a symbolic name."""
    w = weights or conv_linear_weights()
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "conv.weight", "conv.bias"],
            ["c"],
            pads=[1, 1, 1, 1],
            kernel_shape=[3, 3],
        ),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "flat_shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_linear",
        [helper.make_tensor_value_info("input", elem, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", elem, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_linear(path: Path, n_in: int, n_out: int, seed: int = 0) -> Path:
    """A single Gemm layer (nn.Linear) with an [N, n_in] input."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((n_out, n_in), dtype=np.float32), "w"),
        numpy_helper.from_array(np.zeros(n_out, np.float32), "b"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def conv_linear(tmp_path: Path) -> Path:
    return write_conv_linear(tmp_path / "conv_linear.onnx")


@pytest.fixture
def models() -> SimpleNamespace:
    """The builders and hand counts above, for tests that need more than one model."""
    return SimpleNamespace(
        write_conv_linear=write_conv_linear,
        write_linear=write_linear,
        conv_linear_weights=conv_linear_weights,
        PARAMS=CONV_LINEAR_PARAMS,
        MACS=CONV_LINEAR_MACS,
    )
