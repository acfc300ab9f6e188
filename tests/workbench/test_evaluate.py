"""evaluate(): real figures on the artifact, the cache, the warnings, clear errors."""

from __future__ import annotations

import json
import os
import zlib

import onnx
import pytest

from workbench import measure
from workbench.cache import Cache
from workbench.errors import WorkbenchError
from workbench.honesty import ConvCensus, conv_census, honesty_warnings
from workbench.measure.artifact import COMPRESSION_LEVEL
from workbench.pipeline import MeasureSettings, evaluate
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.study import grid, sweep


def test_baseline_figures_are_measured_on_the_artifact(cnn, session_cache, quick):
    r = evaluate(cnn, settings=quick, cache=session_cache)
    m = r.metrics
    data = r.artifact.read_bytes()
    assert m.size_bytes == len(data) == os.path.getsize(r.artifact)
    assert m.compressed_bytes == len(zlib.compress(data, COMPRESSION_LEVEL))
    # The ONNX artifact reproduces the accuracy recorded when the model was trained.
    assert abs(m.accuracy - cnn.meta["test_accuracy"]) <= 1 / 540 + 1e-12
    assert m.agreement == 1.0 and m.agreement_basis.startswith(
        "540 digits test images, x = (pixels / 16 - 0.5) / 0.5"
    )
    assert 0 < m.nonzero_params <= m.params and m.macs > m.params
    lat = m.latency
    assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max and lat.n >= quick.min_runs
    assert lat.threads == 1 and m.environment["threads"] == 1
    assert m.memory.peak_bytes > 0 and m.parity_max_abs_diff < 1e-4
    assert r.warnings == ()


def test_cached_result_is_not_measured_again(cnn, session_cache, quick, monkeypatch):
    first = evaluate(cnn, settings=quick, cache=session_cache)

    def fail(*a, **k):
        raise AssertionError("a cached variant was measured again")

    monkeypatch.setattr(measure, "measure_latency_interleaved", fail)
    again = evaluate(cnn, settings=quick, cache=session_cache)
    assert again.key == first.key and again.metrics == first.metrics


def test_damaged_entry_is_ignored_and_rebuilt(cnn, tmp_path, quick):
    cache = Cache(tmp_path)
    r = evaluate(cnn, settings=quick, cache=cache)
    r.artifact.write_bytes(b"not an onnx file")
    assert cache.get(r.key) is None  # the damaged entry is dropped
    rebuilt = evaluate(cnn, settings=quick, cache=cache)
    assert onnx.load(str(rebuilt.artifact)) is not None
    (cache.entry_dir(rebuilt.key) / "result.json").write_text("{ truncated")
    assert cache.get(rebuilt.key) is None


def test_interrupted_sweep_resumes_where_it_stopped(cnn, tmp_path, quick, monkeypatch):
    import threading

    cache = Cache(tmp_path)
    recipes = grid(prune=[PruneConfig(sparsity=0.5), PruneConfig(sparsity=0.7)])
    cancel = threading.Event()
    seen = []
    first = sweep(
        cnn,
        recipes,
        settings=quick,
        cache=cache,
        progress=False,
        on_result=lambda r: (seen.append(r), cancel.set()),
        cancel=cancel,
    )
    assert len(first.results) == 1  # stopped after the baseline
    measured = []
    real = measure.measure_latency_interleaved
    monkeypatch.setattr(
        measure,
        "measure_latency_interleaved",
        lambda *a, **k: measured.append(a[0]) or real(*a, **k),
    )
    second = sweep(cnn, recipes, settings=quick, cache=cache, progress=False)
    assert [r.recipe for r in second.results] == recipes
    assert len(measured) == 2  # only the two variants not finished before
    assert not list(tmp_path.glob(".build-*"))  # no half-built entries left


