"""Quantization of exported ONNX files: the artifacts really are int8/fp16, honour
keep_float, stay close to the float model, and bad input fails cleanly."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from workbench.compress import quantize
from workbench.errors import WorkbenchError
from workbench.recipe import QuantizeConfig


class SmallCNN(nn.Module):
    """About 49k parameters on 1x8x8 inputs: the size of the workbench's small CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(256, 96), nn.ReLU(), nn.Linear(96, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(*shape),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    return path


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten noisy class prototypes on 1x8x8: a task a small CNN learns in a second."""
    protos = np.random.default_rng(0).standard_normal((10, 1, 8, 8)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = protos[y] + 0.5 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """A trained SmallCNN, its ONNX file, calibration images and held-out test images."""
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = synthetic_digits(1024, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only contend on a shared machine
    try:
        for step in range(100):
            i = slice((step * 64) % 1024, (step * 64) % 1024 + 64)
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i]), yt[i]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    test_x, test_y = synthetic_digits(256, seed=2)
    path = export(model, (1, 1, 8, 8), tmp_path_factory.mktemp("small") / "small.onnx")
    float_logits = run(path, test_x)
    assert (float_logits.argmax(1) == test_y).mean() > 0.95  # the model really learned
    return {"path": path, "calib": x[:128], "test": test_x, "float": float_logits}


def run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def graph_parts(path: Path) -> tuple[onnx.ModelProto, dict, dict]:
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    return model, inits, producer


def weight_dq(node: onnx.NodeProto, producer: dict) -> onnx.NodeProto | None:
    """The DequantizeLinear that feeds ``node``'s weight, if any."""
    p = producer.get(node.input[1])
    return p if p is not None and p.op_type == "DequantizeLinear" else None


# ------------------------------------------------------------------------------- int8


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_has_int8_weights_qdq_nodes_and_the_right_scale_shapes(small, tmp_path, per_channel):
    dst = tmp_path / "q.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(per_channel=per_channel), small["calib"])
    model, inits, producer = graph_parts(dst)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    heavy = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(heavy) == 5
    for node in heavy:
        dq = weight_dq(node, producer)
        assert dq is not None, node.name
        q_weight, scale = inits[dq.input[0]], numpy_helper.to_array(inits[dq.input[1]])
        assert q_weight.data_type == TensorProto.INT8
        out_channels = q_weight.dims[0]
        assert scale.shape == ((out_channels,) if per_channel else ())
    assert report.quantized_ops["Conv"] == 3 and report.quantized_ops["Gemm"] == 2
    assert report.float_nodes == ()
    assert report.settings["quant_format"] == "QDQ"
    assert report.settings["reduce_range"] is False
    assert report.calibration_samples == 128
    assert "quant_pre_process" in report.preprocessing and report.fallbacks == ()
    # BatchNorm was folded by pre-processing, so no float BatchNormalization is left.
    assert "BatchNormalization" not in ops


def test_uint8_types_reach_the_artifact(small, tmp_path):
    dst = tmp_path / "q.onnx"
    quantize(
        small["path"],
        dst,
        QuantizeConfig(activation_type="uint8", weight_type="uint8"),
        small["calib"],
    )
    model, inits, producer = graph_parts(dst)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert inits[weight_dq(conv, producer).input[0]].data_type == TensorProto.UINT8
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert inits[q.input[2]].data_type == TensorProto.UINT8  # activation zero point


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_predictions_agree_with_float(small, tmp_path, method):
    dst = tmp_path / "q.onnx"
    quantize(small["path"], dst, QuantizeConfig(calibration=method), small["calib"])
    assert agreement(run(dst, small["test"]), small["float"]) >= 0.97


def test_int8_uses_only_the_configured_number_of_samples(small, tmp_path):
    report = quantize(
        small["path"], tmp_path / "q.onnx", QuantizeConfig(calibration_samples=16), small["calib"]
    )
    assert report.calibration_samples == 16
    assert report.settings["calibration_batch"] == 16


def test_int8_reports_how_long_it_took(small, tmp_path):
    # The 3 s budget for a new variant is checked by benchmarks/compression.py.
    report = quantize(small["path"], tmp_path / "q.onnx", QuantizeConfig(), small["calib"])
    assert report.seconds > 0
    print(f"int8 quantization of the small CNN: {report.seconds:.2f} s")


# --------------------------------------------------------------------------- keep_float


