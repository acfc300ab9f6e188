"""The registered ``litert`` runtime through workbench.evaluate: the Keras sample and a
PyTorch sample built, quantized and measured in LiteRT; the Keras sample in ONNX Runtime;
the options LiteRT refuses; its honesty warning for int8 slower than float."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.models.model import keras_weights_fingerprint
from workbench.pipeline import check_applicable, evaluate
from workbench.recipe import QuantizeConfig, Recipe
from workbench.results import SpeedComparison
from workbench.runtimes import get_runtime, list_runtimes


@pytest.fixture(scope="module")
def keras_cnn():
    from workbench.models import load_model

    return load_model("digits-cnn-keras")


@pytest.fixture
def litert_quick(quick):
    return dataclasses.replace(quick, runtime="litert")


def test_litert_is_registered_with_its_artifact():
    assert "litert" in list_runtimes()
    rt = get_runtime("litert")
    assert (rt.name, rt.artifact_format, rt.artifact_file) == ("litert", "tflite", "model.tflite")
    assert QuantizeConfig in rt.artifact_steps
    versions = rt.versions()
    assert versions["ai-edge-litert"] != "absent" and versions["tensorflow"] != "absent"


def test_the_keras_sample_baseline_in_litert(keras_cnn, litert_quick, session_cache):
    r = evaluate(keras_cnn, settings=litert_quick, cache=session_cache)
    m = r.metrics
    assert r.runtime == "litert" and r.artifact.name == "model.tflite"
    assert r.artifact.read_bytes()[4:8] == b"TFL3"
    assert abs(m.accuracy - keras_cnn.meta["test_accuracy"]) <= 1 / 540 + 1e-9
    assert m.parity_max_abs_diff is not None and m.parity_max_abs_diff < 1e-4
    assert m.params == 14570 and m.macs == 203072  # counted from the file (BN folded)
    assert m.latency.p50 > 0 and m.latency.threads == 1 and m.memory.peak_bytes > 0
    assert m.operator_ms == {}  # LiteRT's Python API has no per-operator profiler
    assert m.environment["runtime"] == "litert"
    assert m.environment["runtime_versions"]["ai-edge-litert"]
    # Only the artifact, its predictions and the result: the kept Keras model is scratch.
    assert sorted(p.name for p in r.artifact.parent.iterdir()) == [
        "model.tflite",
        "predictions.npy",
        "result.json",
    ]


def test_full_int8_in_litert_keeps_accuracy_and_shrinks_the_file(
    keras_cnn, litert_quick, session_cache
):
    base = evaluate(keras_cnn, settings=litert_quick, cache=session_cache)
    recipe = Recipe.of(quantize=QuantizeConfig(scheme="int8", io_type="int8"))
    r = evaluate(keras_cnn, recipe, settings=litert_quick, cache=session_cache)
    from workbench.runtimes.litert import io_signature

    inputs, outputs = io_signature(r.artifact)
    assert inputs[0].dtype == "int8" and outputs[0].dtype == "int8"
    assert inputs[0].quantized and outputs[0].quantized
    assert r.metrics.accuracy >= base.metrics.accuracy - 0.01
    assert r.metrics.size_bytes * 2.4 < base.metrics.size_bytes
    step = r.steps[0]
    assert step["kind"] == "quantize" and step["io_type"] == "int8"
    assert step["calibration_samples"] == QuantizeConfig().calibration_samples
    assert r.metrics.comparison("baseline") is not None  # timed interleaved with float


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["fp16", "dynamic"])
def test_fp16_and_dynamic_in_litert(keras_cnn, litert_quick, session_cache, scheme):
    from workbench.runtimes.litert import graph_stats

    r = evaluate(
        keras_cnn, QuantizeConfig(scheme=scheme), settings=litert_quick, cache=session_cache
    )
    assert r.metrics.accuracy >= 0.97
    dtypes = graph_stats(r.artifact).weight_dtypes
    assert ("float16" in dtypes) if scheme == "fp16" else ("int8" in dtypes)


def test_onnx_only_quantization_options_are_refused_in_litert(keras_cnn):
    for config, name in [
        (QuantizeConfig(scheme="int8", calibration="entropy"), "calibration"),
        (QuantizeConfig(scheme="int8", keep_float=("Conv",)), "keep_float"),
        (QuantizeConfig(scheme="int8", bias_correction=True), "bias_correction"),
        (QuantizeConfig(scheme="int8", max_accuracy_drop=0.5), "max_accuracy_drop"),
    ]:
        with pytest.raises(WorkbenchError, match=rf"LiteRT cannot honour .*{name}="):
            check_applicable(keras_cnn, Recipe.of(quantize=config), "litert")
    # Per-tensor weight scales the converter does honour.
    per_tensor = Recipe.of(quantize=QuantizeConfig(scheme="int8", per_channel=False))
    check_applicable(keras_cnn, per_tensor, "litert")
    # ... and the TFLite-only int8 I/O type in ONNX Runtime.
    with pytest.raises(WorkbenchError, match="ONNX Runtime's int8 models take and give float"):
        check_applicable(
            keras_cnn, Recipe.of(quantize=QuantizeConfig(io_type="int8")), "onnxruntime"
        )
    with pytest.raises(WorkbenchError, match="io_type 'int8' applies to full-integer int8 only"):
        QuantizeConfig(scheme="fp16", io_type="int8")


def test_the_keras_sample_in_onnx_runtime(keras_cnn, quick, session_cache):
    r = evaluate(keras_cnn, settings=quick, cache=session_cache)
    assert r.runtime == "onnxruntime" and r.artifact.name == "model.onnx"
    assert abs(r.metrics.accuracy - keras_cnn.meta["test_accuracy"]) <= 1 / 540 + 1e-9
    assert r.metrics.parity_max_abs_diff < 1e-4


@pytest.mark.slow
def test_a_pytorch_sample_in_litert(cnn, litert_quick, session_cache):
    r = evaluate(cnn, settings=litert_quick, cache=session_cache)
    assert r.runtime == "litert" and r.artifact.suffix == ".tflite"
    assert r.metrics.parity_max_abs_diff < 1e-4
    assert abs(r.metrics.accuracy - cnn.meta["test_accuracy"]) <= 1 / 540 + 1e-9
    # The NCHW model keeps its NCHW input in the file (onnx_keras permutes inside).
    from workbench.runtimes.litert import io_signature

    assert tuple(io_signature(r.artifact)[0][0].shape[1:]) == tuple(cnn.input_shape[1:])


def test_int8_slower_than_float_says_so_with_the_cpu_features(
    keras_cnn, litert_quick, session_cache
):
    recipe = Recipe.of(quantize=QuantizeConfig(scheme="int8"))
    r = evaluate(keras_cnn, recipe, settings=litert_quick, cache=session_cache)
    rt = get_runtime("litert")
    base = evaluate(keras_cnn, settings=litert_quick, cache=session_cache).metrics
    # The same figures with the interleaved rounds of a variant twice as slow as float.
    slow = SpeedComparison.from_rounds("baseline", "baseline", [2.0] * 9, [1.0] * 9)
    fast = SpeedComparison.from_rounds("baseline", "baseline", [0.5] * 9, [1.0] * 9)
    said = {}
    for name, comparison in (("slow", slow), ("fast", fast)):
        metrics = dataclasses.replace(r.metrics, comparisons=(comparison,))
        warnings = rt.honesty_warnings(recipe, metrics, base, None, 1.0)
        said[name] = [w for w in warnings if "measured slower" in w]
    assert not said["fast"] and len(said["slow"]) == 1
    assert "This CPU's features: " in said["slow"][0] and "×2.0 slower" in said["slow"][0]


def test_latency_interleaved_times_each_file_in_rounds(keras_cnn, litert_quick, session_cache):
    base = evaluate(keras_cnn, settings=litert_quick, cache=session_cache)
    rt = get_runtime("litert")
    timing = rt.measure_latency_interleaved(
        [base.artifact, base.artifact], [keras_cnn.input_shape] * 2, litert_quick
    )
    assert len(timing.latency) == 2 and all(
        len(p50s) == litert_quick.rounds for p50s in timing.round_p50
    )
    with pytest.raises(
        WorkbenchError, match=r"takes input shape \[1, 8, 8, 1\], not \[1, 1, 8, 8\]"
    ):
        rt.measure_latency_interleaved([base.artifact], [(1, 1, 8, 8)], litert_quick)
    np.testing.assert_array_equal(
        rt.predict(base.artifact, np.zeros((2, 8, 8, 1), np.float32)).shape, (2, 10)
    )


def test_a_keras_model_is_pruned_in_keras_then_converted(keras_cnn, litert_quick, session_cache):
    from workbench.recipe import PruneConfig

    recipe = Recipe.of(PruneConfig(sparsity=0.5))
    r = evaluate(keras_cnn, recipe, settings=litert_quick, cache=session_cache)
    base = evaluate(keras_cnn, settings=litert_quick, cache=session_cache)
    assert r.steps[0]["kind"] == "prune"
    # Half the prunable kernels' weights are zero in the file (first and last kept dense).
    assert r.metrics.nonzero_params < 0.7 * r.metrics.params
    assert r.metrics.compressed_bytes < base.metrics.compressed_bytes
    assert any("no latency gain in LiteRT" in w for w in r.warnings)
    # The original model is untouched: the steps acted on a copy.
    assert keras_cnn.fingerprint == keras_weights_fingerprint(keras_cnn.keras_model)
    with pytest.raises(WorkbenchError, match="structured pruning .* not available for Keras"):
        check_applicable(keras_cnn, Recipe.of(PruneConfig(method="structured")), "litert")