def test_unstructured_pruning_warns_structured_does_not(cnn, session_cache, quick):
    un = evaluate(cnn, Recipe.of(PruneConfig(sparsity=0.5)), settings=quick, cache=session_cache)
    m = un.metrics
    expected = f"Unstructured pruning (sparsity 50% in the layers it pruned; {m.nonzero_params:,} of {m.params:,} parameters are non-zero)"
    assert any(w.startswith(expected) for w in un.warnings), un.warnings
    assert un.metrics.nonzero_params < 0.75 * un.metrics.params
    assert un.metrics.size_bytes == pytest.approx(
        evaluate(cnn, settings=quick, cache=session_cache).metrics.size_bytes, rel=0.01
    )
    st = evaluate(
        cnn,
        Recipe.of(PruneConfig(method="structured", sparsity=0.3)),
        settings=quick,
        cache=session_cache,
    )
    assert not any("Unstructured" in w for w in st.warnings)
    assert st.metrics.macs < evaluate(cnn, settings=quick, cache=session_cache).metrics.macs


def test_dynamic_quantization_of_convolutions_warns(cnn, session_cache, quick):
    r = evaluate(
        cnn,
        Recipe.of(quantize=QuantizeConfig(scheme="dynamic")),
        settings=quick,
        cache=session_cache,
    )
    assert any(
        "Dynamic quantization turned 3 convolution(s) into ConvInteger" in w for w in r.warnings
    )
    kept = evaluate(
        cnn,
        Recipe.of(quantize=QuantizeConfig(scheme="dynamic", keep_float=("Conv",))),
        settings=quick,
        cache=session_cache,
    )
    assert not any("Dynamic quantization" in w for w in kept.warnings)  # no conv was quantized
    s = evaluate(
        cnn, Recipe.of(quantize=QuantizeConfig(scheme="int8")), settings=quick, cache=session_cache
    )
    assert not any("Dynamic quantization" in w for w in s.warnings)
    # int8 weights are really in the artifact.
    types = {t.data_type for t in onnx.load(str(s.artifact)).graph.initializer}
    assert onnx.TensorProto.INT8 in types
    assert (
        s.metrics.size_bytes
        < 0.5 * evaluate(cnn, settings=quick, cache=session_cache).metrics.size_bytes
    )


def test_slower_than_float_warning_follows_the_interleaved_measurement(cnn, session_cache, quick):
    r = evaluate(
        cnn, Recipe.of(quantize=QuantizeConfig(scheme="int8")), settings=quick, cache=session_cache
    )
    speed = r.metrics.comparison("baseline")
    assert speed is not None and speed.rounds == quick.rounds
    slower = speed.speedup < 1 / 1.05 and speed.high < 1.0
    assert slower == any("measured slower than the float baseline" in w for w in r.warnings)


def test_accuracy_drop_warns_beyond_the_limit(cnn, session_cache, quick):
    r = evaluate(
        cnn,
        Recipe.of(PruneConfig(sparsity=0.95, keep_first_last=False)),
        settings=quick,
        cache=session_cache,
    )
    base = evaluate(cnn, settings=quick, cache=session_cache)
    drop = (base.metrics.accuracy - r.metrics.accuracy) * 100
    assert drop > 1.0, "95% sparsity on every layer should cost this small CNN accuracy"
    assert any(f"Accuracy dropped {drop:.1f} points" in w for w in r.warnings)
    assert r.metrics.agreement < 1.0


def test_the_census_counts_only_convolutions_that_were_quantized(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w8 = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.int8), "w8")
    w32 = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w32")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [
        helper.make_node("DequantizeLinear", ["w8", "s"], ["wq"]),
        helper.make_node("Conv", ["x", "wq"], ["a"], group=4, pads=[1, 1, 1, 1]),  # int8 depthwise
        helper.make_node("Conv", ["a", "w32"], ["b"], group=4, pads=[1, 1, 1, 1]),  # kept in float
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w8, w32, scale],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert conv_census(path) == ConvCensus(dynamic=0, int8_depthwise=1)


def test_rules_that_depend_on_the_graph_and_not_on_cpu_flags():
    """No warning predicts speed from the CPU's flags: only measured figures warn."""
    from workbench.results import LatencyStats, MemoryStats, Metrics

    lat = LatencyStats(1, 1, 1, 1, 1, 1, 10, 1, 1)
    m = Metrics(0.98, 1.0, "x", 10, 5, 10, 10, 10, lat, MemoryStats(1, 1, 1))
    per_tensor = Recipe.of(quantize=QuantizeConfig(per_channel=False))
    warnings = honesty_warnings(per_tensor, m, m, ConvCensus(3, 2), 1.0)
    assert any("Per-tensor int8 on 2 depthwise" in w for w in warnings)
    assert not any("VNNI" in w or "little or no speed-up" in w for w in warnings)
    assert honesty_warnings(Recipe.of(quantize=QuantizeConfig()), m, m, ConvCensus(3, 2), 1.0) == ()
    fp16 = honesty_warnings(
        Recipe.of(quantize=QuantizeConfig(scheme="fp16")), m, m, ConvCensus(3, 2), 1.0
    )
    assert fp16 == ()  # fp16 is not int8: the depthwise rule does not apply


