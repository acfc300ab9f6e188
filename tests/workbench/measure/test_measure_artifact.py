"""Sizes, weight counts and MACs read from ONNX files, checked against hand counts."""

from __future__ import annotations

import os
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from workbench.errors import WorkbenchError
from workbench.measure import file_sizes, graph_stats


class _Calibration(CalibrationDataReader):
    def __init__(self, n: int = 4) -> None:
        rng = np.random.default_rng(1)
        self._it = iter(
            [{"input": rng.standard_normal((1, 1, 8, 8), dtype=np.float32)} for _ in range(n)]
        )

    def get_next(self):
        return next(self._it, None)


def _zeroed(models, n_conv: int, n_fc: int) -> dict[str, np.ndarray]:
    """The model's weights with the first n_conv conv and n_fc fc weights set to zero."""
    w = models.conv_linear_weights()
    w["conv.weight"].reshape(-1)[:n_conv] = 0
    w["fc.weight"].reshape(-1)[:n_fc] = 0
    return w


def test_file_sizes_are_bytes_on_disk_and_zlib_at_zips_default_level(tmp_path, models):
    # Half-zero weights over 2 MiB, so the file spans several compression chunks
    # and compresses well.
    path = tmp_path / "m.onnx"
    models.write_linear(path, 1024, 600)
    m = onnx.load(str(path))
    arr = numpy_helper.to_array(m.graph.initializer[0]).copy()
    arr[::2] = 0
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(arr, "w"))
    onnx.save(m, str(path))
    size, compressed = file_sizes(path)
    data = path.read_bytes()
    assert size == os.path.getsize(path) > 2 * 1024 * 1024
    # zlib's default level: what zip and gzip produce unless told otherwise.
    assert compressed == len(zlib.compress(data))
    assert compressed < 0.7 * size


def test_conv_linear_matches_hand_count(conv_linear, models):
    s = graph_stats(conv_linear)
    assert s.params == models.PARAMS == 2610
    assert s.nonzero_params == s.params
    assert s.macs == models.MACS == 4864
    assert s.macs_by_op == {"Conv": 2304, "Gemm": 2560}
    assert s.weight_dtypes == {"float32": 2610}
    assert s.op_counts == {"Conv": 1, "Relu": 1, "Reshape": 1, "Gemm": 1}
    assert s.uncounted_ops == ()
    assert s.sparsity == 0.0


def test_macs_do_not_depend_on_a_fixed_or_symbolic_batch(tmp_path, models):
    fixed = models.write_conv_linear(tmp_path / "b1.onnx", batch=1)
    assert graph_stats(fixed).macs == models.MACS


def test_zeroed_weights_counted(tmp_path, models):
    path = models.write_conv_linear(tmp_path / "z.onnx", _zeroed(models, 10, 1000))
    s = graph_stats(path)
    assert s.params == models.PARAMS
    assert s.nonzero_params == models.PARAMS - 1010
    assert s.sparsity == pytest.approx(1010 / models.PARAMS)


def test_fp16_weights(tmp_path, models):
    path = models.write_conv_linear(tmp_path / "h.onnx", dtype=np.float16)
    s = graph_stats(path)
    assert (s.params, s.macs) == (models.PARAMS, models.MACS)
    assert s.weight_dtypes == {"float16": models.PARAMS}


def test_static_qdq_int8_counts_int8_weights(tmp_path, models):
    src = models.write_conv_linear(tmp_path / "f.onnx", _zeroed(models, 10, 1000))
    dst = tmp_path / "qdq.onnx"
    quantize_static(
        str(src), str(dst), _Calibration(), quant_format=QuantFormat.QDQ, per_channel=True
    )
    s = graph_stats(dst)
    assert s.op_counts["DequantizeLinear"] > 0
    assert s.params == models.PARAMS  # scales and zero-points are not weights
    # weights int8, biases int32 (ORT quantizes a bias with input scale x weight scale)
    assert s.weight_dtypes == {"int8": 36 + 2560, "int32": 4 + 10}
    assert s.nonzero_params == models.PARAMS - 1010
    assert s.macs == models.MACS


