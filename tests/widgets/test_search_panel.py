"""SearchPanel: controls to a search request, bad input shown, a run in the background."""

from __future__ import annotations

import pytest

from tests.conftest import QUICK
from widgets import SearchPanel
from workbench import Cache, load_model
from workbench.study import Study


def test_the_request_follows_the_controls_and_bad_input_is_shown():
    panel = SearchPanel()
    panel.floor_kind_w.value = "absolute"
    panel.floor_value_w.value = 97.0
    panel.target_w.value = "macs"
    panel.max_candidates_w.value = 5
    panel.students_w.value = False
    assert panel.request() == {
        "accuracy_floor": 97.0,
        "target": "macs",
        "max_candidates": 5,
        "recovery": "finetune",
        "students": False,
    }
    assert panel.run() is False and "no model to search" in panel.error
    panel.model = object()  # never reached: the floor is refused first
    panel.floor_value_w.value = 0.5
    assert panel.run() is False and "looks like a fraction" in panel.error
    assert "looks like a fraction" in panel._status_w.value and not panel.running


@pytest.mark.slow
def test_a_search_runs_in_the_background_and_fills_the_shared_study(tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("search-panel-cache"))
    model = load_model("digits-cnn")
    study = Study(model.name)
    panel = SearchPanel(study, model, cache=cache, settings=QUICK)
    panel.max_candidates = 1  # the baseline and int8: no pruning, no profile
    steps = []
    panel.observe(lambda c: steps.append(c["new"].recipe.name), names="last_step")
    assert panel.run() is True
    assert panel.wait(300)
    assert panel.error == ""
    assert steps == ["baseline", "int8-minmax-pc"]
    assert [r.recipe.name for r in study.results] == steps
    assert panel.result is not None and panel.result.chosen_recipe.name == "int8-minmax-pc"
    assert "accepted" in panel.path_w.value and "★" in panel.path_w.value