def test_bad_requests_fail_clearly_and_leave_nothing(cnn, tmp_path, quick):
    cache = Cache(tmp_path)
    with pytest.raises(
        WorkbenchError,
        match="layer .conv_that_is_not_there. in exclude is not a module of this model",
    ):
        evaluate(
            cnn,
            Recipe.of(PruneConfig(exclude=("conv_that_is_not_there",))),
            settings=quick,
            cache=cache,
        )
    assert not list(tmp_path.glob(".build-*"))


def test_pruning_an_onnx_file_is_refused(tmp_path, session_cache, quick, cnn):
    from workbench.models import load_model

    base = evaluate(cnn, settings=quick, cache=session_cache)
    onnx_model = load_model(base.artifact, task="digits", preprocessing=cnn.preprocessing)
    with pytest.raises(WorkbenchError, match="pruning needs the model as PyTorch layers"):
        evaluate(onnx_model, Recipe.of(PruneConfig()), settings=quick, cache=session_cache)
    # The same artifact loaded as a user ONNX file measures the same accuracy.
    again = evaluate(onnx_model, settings=quick, cache=session_cache)
    assert again.metrics.accuracy == base.metrics.accuracy
    assert again.metrics.parity_max_abs_diff is None


def test_an_onnx_file_with_external_weights_is_measured_self_contained(
    tmp_path, session_cache, quick, cnn
):
    from workbench.models import load_model

    base = evaluate(cnn, settings=quick, cache=session_cache)
    proto = onnx.load(str(base.artifact))
    user = tmp_path / "user" / "ext.onnx"
    user.parent.mkdir()
    onnx.save(proto, str(user), save_as_external_data=True, location="ext.data", size_threshold=0)
    assert (user.parent / "ext.data").stat().st_size > user.stat().st_size
    model = load_model(user, task="digits", preprocessing=cnn.preprocessing)
    for recipe in (Recipe(), Recipe.of(quantize=QuantizeConfig(scheme="int8"))):
        result = evaluate(model, recipe, settings=quick, cache=session_cache)
        artifact = onnx.load(str(result.artifact), load_external_data=False)
        assert not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in artifact.graph.initializer
        ), "the artifact still points at weights outside it"
    baseline = evaluate(model, settings=quick, cache=session_cache)
    assert baseline.metrics.accuracy == base.metrics.accuracy
    # The same weights in one file (a few bytes of field framing may differ).
    assert baseline.metrics.size_bytes == pytest.approx(base.artifact.stat().st_size, rel=0.001)


def test_settings_are_validated():
    with pytest.raises(WorkbenchError, match="threads 0"):
        MeasureSettings(threads=0)


def test_step_reports_reach_the_result_and_the_manifest(cnn, session_cache, quick, tmp_path):

    from workbench.export import export_variant

    recipe = Recipe.of(PruneConfig(method="structured", sparsity=0.3), QuantizeConfig())
    r = evaluate(cnn, recipe, settings=quick, cache=session_cache)
    assert [s["kind"] for s in r.steps] == ["prune", "quantize"]
    assert r.steps[0]["achieved_sparsity"] > 0
    assert evaluate(cnn, recipe, settings=quick, cache=session_cache).steps == r.steps  # cached too
    manifest = json.loads(
        export_variant(r, cnn, tmp_path / "out", settings=quick, cache=session_cache).read_text()
    )
    assert manifest["step_reports"] == list(r.steps)


