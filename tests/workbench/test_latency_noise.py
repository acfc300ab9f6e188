"""Latency that noise cannot fake: interleaved speed-ups, noisy results re-measured,
warnings from what was measured, progressive figures."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench import measure, pipeline
from workbench.cache import Cache
from workbench.measure import timing
from workbench.pipeline import evaluate
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.results import PROGRESS_STAGES, Result

# Noise is simulated through the noise checks' own inputs, never by loading the machine:
# no spread limit (so real jitter never counts), and a preemption counter that says
# "the OS took the CPU 1000 times per call" when the test wants a noisy run.
CALM = {"max_spread": 1e9, "max_preempted": 0.1}


def preempted_on_every_run(monkeypatch) -> None:
    counter = iter(range(0, 10**12, 1000))
    monkeypatch.setattr(timing, "_involuntary_switches", lambda: next(counter))


def never_preempted(monkeypatch) -> None:
    monkeypatch.setattr(timing, "_involuntary_switches", lambda: 0)


def test_the_speedup_is_stored_with_its_spread_and_round_trips(cnn, tmp_path, quick):
    cache = Cache(tmp_path)
    recipe = Recipe.of(PruneConfig(method="structured", sparsity=0.5))
    r = evaluate(cnn, recipe, settings=quick, cache=cache)
    speed = r.metrics.comparison("baseline")
    assert speed is not None and speed.reference_recipe == "baseline"
    assert speed.rounds == quick.rounds == len(speed.round_speedups)
    assert speed.low <= speed.speedup <= speed.high
    assert r.metrics.latency.rounds == quick.rounds
    assert r.metrics.latency.p50_low <= r.metrics.latency.p50_high
    assert r.metrics.noise is not None
    # Through result.json and back, as the cache stores it.
    record = json.loads((cache.entry_dir(r.key) / "result.json").read_text())
    assert Result.from_dict(json.loads(json.dumps(record["result"]))).metrics == r.metrics
    assert cache.get(r.key).metrics.comparisons == r.metrics.comparisons
    # The baseline has nothing to be compared with.
    assert evaluate(cnn, settings=quick, cache=cache).metrics.comparisons == ()


def test_variant_and_baseline_are_timed_interleaved_in_one_run(cnn, tmp_path, quick, monkeypatch):
    cache = Cache(tmp_path)
    base = evaluate(cnn, settings=quick, cache=cache)
    calls = []
    real = measure.measure_latency_interleaved
    monkeypatch.setattr(
        measure,
        "measure_latency_interleaved",
        lambda paths, *a, **k: calls.append(list(paths)) or real(paths, *a, **k),
    )
    monkeypatch.setattr(
        measure, "measure_latency", lambda *a, **k: pytest.fail("a variant was timed alone")
    )
    evaluate(cnn, Recipe.of(PruneConfig(sparsity=0.3)), settings=quick, cache=cache)
    assert len(calls) == 1 and len(calls[0]) == 2 and calls[0][1] == base.artifact


def test_a_noisy_result_is_measured_again_on_the_next_evaluate_not_rebuilt(
    cnn, tmp_path, quick, monkeypatch
):
    settings = dataclasses.replace(quick, **CALM)
    cache = Cache(tmp_path)
    recipe = Recipe.of(PruneConfig(sparsity=0.35))
    never_preempted(monkeypatch)
    evaluate(cnn, settings=settings, cache=cache)  # a calm baseline
    preempted_on_every_run(monkeypatch)
    noisy = evaluate(cnn, recipe, settings=settings, cache=cache)
    assert noisy.noisy and noisy.metrics.noise.preempted_share > 0.1
    assert any("other processes took the CPU" in reason for reason in noisy.metrics.noise.reasons)
    assert any("measured on a busy machine" in w and "--remeasure" in w for w in noisy.warnings)
    assert cache.get(noisy.key).noisy  # kept, flagged

    never_preempted(monkeypatch)
    built, timed = [], []
    real_build, real_time = pipeline._build_artifact, measure.measure_latency_interleaved
    monkeypatch.setattr(
        pipeline, "_build_artifact", lambda *a, **k: built.append(1) or real_build(*a, **k)
    )
    monkeypatch.setattr(
        measure,
        "measure_latency_interleaved",
        lambda *a, **k: timed.append(1) or real_time(*a, **k),
    )
    again = evaluate(cnn, recipe, settings=settings, cache=cache)
    assert built == [] and timed == [1]  # re-timed on the cached artifact, nothing rebuilt
    assert not again.noisy and not any("busy machine" in w for w in again.warnings)
    assert again.key == noisy.key and again.metrics.accuracy == noisy.metrics.accuracy
    assert again.metrics.latency != noisy.metrics.latency
    assert not cache.get(again.key).noisy  # the cached figures were replaced
    # Now final: served from the cache.
    assert evaluate(cnn, recipe, settings=settings, cache=cache) == again and timed == [1]


def test_remeasure_replaces_the_figures_and_rebuilds_nothing(cnn, tmp_path, quick, monkeypatch):
    settings = dataclasses.replace(quick, **CALM)
    never_preempted(monkeypatch)
    cache = Cache(tmp_path)
    recipe = Recipe.of(quantize=QuantizeConfig(scheme="fp16"))
    first = evaluate(cnn, recipe, settings=settings, cache=cache)
    monkeypatch.setattr(
        pipeline, "_build_artifact", lambda *a, **k: pytest.fail("remeasure rebuilt the artifact")
    )
    again = evaluate(cnn, recipe, settings=settings, cache=cache, remeasure=True)
    assert again.key == first.key and again.metrics.size_bytes == first.metrics.size_bytes
    assert again.metrics.comparison("baseline") != first.metrics.comparison("baseline")
    assert cache.get(first.key).metrics == again.metrics


def _constant_class_onnx(path, cls: int = 3) -> None:
    """A model that answers ``cls`` whatever it is given (zero weights, one large bias)."""
    w = numpy_helper.from_array(np.zeros((64, 10), np.float32), "w")
    bias = np.zeros(10, np.float32)
    bias[cls] = 5.0
    b = numpy_helper.from_array(bias, "b")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [w, b, shape],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_agreement_with_a_one_class_model_is_called_meaningless(tmp_path, quick):
    from workbench.models import load_model

    path = tmp_path / "constant.onnx"
    _constant_class_onnx(path)
    model = load_model(path)
    cache = Cache(tmp_path / "cache")
    for recipe in (Recipe(), Recipe.of(quantize=QuantizeConfig(scheme="fp16"))):
        r = evaluate(model, recipe, settings=quick, cache=cache)
        assert r.metrics.agreement == 1.0
        assert any(
            "predicts class 3 for 64 of 64 agreement inputs (100%)" in w
            and "says next to nothing" in w
            for w in r.warnings
        ), r.warnings


def test_a_model_that_tells_inputs_apart_gets_no_agreement_warning(cnn, session_cache, quick):
    from workbench.honesty import agreement_warning

    assert agreement_warning(np.array([3] * 60 + [1, 2, 4, 5])) is None  # 94%: below
    assert "class 3 for 61 of 64" in agreement_warning(np.array([3] * 61 + [1, 2, 4]))
    r = evaluate(cnn, settings=quick, cache=session_cache)
    assert not any("agreement inputs" in w for w in r.warnings)


def test_on_progress_reports_accuracy_then_latency_then_the_rest(cnn, tmp_path, quick):
    cache = Cache(tmp_path)
    seen = []
    r = evaluate(
        cnn,
        Recipe.of(PruneConfig(method="structured", sparsity=0.4)),
        settings=quick,
        cache=cache,
        on_progress=seen.append,
    )
    stages = [p.stage for p in seen]
    # The baseline is measured first (no progress of its own), then the variant's stages.
    assert stages == list(PROGRESS_STAGES)
    first, latency, done = seen
    assert first.figures["accuracy"] == r.metrics.accuracy
    assert first.figures["size_bytes"] == r.metrics.size_bytes
    assert first.figures["macs"] == r.metrics.macs
    # The compressed size comes with the latency: the first figures do not wait for zlib.
    assert "compressed_bytes" not in first.figures and "compressed_bytes" in first.pending
    assert latency.figures["compressed_bytes"] == r.metrics.compressed_bytes
    assert "latency" not in first.figures and "latency" in first.pending
    assert "memory" in first.pending and "operator_ms" in first.pending
    assert latency.figures["latency"] == r.metrics.latency
    assert latency.figures["comparisons"] == r.metrics.comparisons
    assert "memory" not in latency.figures and latency.pending == ("memory", "operator_ms")
    assert done.figures["memory"] == r.metrics.memory and done.pending == ()
    # A cached result has nothing to report progressively.
    again = []
    evaluate(cnn, r.recipe, settings=quick, cache=cache, on_progress=again.append)
    assert again == []


def test_noise_limits_are_validated():
    from workbench.errors import WorkbenchError
    from workbench.pipeline import MeasureSettings

    with pytest.raises(WorkbenchError, match="rounds 0"):
        MeasureSettings(rounds=0)
    with pytest.raises(WorkbenchError, match="noise limits"):
        MeasureSettings(max_spread=-1)


def test_cli_remeasure_times_cached_variants_again_and_rebuilds_nothing(
    capsys, tmp_path, monkeypatch
):
    from workbench.cli import main

    cache = ["--cache-dir", str(tmp_path / "cache"), "--no-profile"]
    assert main(["evaluate", "digits-cnn", "--quantize", "fp16", "--json", *cache]) == 0
    first = json.loads(capsys.readouterr().out)
    assert [s["reference"] for s in first["speedup"]] == ["baseline"]
    assert first["latency_noise"] is not None
    monkeypatch.setattr(
        pipeline, "_build_artifact", lambda *a, **k: pytest.fail("--remeasure rebuilt a variant")
    )
    timed = []
    real = measure.measure_latency_interleaved
    monkeypatch.setattr(
        measure,
        "measure_latency_interleaved",
        lambda paths, *a, **k: timed.append(len(paths)) or real(paths, *a, **k),
    )
    assert main(["evaluate", "digits-cnn", "--quantize", "fp16", "--remeasure", *cache]) == 0
    out = capsys.readouterr().out
    assert timed[-1] == 2  # the variant with its baseline, interleaved
    assert "speed" in out and "than the baseline (×" in out and "rounds)" in out
    study = tmp_path / "study.json"
    timed.clear()
    code = main(
        [
            "sweep",
            "digits-cnn",
            "--sparsity",
            "0",
            "--quantize",
            "fp16",
            "--remeasure",
            "--out",
            str(study),
            "--json",
            *cache,
        ]
    )
    assert code == 0 and timed == [1, 2]  # baseline alone, then the variant against it


def test_a_noisy_baseline_is_not_re_measured_before_a_new_variant(
    cnn, tmp_path, quick, monkeypatch
):
    # The variant times the baseline again interleaved with itself, so re-measuring the
    # baseline's own entry first would only delay the variant's figures.
    settings = dataclasses.replace(quick, **CALM)
    cache = Cache(tmp_path)
    preempted_on_every_run(monkeypatch)
    base = evaluate(cnn, settings=settings, cache=cache)
    assert base.noisy
    never_preempted(monkeypatch)
    timed = []
    real = measure.measure_latency_interleaved
    monkeypatch.setattr(
        measure,
        "measure_latency_interleaved",
        lambda paths, *a, **k: timed.append(len(paths)) or real(paths, *a, **k),
    )
    evaluate(cnn, Recipe.of(PruneConfig(sparsity=0.25)), settings=settings, cache=cache)
    assert timed == [2]  # the variant with its baseline; the baseline alone: not again
    assert cache.get(base.key).noisy  # still to be re-measured when it is asked for
    evaluate(cnn, settings=settings, cache=cache)
    assert timed == [2, 1] and not cache.get(base.key).noisy


def test_a_wide_spread_over_rounds_makes_a_timing_noisy():
    from workbench.measure.runtime import InterleavedTiming
    from workbench.pipeline import MeasureSettings, _noise_check
    from workbench.results import LatencyStats, SpeedComparison

    settings = MeasureSettings(rounds=5, max_spread=0.25, max_preempted=0.1)
    lat = LatencyStats(1, 1, 1, 1, 1, 1, 50, 3, 1, rounds=5, p50_low=0.9, p50_high=1.1)
    timing = InterleavedTiming((lat, lat), ((1.0,) * 5, (2.0,) * 5), preempted_share=0.0)

    def speed(variant_p50s):
        return SpeedComparison.from_rounds("baseline", "baseline", variant_p50s, [2.0] * 5)

    steady = _noise_check(timing, (speed([1.0, 1.0, 1.05, 0.95, 1.0]),), settings)
    assert not steady.noisy and steady.reasons == () and steady.spread < 0.25
    wide = _noise_check(timing, (speed([1.0, 0.6, 1.6, 0.7, 1.4]),), settings)
    assert wide.noisy and wide.spread > 0.25
    assert wide.reasons[0].startswith("the middle half of the speed-up's rounds spans")
    # The baseline alone: its own p50s over the rounds (0.9-1.1 ms around 1 ms: 20%).
    assert not _noise_check(timing, (), settings).noisy
    assert _noise_check(timing, (), dataclasses.replace(settings, max_spread=0.1)).noisy
