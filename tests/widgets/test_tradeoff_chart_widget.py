"""TradeoffChart: redraws on the JupyterChart, axis choice, and a click read back as a key."""

from __future__ import annotations

from pathlib import Path

import altair as alt

from widgets import TradeoffChart
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.results import LatencyStats, MemoryStats, Metrics, Result
from workbench.study import Study


def result(recipe: Recipe, accuracy: float, p50: float, size: int, key: str) -> Result:
    metrics = Metrics(
        accuracy=accuracy,
        agreement=accuracy,
        agreement_basis="540 test images",
        size_bytes=size,
        compressed_bytes=size // 2,
        params=1000,
        nonzero_params=1000,
        macs=10_000,
        latency=LatencyStats(p50, p50, p50, p50, p50, p50, n=50, warmup=5, threads=1),
        memory=MemoryStats(peak_bytes=1_000_000, process_peak_bytes=2, baseline_bytes=1),
    )
    return Result("m", recipe, Path("x.onnx"), metrics, (), key)


def make_study() -> Study:
    study = Study("m")
    study.add(result(Recipe(), 0.97, 0.30, 120_000, "kb"))
    study.add(result(Recipe.of(quantize=QuantizeConfig(scheme="int8")), 0.96, 0.20, 30_000, "kq"))
    return study


def rows(chart: TradeoffChart) -> list[dict]:
    spec = chart.jchart.spec
    return spec["datasets"][spec["data"]["name"]]


def test_chart_uses_jupyterchart_offline_and_draws_the_study():
    chart = TradeoffChart(make_study(), current_key="kq")
    assert isinstance(chart.jchart, alt.JupyterChart)
    assert alt.JupyterChart._is_offline  # Vega served from the kernel, not a CDN
    assert {r["key"] for r in rows(chart)} == {"kb", "kq"}
    assert [r["is_current"] for r in rows(chart) if r["key"] == "kq"] == [True]


def test_chart_redraws_on_refresh_axis_and_current_changes():
    study = make_study()
    chart = TradeoffChart(study)
    study.add(
        result(Recipe.of(PruneConfig(method="structured", sparsity=0.5)), 0.95, 0.15, 60_000, "kp")
    )
    assert len(rows(chart)) == 2  # the study is mutable: the owner calls refresh()
    chart.refresh()
    assert len(rows(chart)) == 3

    chart.x_w.value = "size_bytes"  # as a user picks the axis
    assert chart.x == "size_bytes"
    assert chart.jchart.spec["layer"][1]["encoding"]["x"]["field"] == "size_bytes"
    chart.y = "agreement"
    assert chart.jchart.spec["layer"][1]["encoding"]["y"]["field"] == "agreement"

    chart.current_key = "kp"
    assert [r["key"] for r in rows(chart) if r["is_current"]] == ["kp"]


def test_clicking_a_point_sets_picked_key():
    chart = TradeoffChart(make_study())
    # What the browser sends when a point of the "pick" selection is clicked.
    chart.jchart._vl_selections = {
        "pick": {"value": {"vlPoint": {"or": [{"key": "kq"}]}}, "store": [{"values": ["kq"]}]}
    }
    assert chart.picked_key == "kq"
    # A double click empties the selection: the pick clears, so a later click on the
    # same point counts again.
    chart.jchart._vl_selections = {"pick": {"value": None, "store": []}}
    assert chart.picked_key == ""


def test_the_chart_offers_no_online_editor():
    """Vega-Embed's "Open in Vega Editor" posts the spec to a public site: not offered."""
    from widgets import TradeoffChart

    actions = TradeoffChart().jchart.embed_options["actions"]
    assert actions["editor"] is False and actions["export"] is True


def test_the_chart_draws_the_chosen_device(cnn, session_cache, quick):
    from workbench.pipeline import evaluate

    base = evaluate(cnn, Recipe(), settings=quick, cache=session_cache)
    chart = TradeoffChart(Study(cnn.name, [base]), cache=session_cache)
    assert "fits" not in rows(chart)[0]  # no device: nothing about one
    chart.device = "raspberry-pi-4"
    (row,) = rows(chart)
    assert row["fits"] and row["fit_text"].startswith("fits raspberry-pi-4: ")
    # Latency there is the roofline estimate, labelled, not what was measured here.
    assert row["latency_p50_ms"] != base.metrics.latency.p50
    assert "estimate" in chart.jchart.spec["layer"][1]["encoding"]["x"]["title"]
    chart.device = "cortex-m4"
    chart.x = "peak_memory_bytes"
    (row,) = rows(chart)
    assert not row["fits"] and "decided by runtime" in row["fit_text"]
    spec = chart.jchart.spec
    (rule,) = [layer for layer in spec["layer"] if layer["mark"].get("type") == "rule"]
    labels = [t["calculate"] for t in rule["transform"] if t.get("as") == "budget_label"]
    assert labels and "cortex-m4 memory budget" in labels[0]
    assert chart.device_error == ""
    chart.device = ""
    assert "fits" not in rows(chart)[0]
