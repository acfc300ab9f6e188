"""evaluate(): figures as a batch-1 deployment sees them, fair comparisons, early refusals."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from workbench.cache import Cache
from workbench.errors import WorkbenchError
from workbench.honesty import ConvCensus, honesty_warnings
from workbench.pipeline import evaluate, evaluation_inputs
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.results import LatencyStats, MemoryStats, Metrics, SpeedComparison
from workbench.runtimes import get_runtime
from workbench.study import sweep


class _HeavyTailed(nn.Module):
    """exp() makes a few huge activations, so a scale computed over a batch differs from a row's."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):  # noqa: D102
        return self.fc2(torch.relu(self.fc1(torch.exp(3 * x.flatten(1)))))


@pytest.fixture(scope="module")
def heavy_onnx(tmp_path_factory):
    from workbench.models import load_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("heavy") / "heavy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # the TorchScript-based exporter's notice
        torch.onnx.export(
            _HeavyTailed().eval(),
            (torch.randn(1, 1, 8, 8),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )
    return load_model(path)


def _one_by_one(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.array([sess.run(None, {name: x[i : i + 1]})[0].argmax() for i in range(len(x))])


def test_predictions_are_those_of_batch_one_inference(heavy_onnx, tmp_path, quick):
    # Dynamic quantization scales activations over the whole batch it is given, so a
    # batched evaluation measures a model that a batch-1 deployment never runs.
    cache = Cache(tmp_path)
    r = evaluate(
        heavy_onnx,
        Recipe.of(quantize=QuantizeConfig(scheme="dynamic")),
        settings=quick,
        cache=cache,
    )
    base = evaluate(heavy_onnx, settings=quick, cache=cache)
    x, _, _ = evaluation_inputs(heavy_onnx)
    ours = _one_by_one(r.artifact, x)
    batched = (
        ort.InferenceSession(str(r.artifact), providers=["CPUExecutionProvider"])
        .run(None, {"x": x})[0]
        .argmax(1)
    )
    assert (ours != batched).any(), "the model no longer shows the batch dependence this test needs"
    np.testing.assert_array_equal(np.load(cache.predictions_path(r.key)), ours)
    assert r.metrics.agreement == pytest.approx(np.mean(ours == _one_by_one(base.artifact, x)))


def test_pruning_an_onnx_file_is_refused_before_anything_is_measured(heavy_onnx, tmp_path, quick):
    cache = Cache(tmp_path)
    with pytest.raises(WorkbenchError, match="pruning needs the model as PyTorch layers"):
        evaluate(heavy_onnx, Recipe.of(PruneConfig()), settings=quick, cache=cache)
    with pytest.raises(WorkbenchError, match="pruning needs the model as PyTorch layers"):
        sweep(
            heavy_onnx,
            [Recipe(), Recipe.of(PruneConfig())],
            settings=quick,
            cache=cache,
            progress=False,
        )
    assert not list(tmp_path.rglob("*.onnx")), "a baseline was measured before the refusal"


def _metrics(variant_p50: float | None, reference: str = "float") -> Metrics:
    lat = LatencyStats(1, 1, 1, 1, 1, 1, 10, 1, 1)
    speed = (
        ()
        if variant_p50 is None
        else (
            SpeedComparison.from_rounds(
                reference, "prune-structured-0.5", [variant_p50] * 5, [0.5] * 5
            ),
        )
    )
    return Metrics(0.98, 1.0, "x", 10, 5, 10, 10, 10, lat, MemoryStats(1, 1, 1), comparisons=speed)


def test_quantized_variant_is_compared_with_its_own_float_version():
    recipe = Recipe.of(PruneConfig(method="structured"), QuantizeConfig())
    # Slower than the pruned float model (0.5 ms), timed interleaved with it.
    warnings = honesty_warnings(recipe, _metrics(0.8), _metrics(None), ConvCensus(3, 0), 1.0)
    assert any(
        "slower than its float version (prune-structured-0.5)" in w
        and "×1.60 slower" in w
        and "0.800 ms vs 0.500 ms" in w
        for w in warnings
    ), warnings
    assert not honesty_warnings(recipe, _metrics(0.4), _metrics(None), ConvCensus(3, 0), 1.0)


def test_warnings_that_hold_for_any_runtime_name_the_one_used(monkeypatch):
    from workbench import runtimes

    class OtherRuntime(type(get_runtime("onnxruntime"))):
        name, title = "other-rt", ""  # no title: sentences use the registry name

    monkeypatch.setitem(runtimes._REGISTRY, "other-rt", OtherRuntime())
    recipe = Recipe.of(PruneConfig(method="unstructured", sparsity=0.5))
    default = honesty_warnings(recipe, _metrics(None), _metrics(None), ConvCensus(0, 0), 1.0)
    assert any("no latency gain on ONNX Runtime's dense CPU kernels" in w for w in default)
    other = honesty_warnings(
        recipe, _metrics(None), _metrics(None), ConvCensus(0, 0), 1.0, runtime="other-rt"
    )
    assert any("no latency gain on other-rt's dense CPU kernels" in w for w in other), other
    assert not any("ONNX" in w for w in other), other
    with pytest.raises(WorkbenchError, match="unknown runtime 'nope'"):
        honesty_warnings(recipe, _metrics(None), None, ConvCensus(0, 0), 1.0, runtime="nope")


def test_evaluate_times_a_pruned_quantized_recipe_against_its_float_version(
    cnn, session_cache, quick
):
    prune = PruneConfig(sparsity=0.45)  # a variant no other test caches
    r = evaluate(cnn, Recipe.of(prune, QuantizeConfig()), settings=quick, cache=session_cache)
    assert [c.reference for c in r.metrics.comparisons] == ["baseline", "float"]
    assert r.metrics.comparison("float").reference_recipe == Recipe.of(prune).name
    assert all(c.rounds == quick.rounds > 1 for c in r.metrics.comparisons)
    # The stored speed-up is the median of the rounds' ratios, with their middle half.
    for c in r.metrics.comparisons:
        assert len(c.round_speedups) == c.rounds
        assert c.low <= c.speedup <= c.high
        assert c.speedup == pytest.approx(float(np.median(c.round_speedups)))


def test_pruning_a_torchscript_file_is_refused_with_the_way_out(tmp_path, quick):
    from workbench.models import load_model

    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        torch.jit.save(
            torch.jit.script(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))), path
        )
        model = load_model(path, input_shape=(1, 4))
    with pytest.raises(
        WorkbenchError, match="is a TorchScript file, and pruning needs the model as PyTorch layers"
    ) as exc:
        evaluate(model, Recipe.of(PruneConfig()), settings=quick, cache=Cache(tmp_path / "c"))
    assert "state_dict" in str(exc.value)


