"""Gradual pruning, quantization-aware training and distillation as recipe steps."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from workbench.cache import Cache
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.export import export_variant
from workbench.pipeline import evaluate
from workbench.recipe import (
    DistillConfig,
    GradualPruneConfig,
    PruneConfig,
    QATConfig,
    QuantizeConfig,
    Recipe,
    config_from_dict,
)

CONFIGS = [
    GradualPruneConfig(sparsity=0.8, steps=3),
    GradualPruneConfig(method="structured", sparsity=0.5, sparsities=(0.3, 0.5), teacher="x"),
    GradualPruneConfig(method="structured", macs_ratio=0.5, steps=3, schedule="linear"),
    QATConfig(epochs=1, activation_type="int8", teacher="digits-resnet18"),
    DistillConfig(student="digits-cnn", teacher="digits-resnet18", epochs=2),
    DistillConfig(width=0.5),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.label())
def test_configs_round_trip(config):
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.label() == config.label()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: GradualPruneConfig(sparsity=0.8, sparsities=(0.4, 0.6)), "ends at 0.6"),
        (lambda: GradualPruneConfig(sparsity=0.8, sparsities=(0.6, 0.4, 0.8)), "does not rise"),
        (lambda: GradualPruneConfig(steps=0), "out of range"),
        (lambda: GradualPruneConfig(schedule="exp"), "not supported"),
        (lambda: GradualPruneConfig(macs_ratio=0.5), "structured pruning only"),
        (lambda: GradualPruneConfig(method="structured", macs_ratio=1.0), "out of range"),
        (lambda: GradualPruneConfig(method="structured", macs_ratio=0), "out of range"),
        (lambda: GradualPruneConfig(method="structured", macs_ratio="half"), "not a number"),
        (
            lambda: GradualPruneConfig(method="structured", sparsity=0.5, macs_ratio=0.5),
            r"both sparsity \(0.5\) and macs_ratio",
        ),
        (
            lambda: GradualPruneConfig(method="structured", macs_ratio=0.5, sparsities=(0.3,)),
            "explicit sparsities",
        ),
        (lambda: QATConfig(epochs=0), "out of range"),
        (lambda: QATConfig(lr=2.0), "learning rate"),
        (lambda: DistillConfig(width=0), "width"),
        (lambda: DistillConfig(init="pretrained"), "pretrained student"),
        (lambda: Recipe((QATConfig(), QuantizeConfig())), "QAT already produces"),
        (lambda: Recipe((QATConfig(), PruneConfig())), "prune comes after QAT"),
        (lambda: Recipe((PruneConfig(), DistillConfig())), "distillation is not"),
        (lambda: Recipe((PruneConfig(), GradualPruneConfig())), "prunes twice"),
    ],
)
def test_bad_settings_get_one_clear_error(make, message):
    with pytest.raises(WorkbenchError, match=message):
        make()


def test_a_macs_target_has_its_own_label_and_leaves_older_digests_alone():
    by_macs = GradualPruneConfig(method="structured", macs_ratio=0.5)
    by_sparsity = GradualPruneConfig(method="structured", sparsity=0.5)
    assert by_macs.label() == "prune-structured-macs0.5-gradual4-cubic-1ep"
    assert by_sparsity.label() == "prune-structured-0.5-gradual4-cubic-1ep"
    assert Recipe((by_macs,)).digest() != Recipe((by_sparsity,)).digest()
    # Unset, macs_ratio stays out of the dict: recipes cached before it keep their keys.
    assert "macs_ratio" not in by_sparsity.to_dict() and GradualPruneConfig().sparsity == 0.5
    with pytest.raises(WorkbenchError, match="macs_schedule"):
        by_macs.schedule_values()


def test_cubic_schedule_reaches_its_sparsity_with_big_steps_first():
    values = GradualPruneConfig(sparsity=0.8, steps=4).schedule_values()
    assert values[-1] == pytest.approx(0.8)
    gaps = np.diff((0.0, *values))
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))


@pytest.mark.slow
def test_gradual_pruning_reaches_its_sparsity_and_beats_one_shot(cnn, quick, tmp_path):
    cache = Cache(tmp_path)
    one_shot = evaluate(cnn, Recipe((PruneConfig(sparsity=0.9),)), settings=quick, cache=cache)
    gradual = evaluate(
        cnn, Recipe((GradualPruneConfig(sparsity=0.9, steps=2),)), settings=quick, cache=cache
    )
    report = gradual.steps[0]
    assert report["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert len(report["steps"]) == 2
    assert gradual.metrics.nonzero_params == one_shot.metrics.nonzero_params
    assert gradual.metrics.accuracy > one_shot.metrics.accuracy + 0.2


def test_qat_exports_int8_qdq_that_onnx_runtime_fuses(cnn, quick, tmp_path):
    cache = Cache(tmp_path)
    result = evaluate(cnn, Recipe((QATConfig(epochs=1),)), settings=quick, cache=cache)
    baseline = evaluate(cnn, settings=quick, cache=cache)
    ops = {n.op_type for n in onnx.load(str(result.artifact)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [t for t in onnx.load(str(result.artifact)).graph.initializer if t.data_type == 3]
    assert weights, "no int8 initializers: the weights were not quantized"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.artifact), options, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "QLinearConv" in fused
    assert result.steps[-1]["kind"] == "quantize" and result.steps[0]["kind"] == "qat"
    assert result.metrics.accuracy is not None and result.metrics.accuracy > 0.9
    assert result.metrics.size_bytes < baseline.metrics.size_bytes / 2
    assert result.metrics.params == baseline.metrics.params
    manifest = json.loads(export_variant(result, cnn, tmp_path / "out", cache=cache).read_text())
    assert manifest["other_artifacts"] == [], "a float program was saved beside an int8 artifact"


def test_qat_leaves_weights_on_the_int8_grid_and_pruned_zeros_at_zero(cnn):
    from workbench.compress import prune_
    from workbench.compress.qat import WEIGHT_QMAX, qat_

    module = __import__("copy").deepcopy(cnn.module)
    prune_(module, PruneConfig(sparsity=0.5), cnn.example_input())
    zeros = module.features[3].weight == 0
    qat_(module, QATConfig(epochs=1), cnn)
    w = module.features[3].weight.detach()
    assert bool((w[zeros] == 0).all())
    scale = w.reshape(w.shape[0], -1).abs().amax(1) / WEIGHT_QMAX
    steps = w / scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-3)


def test_student_with_other_classes_is_refused(cnn, quick, tmp_path, monkeypatch):
    from workbench.compress import distill

    real = distill.student_model

    def eleven_classes(model, config):
        student = real(model, config)
        student.module.classifier[-1] = torch.nn.Linear(64, 11)
        return student

    monkeypatch.setattr(distill, "student_model", eleven_classes)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(WorkbenchError, match="outputs 11 classes, the teacher digits-cnn 10"):
        evaluate(cnn, Recipe((DistillConfig(width=0.5),)), settings=quick, cache=cache)
    assert not any(cache.root.rglob("*.onnx")) if cache.root.exists() else True


def test_width_on_an_architecture_without_one_is_refused(quick, tmp_path):
    from workbench.compress.distill import student_model
    from workbench.models import load_model

    resnet = load_model("digits-resnet18")
    with pytest.raises(WorkbenchError, match="takes no width multiplier"):
        student_model(resnet, DistillConfig(width=0.5))


@pytest.mark.slow
def test_distilled_student_takes_its_own_input_shape(quick, tmp_path):
    from workbench.models import load_model

    teacher = load_model("digits-mobilenetv2")
    recipe = Recipe((DistillConfig(student="digits-cnn", epochs=2),))
    cache = Cache(tmp_path / "cache")
    result = evaluate(teacher, recipe, settings=quick, cache=cache)
    inputs = onnx.load(str(result.artifact)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in inputs][1:] == [1, 8, 8]
    assert result.metrics.accuracy > 0.9
    assert result.metrics.params < 50_000
    # The 8x8 student was timed interleaved with its 32x32 teacher, each on its own input.
    versus_teacher = result.metrics.comparison("baseline")
    assert versus_teacher is not None and versus_teacher.rounds == quick.rounds
    assert versus_teacher.variant_p50 > 0 and versus_teacher.reference_p50 > 0
    manifest = json.loads(
        export_variant(result, teacher, tmp_path / "out", settings=quick, cache=cache).read_text()
    )
    assert manifest["preprocessing"]["size"] == 8 and manifest["other_artifacts"] == []


@pytest.mark.parametrize(
    "flags", [["--qat-epochs", "1"], ["--prune", "unstructured", "--prune-steps", "3"]]
)
def test_training_an_onnx_file_is_refused_before_anything_is_built(capsys, tmp_path, cnn, flags):
    from workbench.onnx_export import export_onnx

    path = tmp_path / "cnn.onnx"
    export_onnx(cnn.module, cnn.input_shape, path)
    cache = tmp_path / "cache"
    code = main(["evaluate", str(path), "--cache-dir", str(cache), "--no-profile", *flags])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is an ONNX file" in err and "needs the model as PyTorch layers" in err
    assert not cache.exists() or not any(cache.rglob("*.onnx"))


def test_cli_refuses_qat_with_int8(capsys, tmp_path):
    code = main(
        [
            "evaluate",
            "digits-cnn",
            "--qat-epochs",
            "1",
            "--quantize",
            "int8",
            "--cache-dir",
            str(tmp_path),
        ]
    )
    _, err = capsys.readouterr()
    assert code == 2 and "QAT already produces the int8 artifact" in err
    assert len(err.strip().splitlines()) == 1


def test_honesty_warnings_read_gradual_pruning_and_qat_as_their_one_shot_kin():
    from workbench.honesty import ConvCensus, honesty_warnings
    from workbench.results import LatencyStats, MemoryStats, Metrics, SpeedComparison

    def metrics(p50: float, comparisons: tuple = ()) -> Metrics:
        lat = LatencyStats(p50, p50, p50, p50, p50, p50, 10, 1, 1)
        return Metrics(
            0.98, 1.0, "x", 10, 5, 10, 10, 10, lat, MemoryStats(1, 1, 1), comparisons=comparisons
        )

    # Speed warnings come only from the interleaved ratio measured against the baseline.
    slower = SpeedComparison.from_rounds("baseline", "baseline", [2.0] * 5, [1.0] * 5)
    recipe = Recipe((GradualPruneConfig(sparsity=0.8), QATConfig()))
    warnings = honesty_warnings(
        recipe, metrics(2.0, (slower,)), metrics(1.0), ConvCensus(0, 0), 1.0
    )
    assert any("Unstructured pruning (sparsity 80%" in w for w in warnings)
    assert any("measured slower than the float baseline" in w for w in warnings)


def test_structured_gradual_pruning_reaches_the_requested_channel_fraction(cnn):
    import copy

    from workbench.compress.gradual import gradual_prune_

    module = copy.deepcopy(cnn.module)
    config = GradualPruneConfig(method="structured", sparsity=0.5, steps=2, batch_size=256)
    report = gradual_prune_(module, config, cnn)
    assert [round(s["target"], 3) for s in report.steps] == [0.438, 0.5]
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.03)
    assert report.macs_after < report.macs_before / 2
    assert module.features[3].out_channels < 32


def test_structured_gradual_pruning_lands_on_its_macs_ratio_step_by_step(cnn):
    import copy

    from workbench.compress.gradual import MACS_TOLERANCE, gradual_prune_
    from workbench.compress.prune import _count_macs

    module = copy.deepcopy(cnn.module)
    config = GradualPruneConfig(
        method="structured", macs_ratio=0.5, steps=2, epochs_per_step=1, batch_size=256
    )
    float_macs, _ = _count_macs(cnn.module, cnn.example_input())
    report = gradual_prune_(module, config, cnn)
    assert report.requested_macs_ratio == 0.5 and report.requested_sparsity is None
    assert report.macs_schedule == pytest.approx((0.5625, 0.5))  # cubic: 1 - 0.5 * 7/8
    assert report.macs_before == float_macs
    assert report.macs_after == _count_macs(module, cnn.example_input())[0]
    assert abs(report.macs_after / float_macs - 0.5) <= MACS_TOLERANCE
    for row, target in zip(report.steps, report.macs_schedule, strict=True):
        # each step's own search: 0.01 of the MACs it starts from, as channels allow
        assert row["target_macs"] == target
        assert abs(row["macs"] - target) <= MACS_TOLERANCE, row
        assert 0 < row["step_sparsity"] < 1
    assert report.steps[0]["macs"] > report.steps[1]["macs"]
    assert report.steps[-1]["macs"] == report.macs_after / float_macs
    assert report.to_dict()["macs_schedule"] == list(report.macs_schedule)


def test_gradual_pruning_caps_every_layer_and_records_each_layer(cnn):
    import copy

    from workbench.compress.gradual import gradual_prune_

    module = copy.deepcopy(cnn.module)
    config = GradualPruneConfig(
        sparsity=0.9, steps=2, batch_size=256, keep_first_last=False, max_layer_sparsity=0.92
    )
    report = gradual_prune_(module, config, cnn)
    assert report.achieved_sparsity == pytest.approx(0.9, abs=1e-3)
    weights = {
        n: m.weight for n, m in module.named_modules() if n in {r["name"] for r in report.layers}
    }
    assert len(weights) == len(report.layers) > 2
    for row in report.layers:  # the report's rows are the module's layers after the last step
        assert row["sparsity"] <= 0.92 + 1e-9, row
        assert int(weights[row["name"]].count_nonzero()) == row["nonzero_after"]
    assert report.to_dict()["layers"][0]["name"] == report.layers[0]["name"]


def test_teacher_logits_are_computed_once_per_teacher_and_task(cnn):
    from workbench.compress import finetune

    calls = []
    handle = cnn.module.register_forward_hook(lambda *_: calls.append(1))
    try:
        finetune._TEACHER_LOGITS.clear()
        first = finetune.teacher_logits(cnn, cnn.task)
        batches = len(calls)
        first[:] = 0  # the caller's copy: the kept logits stay as computed
        again = finetune.teacher_logits(cnn, cnn.task)
    finally:
        handle.remove()
        finetune._TEACHER_LOGITS.clear()
    assert batches >= 1 and len(calls) == batches  # the second call ran no forward pass
    assert again.shape == first.shape and np.abs(again).sum() > 0
