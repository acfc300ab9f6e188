"""Workbench: a new variant's first figures shown before its latency; Re-measure."""

from __future__ import annotations

import pytest

from widgets import Workbench
from workbench import Cache, MeasureSettings, pipeline

FAST = MeasureSettings(warmup=3, min_runs=30, min_seconds=0.05, profile=False)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Workbench:
    wb = Workbench("digits-cnn", cache=Cache(tmp_path_factory.mktemp("cache")), settings=FAST)
    assert wb.wait_idle(120)
    return wb


def test_a_new_variant_shows_its_first_figures_before_the_latency(app):
    shown = []
    app.card.observe(
        lambda c: c["new"] is not None and shown.append((c["new"].stage, app.card.value)),
        names="progress",
    )
    app.pruning.sparsity_w.value = 0.55
    app.pruning.method_w.value = "structured"
    assert app.wait_idle(120) and app.error == ""
    assert [stage for stage, _ in shown] == ["accuracy", "latency"]
    first = shown[0][1]
    assert "prune-structured-0.55" in first and "pending…" in first
    assert "pending: compressed size, latency" in first
    assert app.card.progress is None and "pending" not in app.card.value
    assert 0 < app.first_figures_seconds <= app.last_update_seconds
    assert "speed:" in app.card.value and "rounds" in app.card.value


def test_remeasure_times_the_shown_variant_again_and_rebuilds_nothing(app, monkeypatch):
    app.pruning.method_w.value = "unstructured"
    app.pruning.sparsity_w.value = 0.5
    assert app.wait_idle(120) and app.error == ""
    before = app.current
    monkeypatch.setattr(
        pipeline, "_build_artifact", lambda *a, **k: pytest.fail("Re-measure rebuilt a variant")
    )
    app.card.remeasure_button.click()
    assert app.busy and "re-measuring" in app.card.value  # off the UI thread
    assert app.wait_idle(120) and app.error == ""
    assert app.current.key == before.key and app.current.recipe == before.recipe
    assert app.current.metrics.latency != before.metrics.latency
    assert app.current.metrics.accuracy == before.metrics.accuracy
    assert app.cache.get(before.key).metrics == app.current.metrics
    assert "measured" in app.status