def test_slower_than_float_needs_more_than_the_spread_over_rounds():
    from workbench.results import LatencyStats, MemoryStats, Metrics, SpeedComparison

    def metrics(variant_p50s: list[float] | None) -> Metrics:
        speed = (
            ()
            if variant_p50s is None
            else (SpeedComparison.from_rounds("baseline", "baseline", variant_p50s, [1.0] * 5),)
        )
        lat = LatencyStats(1, 1, 1, 1, 1, 1, 100, 10, 1)
        return Metrics(
            0.98, 1.0, "x", 10, 5, 10, 10, 10, lat, MemoryStats(1, 1, 1), comparisons=speed
        )

    recipe = Recipe.of(quantize=QuantizeConfig(scheme="fp16"))
    # Slower by the median, but the rounds' upper quartile says faster: noise, no warning.
    within_spread = honesty_warnings(
        recipe, metrics([1.3, 1.3, 1.3, 0.9, 0.9]), metrics(None), ConvCensus(0, 0), 1.0
    )
    assert not any("measured slower" in w for w in within_spread)
    beyond = honesty_warnings(
        recipe, metrics([1.25, 1.25, 1.25, 1.3, 1.2]), metrics(None), ConvCensus(0, 0), 1.0
    )
    assert any(
        "measured slower than the float baseline, timed interleaved in the same run: "
        "×1.25 slower (×1.25–1.25 over 5 rounds); p50 1.250 ms vs 1.000 ms" in w
        for w in beyond
    ), beyond


@pytest.mark.parametrize(
    ("model", "recipe", "names"),
    [
        (42, None, "load_model('digits-cnn')"),
        ("CLASS", None, "load_model('model.pt2', input_shape="),
        ("MODULE", None, "torch.export.save"),
        ("CNN", "int8", "QuantizeConfig(scheme='int8')"),
        ("CNN", ["int8"], "Recipe.of("),
    ],
)
def test_api_misuse_names_the_right_call(cnn, model, recipe, names):
    import torch

    model = {"CLASS": torch.nn.Conv2d, "MODULE": torch.nn.Linear(2, 2), "CNN": cnn}.get(
        model, model
    )
    with pytest.raises(WorkbenchError) as exc:
        evaluate(model, recipe)
    assert names in str(exc.value)


def test_a_bare_config_is_a_one_step_recipe(cnn, session_cache, quick):
    step = PruneConfig(sparsity=0.3)
    bare = evaluate(cnn, step, settings=quick, cache=session_cache)
    assert bare.recipe == Recipe((step,))
    assert bare.key == evaluate(cnn, Recipe.of(step), settings=quick, cache=session_cache).key


def test_threads_are_bounded_by_the_usable_cores():
    from workbench.pipeline import usable_cores

    cores = usable_cores()
    assert MeasureSettings(threads=cores).threads == cores
    with pytest.raises(WorkbenchError, match=f"use threads from 1 to {cores}"):
        MeasureSettings(threads=10_000)


def test_one_failing_variant_is_recorded_and_the_sweep_goes_on(cnn, tmp_path, quick, monkeypatch):
    # Torch-Pruning cannot prune some graphs structurally (ShuffleNetV2's channel
    # shuffle); any step that raises stands for it here.
    from workbench import pipeline

    real = pipeline.TORCH_STEPS[PruneConfig]

    def prune_or_fail(module, config, model):
        if config.method == "structured":
            raise RuntimeError("torch_pruning: cannot prune this graph structurally")
        return real(module, config, model)

    monkeypatch.setitem(pipeline.TORCH_STEPS, PruneConfig, prune_or_fail)
    broken = Recipe.of(PruneConfig(method="structured", sparsity=0.5))
    good = Recipe.of(PruneConfig(sparsity=0.5))
    study = sweep(cnn, [broken, good], settings=quick, cache=Cache(tmp_path), progress=False)
    assert [r.recipe for r in study.results] == [Recipe(), good]
    assert study.failures == [
        {
            "recipe": broken.to_dict(),
            "recipe_name": broken.name,
            "runtime": "onnxruntime",
            "error": "RuntimeError: torch_pruning: cannot prune this graph structurally",
        }
    ]
    assert broken.name not in {r.recipe.name for r in study.frontier()}
    from workbench.study import Study

    again = Study.load(study.save(tmp_path / "s.json"))
    assert again.failures == study.failures
    assert not list(tmp_path.glob(".build-*")), "the failed build was left behind"