def test_qoperator_uint8_zero_weights_are_their_zero_point(tmp_path, models):
    # With asymmetric uint8 weights a zero weight is stored as its zero-point (not 0):
    # the count must still see it as zero.
    src = models.write_conv_linear(tmp_path / "f.onnx", _zeroed(models, 10, 1000))
    dst = tmp_path / "qop.onnx"
    quantize_static(
        str(src),
        str(dst),
        _Calibration(),
        quant_format=QuantFormat.QOperator,
        weight_type=QuantType.QUInt8,
        activation_type=QuantType.QUInt8,
    )
    s = graph_stats(dst)
    assert {"QLinearConv", "QGemm"} <= set(s.op_counts)
    assert s.weight_dtypes == {"uint8": 36 + 2560, "int32": 4 + 10}
    assert s.params == models.PARAMS
    assert s.nonzero_params == models.PARAMS - 1010
    assert s.macs_by_op == {"QLinearConv": 2304, "QGemm": 2560}


def test_dynamic_quantization(tmp_path, models):
    src = models.write_conv_linear(tmp_path / "f.onnx")
    dst = tmp_path / "dyn.onnx"
    quantize_dynamic(str(src), str(dst))
    s = graph_stats(dst)
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} <= set(s.op_counts)
    assert s.params == models.PARAMS  # float biases are added after the integer product
    assert s.weight_dtypes == {"int8": 36 + 2560, "float32": 4 + 10}
    assert s.macs_by_op == {"ConvInteger": 2304, "MatMulInteger": 2560}


def test_matmul_add_and_batched_matmul(tmp_path):
    # x[N,4,5] @ W[5,3] + b[3]: MACs = 4*3*5 = 60 at batch 1; params = 15 + 3.
    # The shape constant of the Reshape is not a weight.
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(np.ones(3, np.float32), "b"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["y0"]),
            helper.make_node("Reshape", ["y0", "shape"], ["y"]),
        ],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        inits,
    )
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    s = graph_stats(path)
    assert (s.params, s.macs) == (18, 60)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice
def test_torch_export_agrees_with_torch_parameter_count(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, groups=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: Cin/groups = 1
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 5),
    ).eval()
    path = tmp_path / "t.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, 6, 6),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}},
        dynamo=False,
    )
    s = graph_stats(path)
    assert s.params == sum(p.numel() for p in net.parameters())
    conv1 = (8 * 6 * 6) * (3 * 3 * 3)
    dw = (8 * 6 * 6) * (1 * 3 * 3)
    fc = 288 * 5
    assert s.macs == conv1 + dw + fc


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", "truncate"])
def test_corrupt_file_raises_workbench_error(tmp_path, conv_linear, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(conv_linear.read_bytes()[:200] if content == "truncate" else content)
    with pytest.raises(WorkbenchError, match="not a loadable ONNX model") as e:
        graph_stats(bad)
    assert "re-export" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(WorkbenchError, match="no artifact file"):
        file_sizes(tmp_path / "nope.onnx")
    with pytest.raises(WorkbenchError, match="no artifact file"):
        graph_stats(tmp_path / "nope.onnx")


def test_macs_are_counted_on_an_unsorted_fp16_graph(tmp_path):
    """ONNX Runtime's float16 converter appends Cast nodes; counting must not give up."""
    import onnx
    import torch
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from workbench.onnx_export import export_onnx

    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 10)
    ).eval()
    export_onnx(module, (1, 1, 8, 8), tmp_path / "f.onnx")
    half = convert_float_to_float16(onnx.load(str(tmp_path / "f.onnx")), keep_io_types=True)
    assert half.graph.node[-1].op_type == "Cast"  # the converter's order, not topological
    onnx.save(half, str(tmp_path / "h.onnx"))
    expected = 4 * 36 * 9 + 144 * 10
    assert graph_stats(tmp_path / "f.onnx").macs == expected
    assert graph_stats(tmp_path / "h.onnx").macs == expected


def test_a_constant_shared_by_two_layers_counts_for_each(tmp_path):
    # Exporters store identical tensors once (zero biases, a layer pruned to all zeros):
    # the count must not change with the values.
    w1 = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w1")
    w2 = numpy_helper.from_array(np.full((4, 4, 1, 1), 2, np.float32), "w2")
    zero = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1", "b"], ["a"]),
            helper.make_node("Conv", ["a", "w2", "b"], ["y"]),
        ],
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
        [w1, w2, zero],
    )
    path = tmp_path / "shared.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    stats = graph_stats(path)
    assert stats.params == 2 * 16 + 2 * 4
    assert stats.nonzero_params == 2 * 16
