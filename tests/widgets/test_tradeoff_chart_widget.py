"""TradeoffChart: redraws on the JupyterChart, axis choice, and a click read back as a key."""

from __future__ import annotations

import threading
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


# What the browser sends back after drawing a spec (altair's JupyterChart front end).
BROWSER_REPLY = {"local_tz": "UTC", "_vl_selections": {"pick": {"value": {}, "store": []}}}
PICK_KQ = {"pick": {"value": {"vlPoint": {"or": [{"key": "kq"}]}}, "store": [{"values": ["kq"]}]}}


def _pause_browser_update(chart: TradeoffChart, browser: list[threading.Thread]):
    """Make the browser's next update stop halfway (inside its held notifications) until
    the returned event is set; the returned ``paused`` event says it got there."""
    paused, release = threading.Event(), threading.Event()
    real = chart.jchart._trait_from_json

    def from_json(value, widget):
        if threading.current_thread() in browser:
            paused.set()
            release.wait(10)
        return real(value, widget)

    chart.jchart._trait_from_json = from_json
    return paused, release


def test_a_redraw_and_the_browsers_update_take_turns():
    """The worker's redraw must not run inside the browser's update of the same widget.

    ipywidgets' sync bookkeeping and traitlets' held notifications are per-widget state
    without a lock: interleaved, the redraw is swallowed into the other thread's held
    notifications (and drawn later, from there) or their sync state races. So a redraw
    waits for the update in progress, and returns having drawn the study as it is.
    """
    study = make_study()
    chart = TradeoffChart(study)
    browser: list[threading.Thread] = []
    paused, release = _pause_browser_update(chart, browser)
    browser.append(threading.Thread(target=chart.jchart.set_state, args=(BROWSER_REPLY,)))
    browser[0].start()
    try:
        assert paused.wait(10)
        drawn: list[int] = []

        def redraw() -> None:  # as the measuring worker does
            study.add(result(Recipe.of(PruneConfig(sparsity=0.5)), 0.95, 0.15, 60_000, "kp"))
            chart.refresh()
            drawn.append(len(rows(chart)))

        worker = threading.Thread(target=redraw)
        worker.start()
        worker.join(1.0)
        # The redraw waits while the browser's update is halfway...
        assert worker.is_alive() and not drawn, f"the redraw ran inside the update: {drawn}"
    finally:
        release.set()
        browser[0].join(10)
    worker.join(10)
    assert drawn == [3]  # ...then draws every point, on its own thread
    assert len(rows(chart)) == 3


def test_a_pick_from_the_browser_during_a_redraw_neither_blocks_nor_is_lost():
    """The app loads a picked variant under its display lock, which the worker holds
    while it redraws: the pick's observers run only once the chart's lock is free (a
    guard for the lock above: holding it while they ran would deadlock here)."""
    chart = TradeoffChart(make_study())
    display_lock = threading.RLock()  # the app's lock, held by the redrawing worker
    seen: list[str] = []

    def on_pick(change: dict) -> None:  # as Workbench._on_pick -> request() does
        with display_lock:
            seen.append(change["new"])

    chart.observe(on_pick, names="picked_key")
    browser: list[threading.Thread] = []
    paused, release = _pause_browser_update(chart, browser)
    reply = {"_vl_selections": PICK_KQ}
    browser.append(threading.Thread(target=chart.jchart.set_state, args=(reply,)))
    browser[0].start()
    assert paused.wait(10)

    def worker() -> None:
        with display_lock:
            release.set()  # the browser's update goes on while this thread redraws
            chart.refresh()

    redrawing = threading.Thread(target=worker)
    redrawing.start()
    redrawing.join(10)
    browser[0].join(10)
    assert not redrawing.is_alive() and not browser[0].is_alive(), "deadlock"
    assert "kq" in seen  # delivered (the redraw then empties the selection, as always)
