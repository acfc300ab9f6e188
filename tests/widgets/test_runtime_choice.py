"""The runtime choice in the app: the dropdown offers every registered runtime, choosing
one re-measures the current recipe in it (the card says which), what a runtime cannot
do is explained in the engine's words, the sweep spans runtimes and the chart tells
them apart.

The runtimes besides ONNX Runtime are test doubles (tests/conftest.py's
``fake_runtimes``): ONNX Runtime under another name, and one without quantization.
"""

from __future__ import annotations

import pytest

from widgets import Workbench
from widgets.runtime_panel import RuntimePanel
from widgets.sweep_panel import SweepPanel
from widgets.tradeoff_chart import TradeoffChart
from workbench import Cache, MeasureSettings, QuantizeConfig, Recipe
from workbench.errors import WorkbenchError
from workbench.pipeline import check_applicable
from workbench.study import Study

FAST = MeasureSettings(warmup=3, min_runs=30, min_seconds=0.05)
INT8 = Recipe.of(None, QuantizeConfig(scheme="int8"))


def test_the_panel_offers_every_registered_runtime_and_explains_refusals(cnn, fake_runtimes):
    twin, float_only = fake_runtimes
    panel = RuntimePanel()
    assert panel.runtime == "onnxruntime" and {"onnxruntime", twin, float_only} <= set(
        panel.options
    )
    panel.model, panel.recipe = cnn, INT8
    # The reason is the engine's own, word for word.
    with pytest.raises(WorkbenchError) as refused:
        check_applicable(cnn, INT8, float_only)
    assert panel.refusals == {float_only: str(refused.value)}
    labels = dict((v, label) for label, v in panel.runtime_w.options)
    assert "cannot measure this recipe" in labels[float_only] and labels[twin] == twin
    assert panel.scheme_refusals == {}  # ONNX Runtime quantizes in every scheme
    panel.runtime_w.value = float_only
    assert panel.runtime == float_only
    note = panel._note_w.value
    assert f"{float_only} cannot measure this recipe" in note
    assert set(panel.scheme_refusals) == {"dynamic", "int8", "fp16"}
    assert "Not available in" in note and "int8" in note
    panel.recipe = Recipe()  # the baseline: every runtime can
    assert panel.refusals == {} and "cannot measure this recipe" not in panel._note_w.value
    with pytest.raises(Exception, match="unknown runtime"):
        panel.runtime = "no-such-runtime"


@pytest.mark.slow
def test_choosing_a_runtime_remeasures_the_current_recipe_in_it(fake_runtimes, tmp_path_factory):
    twin, float_only = fake_runtimes
    cache = Cache(tmp_path_factory.getbasetemp() / "digits-cnn-cache")
    app = Workbench("digits-cnn", cache=cache, settings=FAST)
    assert app.wait_idle(120)
    assert app.runtime == "onnxruntime" and app.runtime_panel.runtime_w.value == "onnxruntime"
    assert app.sweep.runtimes_w.value == ("onnxruntime",)
    assert "measured in <b>onnxruntime</b>" in app.card.value
    app.quantization.scheme_w.value = "int8"
    assert app.wait_idle(120) and app.error == ""
    in_ort = app.current
    assert in_ort.recipe == INT8 and in_ort.runtime == "onnxruntime"

    app.runtime_panel.runtime_w.value = twin  # the user's choice in the dropdown
    assert app.runtime == twin and app.settings.runtime == twin
    assert app.exporter.settings.runtime == twin and app.sweep.runtimes == (twin,)
    assert app.wait_idle(120) and app.error == ""
    assert app.current.recipe == INT8 and app.current.runtime == twin
    assert app.current.key != in_ort.key
    assert f"measured in <b>{twin}</b>" in app.card.value
    assert "vs baseline" in app.card.value and app.baseline.runtime == twin
    # Both runtimes' points stay on the chart, told apart by shape.
    assert {(r.recipe, r.runtime) for r in app.study.results} >= {
        (INT8, "onnxruntime"),
        (INT8, twin),
        (Recipe(), "onnxruntime"),
        (Recipe(), twin),
    }
    spec = app.chart.jchart.spec
    assert spec["layer"][1]["encoding"]["shape"]["field"] == "runtime"
    # The variants table says which runtime measured each row; A/B name it too.
    assert {r["runtime"] for r in app.variants.rows} == {"onnxruntime", twin}
    assert "runtime</th>" in app.variants._table_w.value
    assert f"{INT8.name} ({twin})" in [label for label, _ in app.variants.a_w.options]

    # A runtime that cannot apply the recipe: its reason at once, nothing measured.
    before = len(app.study.results)
    app.runtime_panel.runtime_w.value = float_only
    assert not app.busy and "cannot be measured in " + float_only in app.error
    assert "no " + float_only + " implementation" in app.card.value
    assert len(app.study.results) == before

    # An unknown name changes nothing.
    with pytest.raises(Exception, match="unknown runtime 'nope'"):
        app.runtime = "nope"
    assert app.runtime == app.runtime_panel.runtime == app.settings.runtime == float_only

    # Clicking a point of another runtime shows it in its own runtime.
    app.chart.jchart._vl_selections = {
        "pick": {"value": {"vlPoint": {"or": [{"key": in_ort.key}]}}, "store": []}
    }
    assert app.runtime == "onnxruntime" and app.current_key == in_ort.key and not app.busy
    assert app.error == ""

    # The chart can draw a frontier per runtime.
    app.chart.per_runtime_w.value = True
    spec = app.chart.jchart.spec
    assert spec["layer"][0]["encoding"]["detail"]["field"] == "runtime"


@pytest.mark.slow
def test_the_sweep_panel_sweeps_over_several_runtimes(cnn, fake_runtimes, tmp_path_factory):
    twin, _ = fake_runtimes
    cache = Cache(tmp_path_factory.getbasetemp() / "digits-cnn-cache")
    study = Study(cnn.name)
    panel = SweepPanel(study, cnn, cache=cache, settings=FAST)
    assert twin in panel.runtimes_w.options
    panel.sparsities, panel.schemes = (), ("int8",)
    panel.runtimes_w.value = ("onnxruntime", twin)
    assert panel.runtimes == ("onnxruntime", twin)
    assert "in each of 2 runtimes" in panel.count_w.value
    assert panel.run() and panel.wait(180)
    assert panel.error == "" and panel.done == panel.total == 4
    assert sorted((r.recipe.name, r.runtime) for r in study.results) == sorted(
        (recipe.name, rt) for recipe in (Recipe(), INT8) for rt in ("onnxruntime", twin)
    )
    chart = TradeoffChart(study)
    assert chart.jchart.spec["layer"][1]["encoding"]["shape"]["field"] == "runtime"
