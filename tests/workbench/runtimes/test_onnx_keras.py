"""ONNX -> Keras rebuild (the PyTorch -> TFLite route): every rebuilt model computes what
ONNX Runtime computes on the same file, and its TFLite conversion does too."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from workbench.errors import WorkbenchError
from workbench.models import load_model
from workbench.onnx_export import export_onnx
from workbench.runtimes.onnx_keras import custom_objects

TOLERANCE = 1e-4  # max abs difference of the outputs, float32 on both sides
DIGITS_SAMPLES = ("digits-cnn", "digits-resnet18", "digits-mobilenetv2")


def _onnxruntime(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _inputs(shape, n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)


def _max_diff(path, x: np.ndarray) -> tuple[float, object]:
    from workbench.runtimes.onnx_keras import onnx_to_keras

    km = onnx_to_keras(path)
    expected = _onnxruntime(path, x)
    got = np.asarray(km(x, training=False))
    assert got.shape == expected.shape
    return float(np.max(np.abs(got - expected))), km


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("onnx")
    files = {}
    for name in DIGITS_SAMPLES:
        m = load_model(name)
        files[name] = export_onnx(m.module, m.input_shape, out / f"{name}.onnx").path
    return files


@pytest.mark.parametrize("name", DIGITS_SAMPLES)
def test_digits_samples_match_onnxruntime(digits_onnx, name):
    m = load_model(name)
    x = _inputs(m.input_shape)
    diff, km = _max_diff(digits_onnx[name], x)
    assert diff < TOLERANCE
    # Built from Keras' own layers only: a saved rebuild loads anywhere.
    assert not {type(layer).__name__ for layer in km.layers} & set(custom_objects())
    # The file's layout is kept: NCHW in, logits out.
    assert tuple(km.inputs[0].shape[1:]) == m.input_shape[1:]
    assert tuple(km.outputs[0].shape[1:]) == (10,)


def _random_batchnorm_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random batch-norm statistics and unit-scale dense weights, so a random-init
    network's outputs are far from zero (torchvision's initialisation gives MobileNetV2
    logits of ~1e-9) and a wrong layout shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.data = torch.randn(m.weight.shape, generator=g) / m.in_features**0.5
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean.data = 0.2 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
    return module.eval()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "mobilenet_v3_small"])
def test_torchvision_classifiers_match_onnxruntime(tmp_path, arch):
    import torchvision

    torch.manual_seed(0)
    module = _random_batchnorm_(getattr(torchvision.models, arch)(weights=None))
    shape = (1, 3, 64, 64)
    path = export_onnx(module, shape, tmp_path / f"{arch}.onnx").path
    x = _inputs(shape)
    assert np.abs(_onnxruntime(path, x)).max() > 0.1  # a comparison of real signals
    diff, km = _max_diff(path, x)
    assert diff < TOLERANCE
    assert not {type(layer).__name__ for layer in km.layers} & set(custom_objects())


class _OperatorZoo(nn.Module):
    """Operators and layout traps beyond the samples: dilated, padded (Pad), grouped and depthwise
    (multiplier 2) convolutions, an unfolded BatchNorm, HardSigmoid/HardSwish, Concat on
    channels, a max pool over negative values with padding, an average pool counting
    its padding, per-channel constants, Clip with a negative bound, ReduceMean over H and
    W, ``view(x.size(0), -1)`` (shape arithmetic) into a Gemm (weights permuted), a
    Reshape into a ReLU and MatMul+Add (NCHW order restored), Softmax, Tanh, LeakyRelu."""

    def __init__(self) -> None:
        super().__init__()
        self.dilated = nn.Conv2d(3, 8, 3, padding=1, dilation=2)  # 16 -> 14
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.depthwise = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(16)
        self.scale = nn.Parameter(torch.randn(1, 32, 1, 1))
        self.fc = nn.Linear(32 * 4 * 4, 10)
        self.w = nn.Parameter(torch.randn(32 * 4 * 4, 10) * 0.05)
        self.b = nn.Parameter(torch.randn(10))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        a = self.depthwise(self.grouped(F.pad(self.dilated(x), (1, 1, 0, 2))))
        d = self.bn(torch.sigmoid(a))
        e = F.hardswish(d) * F.hardsigmoid(d) - d
        f = torch.cat([e, d], dim=1)
        g = F.max_pool2d(f - 0.5, 3, stride=2, padding=1)
        h = F.avg_pool2d(g, 3, stride=1, padding=1, count_include_pad=True)
        i = h * self.scale / 3.0 + torch.clamp(h, -0.5, 0.7)
        j = i.mean(dim=(2, 3))
        k = i.view(i.size(0), -1)  # Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        r = torch.relu(i.reshape(-1, 32 * 4 * 4))
        out = self.fc(k) + torch.matmul(r, self.w) + self.b + self.head(j)
        return torch.softmax(out, dim=1) + torch.tanh(out) + F.leaky_relu(out, 0.1)


ZOO_SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    torch.manual_seed(0)
    module = _random_batchnorm_(_OperatorZoo())
    return export_onnx(module, ZOO_SHAPE, tmp_path_factory.mktemp("zoo") / "zoo.onnx").path


def test_operator_zoo_matches_onnxruntime(zoo_onnx):
    path = zoo_onnx
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"BatchNormalization", "HardSigmoid", "HardSwish", "Concat", "MaxPool"} <= ops
    assert {"AveragePool", "ReduceMean", "Clip", "Shape", "Gather", "Reshape", "MatMul"} <= ops
    assert {"Div", "Softmax", "Tanh", "LeakyRelu", "Pad"} <= ops
    diff, _ = _max_diff(path, _inputs(ZOO_SHAPE))
    assert diff < TOLERANCE


def _tiny_graph(path, nodes, inits, in_shape, out_name="y"):
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *in_shape[1:]])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_asymmetric_and_same_padding_match_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 2, 3, 3))
    w2 = rng.standard_normal((4, 4, 3, 3))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[0, 1, 2, 0], strides=[2, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], auto_pad="SAME_UPPER", strides=[2, 2]),
        # ceil_mode, padding with -inf over negative values
        helper.make_node(
            "MaxPool",
            ["b"],
            ["y"],
            kernel_shape=[2, 2],
            strides=[2, 2],
            pads=[1, 0, 0, 0],
            ceil_mode=1,
        ),
    ]
    path = _tiny_graph(tmp_path / "pads.onnx", nodes, {"w1": w1, "w2": w2}, (1, 2, 11, 9))
    diff, _ = _max_diff(path, _inputs((1, 2, 11, 9)))
    assert diff < TOLERANCE


def test_unsupported_operators_are_named_in_one_error(tmp_path):
    from workbench.runtimes.onnx_keras import onnx_to_keras

    nodes = [
        helper.make_node("Einsum", ["x", "x"], ["a"], equation="nchw,nchw->nchw"),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Erf", ["b"], ["y"]),
    ]
    path = _tiny_graph(tmp_path / "einsum.onnx", nodes, {}, (1, 2, 4, 4))
    with pytest.raises(WorkbenchError, match=r"Einsum, Erf") as e:
        onnx_to_keras(path)
    assert "onnxruntime" in str(e.value)  # the fix: measure it in ONNX Runtime


def test_a_dynamic_spatial_input_is_refused(tmp_path):
    from workbench.runtimes.onnx_keras import onnx_to_keras

    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    path = _tiny_graph(tmp_path / "dyn.onnx", nodes, {}, (1, 3, "h", "w"))
    with pytest.raises(WorkbenchError, match="fixed input shape"):
        onnx_to_keras(path)


def test_structurally_pruned_digits_model_converts_and_matches(tmp_path):
    from workbench.compress import prune_
    from workbench.recipe import PruneConfig

    m = load_model("digits-cnn")
    report = prune_(m.module, PruneConfig(method="structured", sparsity=0.5), m.example_input())
    assert report.achieved_sparsity > 0.3
    path = export_onnx(m.module, m.input_shape, tmp_path / "pruned.onnx").path
    diff, _ = _max_diff(path, _inputs(m.input_shape, n=8))
    assert diff < TOLERANCE


def test_float_tflite_of_the_rebuild_matches_onnxruntime(digits_onnx):
    from workbench.runtimes.litert.export import convert_keras
    from workbench.runtimes.litert.flatbuffer import graph_stats
    from workbench.runtimes.litert.session import predict
    from workbench.runtimes.onnx_keras import onnx_to_keras

    path = digits_onnx["digits-cnn"]
    tflite = path.with_suffix(".tflite")
    tflite.write_bytes(convert_keras(onnx_to_keras(path), "float"))
    x = _inputs((1, 1, 8, 8), n=8)
    assert np.abs(predict(tflite, x) - _onnxruntime(path, x)).max() < TOLERANCE
    # No TRANSPOSE: the one-channel input's NCHW -> NHWC is a RESHAPE, and the Flatten
    # of the 2x2x64 feature map before the Gemm permutes the dense weights instead.
    assert "TRANSPOSE" not in graph_stats(tflite).op_counts


def test_full_int8_tflite_of_digits_cnn_keeps_accuracy(digits_onnx):
    from workbench.runtimes.litert.export import convert_keras
    from workbench.runtimes.litert.session import predict
    from workbench.runtimes.onnx_keras import onnx_to_keras

    m = load_model("digits-cnn")
    x, y = m.task.arrays("test", m.preprocessing)
    calibration = m.task.calibration(m.preprocessing, 200)  # NCHW, training part only
    km = onnx_to_keras(digits_onnx["digits-cnn"])
    path = digits_onnx["digits-cnn"]
    accuracy = {}
    for scheme in ("float", "int8"):
        tflite = path.with_name(f"cnn-{scheme}.tflite")
        tflite.write_bytes(convert_keras(km, scheme, calibration=calibration, io="int8"))
        accuracy[scheme] = float((predict(tflite, x).argmax(axis=1) == y).mean())
    assert accuracy["float"] > 0.95
    assert accuracy["int8"] >= accuracy["float"] - 0.01


def test_keras_for_each_source(tmp_path, digits_onnx):
    from workbench._tf import keras
    from workbench.runtimes.onnx_keras import keras_for

    m = load_model("digits-cnn")
    x = _inputs(m.input_shape)
    # A torch module: exported to ONNX in the work folder, rebuilt.
    km = keras_for(m, m.module, tmp_path / "work")
    with torch.no_grad():
        expected = m.module(torch.from_numpy(x)).numpy()
    assert np.abs(np.asarray(km(x)) - expected).max() < TOLERANCE
    assert (tmp_path / "work" / "keras_source.onnx").is_file()
    # A Keras model: itself.
    assert keras_for(m, km, tmp_path) is km
    # No module: the model's Keras model, else its ONNX file.
    holder = SimpleNamespace(name="k", keras_model=km, onnx_path=None)
    assert keras_for(holder, None, tmp_path) is km
    onnx_model = SimpleNamespace(name="o", onnx_path=digits_onnx["digits-cnn"])
    rebuilt = keras_for(onnx_model, None, tmp_path)
    assert isinstance(rebuilt, keras().Model)
    assert np.abs(np.asarray(rebuilt(x)) - expected).max() < TOLERANCE
    with pytest.raises(WorkbenchError, match="nothing|no module"):
        keras_for(SimpleNamespace(name="empty", onnx_path=None), None, tmp_path)


def test_a_saved_rebuild_loads_back_with_its_custom_layers(tmp_path, zoo_onnx):
    from workbench._tf import keras
    from workbench.runtimes.onnx_keras import custom_objects, onnx_to_keras

    km = onnx_to_keras(zoo_onnx)
    assert {type(layer).__name__ for layer in km.layers} & set(custom_objects())
    km.save(tmp_path / "m.keras")
    back = keras().models.load_model(tmp_path / "m.keras", custom_objects=custom_objects())
    x = _inputs(ZOO_SHAPE, n=2)
    assert np.abs(np.asarray(back(x)) - np.asarray(km(x))).max() == 0.0


class _BatchArithmetic(nn.Module):
    def forward(self, x):
        return x.view(x.size(0) * 2, -1)  # splits each row in two: not a Flatten


def test_arithmetic_on_the_batch_size_is_refused_not_folded_wrongly(tmp_path):
    from workbench.runtimes.onnx_keras import onnx_to_keras

    path = export_onnx(_BatchArithmetic(), (1, 2, 4, 4), tmp_path / "batch.onnx").path
    with pytest.raises(WorkbenchError, match=r"Reshape node .* reshapes \[None, 2, 4, 4\]"):
        onnx_to_keras(path)


def test_a_missing_or_corrupt_file_gets_one_clear_error(tmp_path):
    from workbench.runtimes.onnx_keras import onnx_to_keras

    with pytest.raises(WorkbenchError, match="does not exist"):
        onnx_to_keras(tmp_path / "nothing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf")
    with pytest.raises(WorkbenchError, match="not a readable ONNX file"):
        onnx_to_keras(bad)
