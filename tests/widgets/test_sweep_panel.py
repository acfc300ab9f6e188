"""SweepPanel: a grid measured on a worker thread, points arriving one by one, Cancel."""

from __future__ import annotations

import pytest

from widgets import SweepPanel
from workbench import Cache, MeasureSettings, PruneConfig, QuantizeConfig, Recipe, load_model
from workbench.study import Study

# The same quick settings and cache folder as the other digits-cnn tests: shared hits.
FAST = MeasureSettings(warmup=3, min_runs=30, min_seconds=0.05)


@pytest.fixture(scope="module")
def model():
    return load_model("digits-cnn")


@pytest.fixture
def shared_cache(tmp_path_factory) -> Cache:
    return Cache(tmp_path_factory.getbasetemp() / "digits-cnn-cache")


def test_grid_follows_the_controls():
    panel = SweepPanel()
    panel.method_w.value = "structured"
    panel.sparsities_w.value = (0.25, 0.5)
    panel.schemes_w.value = ("none", "int8")
    recipes = panel.recipes()
    assert len(recipes) == 6 and recipes[0] == Recipe()
    assert (
        Recipe.of(PruneConfig(method="structured", sparsity=0.5), QuantizeConfig(scheme="int8"))
        in recipes
    )
    assert "6 variants" in panel.count_w.value
    assert panel.run() is False  # no model yet
    assert "no model to sweep" in panel.error


@pytest.mark.slow
def test_sweep_runs_in_the_background_and_fills_the_shared_study(model, shared_cache):
    study = Study(model.name)
    panel = SweepPanel(study, model, cache=shared_cache, settings=FAST)
    panel.sparsities = (0.5,)
    panel.schemes = ("none",)
    arrived = []
    panel.observe(lambda c: arrived.append(c["new"].recipe.name), names="last_result")
    assert panel.run() is True
    assert panel.running and panel.run_w.disabled and not panel.cancel_w.disabled
    assert panel.wait(120)
    assert arrived == ["baseline", "prune-unstructured-0.5"]
    assert [r.recipe.name for r in study.results] == arrived
    assert (panel.done, panel.total) == (2, 2)
    assert panel.progress_w.value == 2 and panel.progress_label_w.value == "2 of 2"
    assert not panel.running and not panel.run_w.disabled
    assert panel.status == "done: 2 variants"


@pytest.mark.slow
def test_cancel_stops_after_the_variant_in_progress(model, tmp_path):
    study = Study(model.name)
    panel = SweepPanel(study, model, cache=Cache(tmp_path), settings=FAST)  # nothing cached
    panel.sparsities = (0.3, 0.6)
    panel.schemes = ("none",)
    panel.run()
    panel.cancel_w.click()
    assert panel.wait(120)
    assert panel.done < panel.total == 3
    assert len(study.results) == panel.done
    assert panel.status == f"cancelled after {panel.done} of 3 variants"


def test_a_failed_variant_is_shown_and_the_rest_measured(model, shared_cache, monkeypatch):
    from workbench import pipeline

    real = pipeline.TORCH_STEPS[PruneConfig]

    def prune_or_fail(module, config, m):
        if config.sparsity == 0.6:
            raise RuntimeError("cannot prune this graph")
        return real(module, config, m)

    monkeypatch.setitem(pipeline.TORCH_STEPS, PruneConfig, prune_or_fail)
    study = Study(model.name)
    panel = SweepPanel(study, model, cache=shared_cache, settings=FAST)
    panel.sparsities = (0.5, 0.6)
    panel.schemes = ("none",)
    assert panel.run() is True and panel.wait(120)
    assert [r.recipe.name for r in study.results] == ["baseline", "prune-unstructured-0.5"]
    assert [f["recipe_name"] for f in study.failures] == ["prune-unstructured-0.6"]
    assert "1 variant(s) failed: prune-unstructured-0.6: RuntimeError" in panel.error