def test_keep_float_op_type_leaves_every_node_of_that_type_in_float(small, tmp_path):
    dst = tmp_path / "q.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(keep_float=("Gemm",)), small["calib"])
    model, inits, producer = graph_parts(dst)
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 2
    for node in gemms:
        assert weight_dq(node, producer) is None
        assert inits[node.input[1]].data_type == TensorProto.FLOAT
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(weight_dq(n, producer) is not None for n in convs)
    assert set(report.excluded_nodes) == {n.name for n in gemms}
    assert {f"{n.name} (Gemm)" for n in gemms} <= set(report.float_nodes)
    assert "Gemm" not in report.quantized_ops


def test_keep_float_node_name_leaves_only_that_node_in_float(small, tmp_path):
    first_conv = next(
        n.name for n in onnx.load(str(small["path"])).graph.node if n.op_type == "Conv"
    )
    dst = tmp_path / "q.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(keep_float=(first_conv,)), small["calib"])
    model, inits, producer = graph_parts(dst)
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert weight_dq(convs[first_conv], producer) is None
    assert sum(weight_dq(n, producer) is not None for n in convs.values()) == 2
    assert report.excluded_nodes == (first_conv,)


def test_keep_float_unknown_entry_lists_names_and_op_types(small, tmp_path):
    dst = tmp_path / "q.onnx"
    with pytest.raises(WorkbenchError) as err:
        quantize(small["path"], dst, QuantizeConfig(keep_float=("Gem",)), small["calib"])
    msg = str(err.value)
    assert "'Gem'" in msg and "Gemm" in msg and "Conv" in msg and "/features/features.0/Conv" in msg
    assert list(tmp_path.iterdir()) == []  # no dst, no temp files


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("calib", [None, np.zeros((0, 1, 8, 8), np.float32)])
def test_int8_without_calibration_samples_raises(small, tmp_path, calib):
    with pytest.raises(WorkbenchError, match="calibration needs at least one sample"):
        quantize(small["path"], tmp_path / "q.onnx", QuantizeConfig(), calib)
    assert list(tmp_path.iterdir()) == []


def test_misshapen_calibration_names_both_shapes(small, tmp_path):
    with pytest.raises(WorkbenchError, match=r"shape \(4, 3, 8, 8\).*\('N', 1, 8, 8\)"):
        quantize(
            small["path"], tmp_path / "q.onnx", QuantizeConfig(), np.zeros((4, 3, 8, 8), np.float32)
        )


def test_invalid_source_is_a_workbench_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(WorkbenchError, match="not a valid ONNX model"):
        quantize(bad, tmp_path / "q.onnx", QuantizeConfig(scheme="fp16"))
    with pytest.raises(WorkbenchError, match="no ONNX file"):
        quantize(tmp_path / "missing.onnx", tmp_path / "q.onnx", QuantizeConfig(scheme="fp16"))


def test_a_failure_leaves_no_file_and_an_existing_dst_untouched(small, tmp_path, monkeypatch):
    # The package re-exports the function ``quantize``, which shadows the module's name.
    q = importlib.import_module("workbench.compress.quantize")

    dst = tmp_path / "q.onnx"
    dst.write_bytes(b"previous artifact")

    def broken(path: Path) -> None:
        raise RuntimeError("simulated ONNX Runtime failure")

    monkeypatch.setattr(q, "_check_runs", broken)
    with pytest.raises(WorkbenchError, match="simulated ONNX Runtime failure"):
        quantize(small["path"], dst, QuantizeConfig(), small["calib"])
    assert dst.read_bytes() == b"previous artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["q.onnx"]


def test_preprocessing_failure_falls_back_to_onnx_shape_inference(small, tmp_path, monkeypatch):
    import onnxruntime.quantization.shape_inference as si

    def failing(*args, **kwargs):
        raise RuntimeError("simulated symbolic shape inference failure")

    monkeypatch.setattr(si, "quant_pre_process", failing)
    dst = tmp_path / "q.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(), small["calib"])
    assert report.preprocessing == "onnx shape inference (fallback)"
    assert any("simulated symbolic shape inference failure" in f for f in report.fallbacks)
    assert agreement(run(dst, small["test"]), small["float"]) >= 0.97


def test_report_is_json_ready(small, tmp_path):
    report = quantize(small["path"], tmp_path / "q.onnx", QuantizeConfig(), small["calib"])
    d = json.loads(json.dumps(report.to_dict()))
    assert d["scheme"] == "int8" and d["label"] == "int8-minmax-pc"
    assert d["settings"]["extra_options"]["WeightSymmetric"] is True


