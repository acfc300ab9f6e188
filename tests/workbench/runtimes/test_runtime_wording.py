"""Quantization worded per runtime: LiteRT and TFLite Micro name the TFLite converter's
schemes in its terms ("int8-full", "int8-dynamic-range"), not ONNX Runtime's calibrate
methods ("int8-minmax-pc"); the cache keys, which hash the recipe's settings, stay."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.pipeline import MeasureSettings, variant_key
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.results import Result
from workbench.runtimes import get_runtime, recipe_name

INT8 = Recipe.of(None, QuantizeConfig(scheme="int8"))
PRUNED_INT8 = Recipe.of(PruneConfig(sparsity=0.5), QuantizeConfig(scheme="int8"))


@pytest.mark.parametrize(
    "recipe, onnxruntime, litert, tflm",
    [
        (Recipe(), "baseline", "baseline", "baseline"),
        (INT8, "int8-minmax-pc", "int8-full", "int8-full-ioint8"),
        (
            PRUNED_INT8,
            "prune-unstructured-0.5+int8-minmax-pc",
            "prune-unstructured-0.5+int8-full",
            "prune-unstructured-0.5+int8-full-ioint8",
        ),
        (
            Recipe.of(None, QuantizeConfig(scheme="dynamic")),
            "int8-dynamic-pc",
            "int8-dynamic-range",
            None,
        ),
        (Recipe.of(None, QuantizeConfig(scheme="fp16")), "fp16", "fp16", None),
        (
            Recipe.of(None, QuantizeConfig(io_type="int8", calibration_samples=256)),
            "int8-minmax-pc-n256-ioint8",
            "int8-full-n256-ioint8",
            "int8-full-n256-ioint8",
        ),
    ],
)
def test_each_runtime_names_its_quantization(recipe, onnxruntime, litert, tflm):
    assert recipe_name(recipe, "onnxruntime") == recipe.name == onnxruntime
    assert recipe_name(recipe, "litert") == litert
    if tflm is not None:
        assert recipe_name(recipe, "tflite-micro") == tflm
    assert recipe_name(recipe, "no-such-runtime") == recipe.name  # e.g. a study from elsewhere


def test_a_result_and_its_study_row_use_the_runtime_s_words(tmp_path):
    from workbench.results import MemoryStats, Metrics
    from workbench.study import Study

    metrics = Metrics(0.98, 0.99, "540 test images", 1, 1, 1, 1, 1, None, MemoryStats(1, 1, 0))
    ort = Result("m", PRUNED_INT8, tmp_path / "model.onnx", metrics, key="a")
    tfl = dataclasses.replace(ort, artifact=tmp_path / "model.tflite", key="b", runtime="litert")
    assert (ort.name, tfl.name) == (
        "prune-unstructured-0.5+int8-minmax-pc",
        "prune-unstructured-0.5+int8-full",
    )
    rows = Study("m", [ort, tfl]).to_dataframe()
    assert list(rows["recipe"]) == [ort.name, tfl.name]
    assert tfl.to_dict()["recipe_name"] == tfl.name


def test_the_wording_leaves_onnx_runtime_cache_keys_as_they_were(cnn):
    # The key of the int8 variant of digits-cnn in ONNX Runtime hashes the recipe's
    # settings, never its name: renaming LiteRT's steps cannot move it.
    settings = MeasureSettings()
    key = variant_key(cnn, INT8, settings)
    import workbench.runtimes.litert.runtime as litert_runtime

    saved = litert_runtime._SCHEME_LABELS["int8"]
    litert_runtime._SCHEME_LABELS["int8"] = "something-else"
    try:
        assert variant_key(cnn, INT8, settings) == key
    finally:
        litert_runtime._SCHEME_LABELS["int8"] = saved
    assert "name" not in str(INT8.to_dict())


def test_the_quantization_panel_words_and_enables_per_runtime():
    from widgets.compression_panels import QuantizationPanel

    panel = QuantizationPanel()
    panel.scheme = "int8"
    assert panel.label == "int8-minmax-pc" and not panel.calibration_w.disabled
    assert "QDQ" in panel.scheme_w.tooltips[2] and "ONNX Runtime" in panel._title_w.value
    panel.runtime = "litert"
    assert panel.label == "int8-full" and "int8-full" in panel._label_w.value
    assert "TFLite converter" in panel.scheme_w.tooltips[2] and "LiteRT" in panel._title_w.value
    # Settings the converter does not honour are off; the ones it does stay on.
    assert panel.calibration_w.disabled
    assert panel.activation_w.disabled and panel.overflow_w.disabled
    assert not panel.samples_w.disabled and not panel.per_channel_w.disabled
    panel.per_channel = False  # the converter's per-tensor weight scales
    assert panel.label == "int8-full-pt"
    panel.per_channel = True
    # One it refuses but the user set stays on, so it can be put back.
    panel.runtime = "onnxruntime"
    panel.calibration = "entropy"
    panel.runtime = "litert"
    assert not panel.calibration_w.disabled
    panel.calibration = "minmax"
    panel.scheme = "dynamic"
    assert panel.label == "int8-dynamic-range"


def test_litert_s_slower_than_float_warning_names_its_own_scheme():
    from workbench.results import MemoryStats, Metrics, SpeedComparison

    slower = SpeedComparison.from_rounds("float", "baseline", [2.0] * 5, [1.0] * 5)
    metrics = Metrics(
        0.98, 0.99, "540 test images", 1, 1, 1, 1, 1, None, MemoryStats(1, 1, 0),
        comparisons=(slower,),
    )  # fmt: skip
    warnings = get_runtime("litert").honesty_warnings(INT8, metrics, None, None, 100.0)
    assert any("This int8-full variant measured slower" in w for w in warnings), warnings