@pytest.mark.parametrize(
    ("source", "samples", "message"),
    [
        ("digits-cnn", 2000, "calibration needs between 1 and 1257 samples, got 2000"),
        ("torchvision:mobilenet_v3_small", 10_000_000, "would take 6021.1 GB of memory"),
    ],
)
def test_too_many_calibration_samples_are_refused_before_anything_is_measured(
    source, samples, message, tmp_path, quick
):
    from workbench.models import load_model

    model = load_model(source, pretrained=False)
    recipe = Recipe.of(quantize=QuantizeConfig(calibration_samples=samples))
    with pytest.raises(WorkbenchError, match=message):
        evaluate(model, recipe, settings=quick, cache=Cache(tmp_path))
    assert not list(tmp_path.rglob("*.onnx")), "a baseline was measured before the refusal"


def test_accuracy_aware_quantization_reads_only_the_training_split(tmp_path, monkeypatch):
    from workbench.data.digits import Task
    from workbench.models import load_model
    from workbench.onnx_export import export_onnx

    model = load_model("digits-cnn")
    src = tmp_path / "float.onnx"
    export_onnx(model.module, model.input_shape, src)
    parts: list[str] = []
    raw = Task.raw
    monkeypatch.setattr(Task, "raw", lambda self, part: parts.append(part) or raw(self, part))
    seen: dict = {}
    from workbench.compress import quantize as real_quantize

    def spy(src, dst, config, calibration=None, validation=None):
        seen["calibration"], seen["validation"] = calibration, validation
        return real_quantize(src, dst, config, calibration, validation)

    monkeypatch.setattr("workbench.compress.quantize", spy)
    config = QuantizeConfig(max_accuracy_drop=0.0, calibration_samples=64)
    quantize_step = get_runtime("onnxruntime").artifact_steps[QuantizeConfig]
    report = quantize_step(src, tmp_path / "q.onnx", config, model)
    assert set(parts) == {"train"}  # the test split is never read to choose layers
    x_val, y_val = seen["validation"]
    train_x, _ = model.task.arrays("train", model.preprocessing)
    assert len(x_val) == len(train_x) - 64 == report["accuracy_aware"]["held_out_images"]
    # held out from calibration: no calibration image is among the held-out images
    calib = {c.tobytes() for c in seen["calibration"]}
    assert not calib & {v.tobytes() for v in x_val}
    assert report["accuracy_aware"]["final_drop_points"] <= 0.0


def test_accuracy_aware_quantization_of_a_model_without_labels_is_refused(tmp_path, quick):
    from workbench.models import load_model

    model = load_model("torchvision:mobilenet_v3_small", pretrained=False)
    recipe = Recipe.of(quantize=QuantizeConfig(max_accuracy_drop=1.0))
    with pytest.raises(WorkbenchError, match="max_accuracy_drop needs labelled images"):
        evaluate(model, recipe, settings=quick, cache=Cache(tmp_path))
    assert not list(tmp_path.rglob("*.onnx"))