# ---------------------------------------------------------------------------- dynamic


def test_dynamic_quantizes_conv_and_linear_layers(small, tmp_path):
    dst = tmp_path / "d.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(scheme="dynamic"))
    model, inits, _ = graph_parts(dst)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ConvInteger") == 3
    assert ops.count("MatMulInteger") == 2  # the two Linear layers, via Gemm -> MatMul + Add
    assert "Conv" not in ops and "Gemm" not in ops
    assert report.quantized_ops == {"ConvInteger": 3, "MatMulInteger": 2}
    assert report.float_nodes == ()
    assert sum(i.data_type == TensorProto.INT8 for i in inits.values()) >= 5
    assert agreement(run(dst, small["test"]), small["float"]) >= 0.97


def test_dynamic_keep_float_gemm_leaves_linear_layers_float(small, tmp_path):
    dst = tmp_path / "d.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(scheme="dynamic", keep_float=("Gemm",)))
    model, inits, _ = graph_parts(dst)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ConvInteger") == 3 and "MatMulInteger" not in ops
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert len(matmuls) == 2  # ORT turns Gemm into MatMul + Add; they stay float
    assert all(inits[n.input[1]].data_type == TensorProto.FLOAT for n in matmuls)
    assert sorted(report.float_nodes) == sorted(f"{n.name} ({n.op_type})" for n in matmuls)


# ------------------------------------------------------------------------------- fp16


def test_fp16_has_float16_weights_float32_io_and_runs(small, tmp_path):
    dst = tmp_path / "h.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(scheme="fp16"))
    model, inits, _ = graph_parts(dst)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    weights = [i for i in inits.values() if len(i.dims) >= 2]
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights)
    got = run(dst, small["test"])
    np.testing.assert_allclose(got, small["float"], atol=5e-2, rtol=1e-2)
    assert report.quantized_ops["Conv"] == 3 and report.quantized_ops["Gemm"] == 2


def test_fp16_keep_float_leaves_the_op_type_in_float32(small, tmp_path):
    dst = tmp_path / "h.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(scheme="fp16", keep_float=("Gemm",)))
    model, inits, _ = graph_parts(dst)
    for node in (n for n in model.graph.node if n.op_type == "Gemm"):
        assert inits[node.input[1]].data_type == TensorProto.FLOAT
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert inits[conv.input[1]].data_type == TensorProto.FLOAT16
    assert "Gemm" not in report.quantized_ops
    assert sum(" (Gemm)" in f for f in report.float_nodes) == 2
    run(dst, small["test"])


def test_fp16_keep_float_node_name_leaves_that_node_in_float32(small, tmp_path):
    first_conv = next(
        n.name for n in onnx.load(str(small["path"])).graph.node if n.op_type == "Conv"
    )
    dst = tmp_path / "h.onnx"
    report = quantize(small["path"], dst, QuantizeConfig(scheme="fp16", keep_float=(first_conv,)))
    model, inits, _ = graph_parts(dst)
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert inits[convs[first_conv].input[1]].data_type == TensorProto.FLOAT
    others = [n for name, n in convs.items() if name != first_conv]
    assert all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in others)
    assert report.quantized_ops["Conv"] == 2 and f"{first_conv} (Conv)" in report.float_nodes


# ------------------------------------------------------------------------ MobileNetV2


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> dict:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    path = export(model, (1, 3, 32, 32), tmp_path_factory.mktemp("mnv2") / "mobilenet_v2.onnx")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
    test = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    return {"path": path, "calib": calib, "test": test, "float": run(path, test)}


def test_mobilenet_v2_int8_per_channel_covers_depthwise_convs(mobilenet, tmp_path):
    dst = tmp_path / "q.onnx"
    report = quantize(mobilenet["path"], dst, QuantizeConfig(), mobilenet["calib"])
    model, inits, producer = graph_parts(dst)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 52 and report.quantized_ops["Conv"] == 52
    depthwise = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 17
    for node in depthwise:
        dq = weight_dq(node, producer)
        w = inits[dq.input[0]]
        assert w.data_type == TensorProto.INT8
        assert numpy_helper.to_array(inits[dq.input[1]]).shape == (w.dims[0],)
    got = run(dst, mobilenet["test"])
    assert got.shape == (64, 10)
    # Random weights give close logits, so judge both top-1 agreement and the logits' shape.
    assert agreement(got, mobilenet["float"]) >= 0.75
    assert np.corrcoef(got.ravel(), mobilenet["float"].ravel())[0, 1] > 0.95


@pytest.mark.parametrize("scheme", ["dynamic", "fp16"])
def test_mobilenet_v2_other_schemes_load_and_run(mobilenet, tmp_path, scheme):
    dst = tmp_path / f"{scheme}.onnx"
    quantize(mobilenet["path"], dst, QuantizeConfig(scheme=scheme))
    got = run(dst, mobilenet["test"])
    assert np.corrcoef(got.ravel(), mobilenet["float"].ravel())[0, 1] > 0.95


def test_quantizer_warnings_go_to_the_report_not_to_stderr(small, tmp_path, monkeypatch, capsys):
    import importlib
    import logging

    quantize_module = importlib.import_module("workbench.compress.quantize")

    real = quantize_module._SCHEMES["fp16"]

    def noisy(work, calibration):
        logging.warning("Axis 1 is out-of-range for this tensor")  # as ORT's quantizer does
        return real(work, calibration)

    monkeypatch.setitem(quantize_module._SCHEMES, "fp16", noisy)
    report = quantize(small["path"], tmp_path / "h.onnx", QuantizeConfig(scheme="fp16"))
    assert "ONNX Runtime's quantizer: Axis 1 is out-of-range for this tensor" in report.fallbacks
    assert "out-of-range" not in capsys.readouterr().err


class TinyConvNeXt(nn.Module):
    """Two ConvNeXt blocks (depthwise conv, LayerNorm, Linear+GELU+Linear as MatMul+Add,
    layer scale): the layers whose int8 form lost bias counts and repeated warnings."""

    def __init__(self) -> None:
        from torchvision.models.convnext import CNBlock

        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.blocks = nn.Sequential(CNBlock(16, 1e-6, 0.0), CNBlock(16, 1e-6, 0.0))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_convnext_int8_keeps_the_params_and_says_each_quantizer_line_once(tmp_path):
    from workbench.measure import graph_stats

    torch.manual_seed(0)
    src = export(TinyConvNeXt().eval(), (1, 3, 32, 32), tmp_path / "float.onnx")
    calib = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    report = quantize(src, tmp_path / "int8.onnx", QuantizeConfig(), calib)
    # The MatMul + Add layers' biases behind int8's QuantizeLinear/DequantizeLinear pair
    # are still weights: the count must not change with the number format.
    assert graph_stats(tmp_path / "int8.onnx").params == graph_stats(src).params
    assert len(report.fallbacks) == len(set(report.fallbacks))
    repeated = [f for f in report.fallbacks if f.endswith("(×2)")]
    assert repeated, report.fallbacks  # ORT logs its LayerNorm line twice: said once, counted


# ------------------------------------------------- bias correction, accuracy-aware int8


def _last_gemm(path: Path) -> tuple[onnx.NodeProto, np.ndarray, np.ndarray]:
    """The classifier Gemm of a QDQ model, its int32 bias and that bias's scale."""
    model, inits, producer = graph_parts(path)
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    dq = producer[gemm.input[2]]
    assert dq.op_type == "DequantizeLinear"
    return (
        gemm,
        numpy_helper.to_array(inits[dq.input[0]]).astype(np.int64),
        numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64),
    )


def test_bias_correction_moves_biases_toward_the_float_output_mean(small, tmp_path):
    # Per-tensor weights and int8 activations: a visible systematic error to correct.
    base = dict(scheme="int8", per_channel=False, activation_type="int8")
    plain = tmp_path / "plain.onnx"
    corrected = tmp_path / "corrected.onnx"
    quantize(small["path"], plain, QuantizeConfig(**base), small["calib"])
    report = quantize(
        small["path"], corrected, QuantizeConfig(**base, bias_correction=True), small["calib"]
    )
    float_mean = run(small["path"], small["calib"]).mean(axis=0)
    plain_error = float_mean - run(plain, small["calib"]).mean(axis=0)
    corrected_error = float_mean - run(corrected, small["calib"]).mean(axis=0)
    # The logits' mean error per class shrinks (it is what the last bias can fix).
    assert np.abs(corrected_error).sum() < 0.5 * np.abs(plain_error).sum()
    # ... and the last bias moved the way the error points (not exactly by it: the layers
    # before it were corrected first, which changes the error left for it to fix).
    gemm, plain_bias, scale = _last_gemm(plain)
    _, new_bias, _ = _last_gemm(corrected)
    moved = (new_bias - plain_bias) * scale
    assert np.abs(moved).max() > 10 * scale.max()  # whole steps of the int32 bias scale
    assert np.corrcoef(moved, plain_error)[0, 1] > 0.7
    assert gemm.name in report.bias_correction["layers"]
    assert len(report.bias_correction["layers"]) == 5  # 3 Conv + 2 Gemm, all with biases
    assert report.settings["bias_correction"] is True


def test_accuracy_aware_keeps_sensitive_layers_float_within_the_drop(small, tmp_path):
    # Calibration images at 0.3 scale give too narrow activation ranges, and noisy
    # held-out images have many borderline cases: plain int8 loses a few points.
    protos = np.random.default_rng(0).standard_normal((10, 1, 8, 8)).astype(np.float32)
    rng = np.random.default_rng(3)
    val_y = rng.integers(0, 10, 400)
    val_x = (protos[val_y] + 1.5 * rng.standard_normal((400, 1, 8, 8))).astype(np.float32)
    float_acc = (run(small["path"], val_x).argmax(1) == val_y).mean() * 100
    calib = small["calib"][:4] * 0.3
    harsh = dict(scheme="int8", calibration_samples=4, per_channel=False, activation_type="int8")
    plain = tmp_path / "plain.onnx"
    quantize(small["path"], plain, QuantizeConfig(**harsh), calib)
    plain_acc = (run(plain, val_x).argmax(1) == val_y).mean() * 100
    assert float_acc - plain_acc > 2.0  # else this test would prove nothing
    out = tmp_path / "aware.onnx"
    config = QuantizeConfig(**harsh, max_accuracy_drop=1.0)
    report = quantize(small["path"], out, config, calib, (val_x, val_y))
    acc = (run(out, val_x).argmax(1) == val_y).mean() * 100
    aware = report.accuracy_aware
    assert float_acc - acc <= 1.0
    assert aware["final_accuracy"] == pytest.approx(acc, abs=1e-3)
    assert aware["float_accuracy"] == pytest.approx(float_acc, abs=1e-3)
    assert aware["held_out_images"] == 400
    kept = aware["kept_float"]
    assert kept and set(kept) <= set(report.excluded_nodes)
    assert {f"{name} ({op})" for name, op in _ops(out, kept)} <= set(report.float_nodes)
    ranked = [r["layer"] for r in aware["sensitivity"]]
    assert len(ranked) == 5 and kept == ranked[: len(kept)]  # the most sensitive first
    assert all("logit_error_reduction" in r for r in aware["sensitivity"])
    json.dumps(report.to_dict())


def _ops(path: Path, names: list[str]) -> list[tuple[str, str]]:
    return [(n.name, n.op_type) for n in onnx.load(str(path)).graph.node if n.name in names]


def test_accuracy_aware_without_labelled_images_says_what_to_pass(small, tmp_path):
    with pytest.raises(WorkbenchError, match="needs labelled held-out images") as info:
        quantize(
            small["path"],
            tmp_path / "q.onnx",
            QuantizeConfig(max_accuracy_drop=1.0),
            small["calib"],
        )
    assert "task" in info.value.fix
    assert not (tmp_path / "q.onnx").exists()


def test_accuracy_aware_rejects_mislabelled_held_out_images(small, tmp_path):
    x, y = synthetic_digits(20, seed=4)
    with pytest.raises(WorkbenchError, match="validation labels"):
        quantize(
            small["path"],
            tmp_path / "q.onnx",
            QuantizeConfig(max_accuracy_drop=1.0),
            small["calib"],
            (x, y[:10]),
        )


@pytest.mark.parametrize(
    ("fix", "first", "rest"), [("first_layer", 64, 127), ("none", 127, 127), ("all", 64, 64)]
)
def test_overflow_fix_gives_7_bit_weights_where_asked(small, tmp_path, fix, first, rest):
    out = tmp_path / "q.onnx"
    report = quantize(small["path"], out, QuantizeConfig(overflow_fix=fix), small["calib"])
    model, inits, producer = graph_parts(out)
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    peaks = [
        int(np.abs(numpy_helper.to_array(inits[weight_dq(n, producer).input[0]])).max())
        for n in layers
    ]
    assert peaks[0] == first  # the layer reading the model input
    assert max(peaks[1:]) == rest
    assert report.settings["overflow_fix"] == fix
    assert len(report.settings["seven_bit_weights"]) == {"none": 0, "first_layer": 1}.get(fix, 5)
