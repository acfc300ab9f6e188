"""Chart builders, read through chart.to_dict() (the Vega-Lite spec a browser draws)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from workbench import charts
from workbench.errors import WorkbenchError

KEYS = ["k-base", "k-prune", "k-int8", "k-both", "k-bad"]


def study_frame() -> pd.DataFrame:
    """A Study.to_dataframe()-shaped table: one baseline, three frontier points, one dominated."""
    return pd.DataFrame(
        {
            "recipe": [
                "baseline",
                "prune-structured-0.5",
                "int8-minmax-pc",
                "prune-structured-0.5+int8-minmax-pc",
                "prune-unstructured-0.9",
            ],
            "model": ["digits-cnn"] * 5,
            "runtime": ["onnxruntime"] * 5,
            "prune_method": [None, "structured", None, "structured", "unstructured"],
            "sparsity": [None, 0.5, None, 0.5, 0.9],
            "quant_scheme": [None, None, "int8", "int8", None],
            "finetune_epochs": [None] * 5,
            "teacher": [None] * 5,
            "accuracy": [0.97, 0.95, 0.965, 0.93, 0.60],
            "agreement": [1.0, 0.97, 0.99, 0.95, 0.61],
            "latency_p50_ms": [0.20, 0.12, 0.15, 0.08, 0.21],
            "latency_p90_ms": [0.22, 0.13, 0.16, 0.09, 0.23],
            "latency_p99_ms": [0.30, 0.20, 0.20, 0.10, 0.30],
            "size_bytes": [120_000, 60_000, 32_000, 17_000, 120_000],
            "compressed_bytes": [110_000, 55_000, 25_000, 14_000, 30_000],
            "peak_memory_bytes": [2_000_000] * 5,
            "macs": [1_500_000, 700_000, 1_500_000, 700_000, 1_500_000],
            "params": [30_000, 15_000, 30_000, 15_000, 30_000],
            "nonzero_params": [30_000, 15_000, 30_000, 15_000, 3_000],
            "warnings": [0, 0, 1, 1, 2],
            "is_baseline": [True, False, False, False, False],
            "key": KEYS,
            "artifact": ["a.onnx"] * 5,
        }
    )


def layer_data(spec: dict, index: int) -> list[dict]:
    """The rows layer ``index`` draws, after its filter (evaluated here in Python)."""
    rows = spec["datasets"][spec["data"]["name"]]
    layer = spec["layer"][index]
    for t in layer.get("transform", []):
        field = t["filter"].removeprefix("datum.")
        rows = [r for r in rows if r[field]]
    return rows


def test_tradeoff_chart_has_frontier_points_baseline_and_current_layers():
    spec = charts.tradeoff_chart(study_frame(), current_key="k-int8").to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["line", "point", "point", "text", "point", "text"]
    # Frontier over (accuracy max, latency min): the dominated 0.9-unstructured point is off it.
    frontier = {r["recipe"] for r in layer_data(spec, 0)}
    assert frontier == {
        "baseline",
        "prune-structured-0.5",
        "int8-minmax-pc",
        "prune-structured-0.5+int8-minmax-pc",
    }
    assert spec["layer"][0]["encoding"]["order"]["field"] == "latency_p50_ms"
    assert spec["layer"][0]["mark"]["point"]["filled"] is False  # rings on frontier points
    # Baseline: a diamond, labelled, drawn for the baseline row only.
    assert spec["layer"][2]["mark"]["shape"] == "diamond"
    assert [r["key"] for r in layer_data(spec, 2)] == ["k-base"]
    assert spec["layer"][3]["mark"]["text"] == "baseline"
    # Current: an orange ring around exactly the current key.
    assert [r["key"] for r in layer_data(spec, 4)] == ["k-int8"]
    assert spec["layer"][4]["mark"]["filled"] is False
    assert spec["layer"][4]["mark"]["color"] == charts.CURRENT_COLOR


def test_tradeoff_chart_pick_selection_is_a_click_on_the_key_field():
    spec = charts.tradeoff_chart(study_frame()).to_dict()
    params = {p["name"]: p for p in spec["params"]}
    pick = params[charts.PICK_PARAM]
    assert pick["select"]["type"] == "point"
    assert pick["select"]["fields"] == ["key"]
    assert pick["select"]["on"] == "click"
    # The selection is bound to the layer of all points.
    assert pick["views"] == [spec["layer"][1]["name"]]


def test_tradeoff_chart_tooltips_are_formatted_with_units():
    spec = charts.tradeoff_chart(study_frame()).to_dict()
    tooltip = spec["layer"][1]["encoding"]["tooltip"]
    titles = [t["title"] for t in tooltip]
    assert titles[0] == "recipe"
    assert {"accuracy", "latency p50", "size", "compressed size", "peak memory", "MACs"} <= set(
        titles
    )
    rows = {r["key"]: r for r in spec["datasets"][spec["data"]["name"]]}
    base = rows["k-base"]
    assert base["accuracy_text"] == "97.0%"
    assert base["latency_p50_ms_text"] == "0.2 ms"
    assert base["size_bytes_text"] == "120 kB"
    assert base["macs_text"] == "1.5M"
    assert rows["k-bad"]["warnings_text"] == "2"
    assert (rows["k-bad"]["frontier_text"], rows["k-int8"]["frontier_text"]) == ("no", "yes")
    assert rows["k-both"]["family"] == "pruned + quantized"
    assert rows["k-prune"]["family"] == "pruned"


@pytest.mark.parametrize(
    ("columns", "family"),
    [
        (
            {"prune_method": "structured", "sparsity": 0.5, "finetune_epochs": 3},
            "pruned + fine-tuned",
        ),
        ({"finetune_epochs": 3}, "fine-tuned"),
        ({"finetune_epochs": 3, "teacher": "digits-resnet18"}, "distilled"),
        ({"quant_scheme": "fp16"}, "quantized"),
        (
            {"prune_method": "unstructured", "finetune_epochs": 2, "quant_scheme": "int8"},
            "pruned + fine-tuned + quantized",
        ),
    ],
)
def test_the_variant_family_is_read_from_structured_columns_not_the_name(columns, family):
    """Issue 7: a pruned and fine-tuned variant was called "pruned + quantized", a
    fine-tune-only one "quantized", because the name string was parsed back."""
    row = {
        "recipe": "anything+at-all",
        "is_baseline": False,
        "prune_method": None,
        "sparsity": None,
        "quant_scheme": None,
        "finetune_epochs": None,
        "teacher": None,
        **columns,
    }
    assert charts.variant_family(row) == family
    df = study_frame().iloc[[0]].assign(**{k: [v] for k, v in row.items()})
    df["key"] = "k-x"
    df["is_baseline"] = False
    spec = charts.tradeoff_chart(df).to_dict()
    (drawn,) = spec["datasets"][spec["data"]["name"]]
    assert drawn["family"] == family
    points = spec["layer"][1]["encoding"]["color"]["scale"]
    assert points["domain"] == [family]


def test_tradeoff_chart_axes_carry_units_and_follow_the_chosen_columns():
    spec = charts.tradeoff_chart(study_frame(), x="compressed_bytes", y="agreement").to_dict()
    enc = spec["encoding"] if "encoding" in spec else spec["layer"][1]["encoding"]
    assert enc["x"]["field"] == "compressed_bytes"
    assert enc["x"]["title"] == "deflate-compressed size (bytes)"
    assert enc["y"]["field"] == "agreement"
    assert enc["y"]["axis"]["format"] == ".3~%"
    # The frontier now follows compressed size: int8 (0.99, 25 kB) dominates the
    # structured-pruned file (0.97, 55 kB), which was on the latency frontier.
    assert {r["recipe"] for r in layer_data(spec, 0)} == {
        "baseline",
        "int8-minmax-pc",
        "prune-structured-0.5+int8-minmax-pc",
    }


def test_tradeoff_chart_rejects_an_unknown_axis_and_copes_with_an_empty_study():
    with pytest.raises(WorkbenchError, match="not a measured figure"):
        charts.tradeoff_chart(study_frame(), x="recipe")
    spec = charts.tradeoff_chart(pd.DataFrame()).to_dict()
    assert json.dumps(spec)  # serialisable, no rows
    assert spec["datasets"][spec["data"]["name"]] == []


def test_default_y_falls_back_to_agreement_without_labels():
    df = study_frame()
    assert charts.default_y(df) == "accuracy"
    df["accuracy"] = None
    assert charts.default_y(df) == "agreement"


def test_sensitivity_chart_sorts_layers_by_drop():
    rows = [
        {"layer": "conv1", "accuracy": 0.96, "drop": 0.01, "sparsity": 0.5},
        {"layer": "fc", "accuracy": 0.90, "drop": 0.07, "sparsity": 0.5},
    ]
    spec = charts.sensitivity_chart(rows).to_dict()
    assert spec["mark"]["type"] == "bar"
    assert spec["encoding"]["y"]["sort"] == "-x"
    # layer_sensitivity gives fractions; the chart shows points.
    assert spec["encoding"]["x"]["field"] == "drop_points"
    values = next(iter(spec["datasets"].values()))
    assert [round(v["drop_points"], 9) for v in values] == [1.0, 7.0]
    assert "sparsity" in [t["field"] for t in spec["encoding"]["tooltip"]]
    with pytest.raises(WorkbenchError, match="'drop'"):
        charts.sensitivity_chart([{"layer": "a", "accuracy": 0.9}])


def test_operator_chart_shares_add_up():
    spec = charts.operator_chart({"Conv": 0.3, "Gemm": 0.1}).to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    assert {r["op"]: r["share"] for r in rows} == pytest.approx({"Conv": 0.75, "Gemm": 0.25})
    assert spec["encoding"]["x"]["title"] == "time per inference (ms)"


@pytest.mark.parametrize(
    ("fn", "value", "text"),
    [
        (charts.format_bytes, 999, "999 B"),
        (charts.format_bytes, 1_234_567, "1.23 MB"),
        (charts.format_bytes, None, "n/a"),
        (charts.format_ms, 0.12345, "0.123 ms"),
        (charts.format_ms, 12.34, "12.3 ms"),
        (charts.format_count, 1_234_567, "1.23M"),
        (charts.format_count, 512, "512"),
        (charts.format_percent, 0.9723, "97.2%"),
        (charts.format_percent, float("nan"), "n/a"),
    ],
)
def test_formatters(fn, value, text):
    assert fn(value) == text


def test_tradeoff_chart_axes_are_readable():
    """Rounded SI ticks, a padded range around one point, no 0.3-point accuracy stretch."""
    df = study_frame().iloc[:1].copy()
    df["size_bytes"], df["accuracy"] = 44_717_074, 0.9962
    spec = charts.tradeoff_chart(df, x="size_bytes", current_key="k-base").to_dict()
    enc = spec["layer"][1]["encoding"]
    assert enc["x"]["axis"]["format"] == ".3~s"  # 44.7M, not 44.717074M
    x0, x1 = enc["x"]["scale"]["domain"]
    assert x0 < 44_717_074 * 0.85 and x1 > 44_717_074 * 1.15  # a range, not one tick
    y0, y1 = enc["y"]["scale"]["domain"]
    assert y1 <= 1.0 and y1 - y0 >= 0.05 and y0 < 0.9962 < y1
    # Two close accuracies (99.25%, 99.6%) are drawn on at least a 5-point range too.
    assert charts.axis_domain([0.9925, 0.996], "accuracy")[0] <= 0.95
    lo, hi = charts.axis_domain([0.08, 0.21], "latency_p50_ms")
    assert lo < 0.08 and hi > 0.21 and lo >= 0


def test_tradeoff_chart_zooms_and_pans_on_its_scales():
    spec = charts.tradeoff_chart(study_frame()).to_dict()
    zoom = next(p for p in spec["params"] if p["name"] == charts.ZOOM_PARAM)
    assert zoom["select"] == "interval" or zoom["select"]["type"] == "interval"
    assert zoom["bind"] == "scales"


def _label_box(row, role, spec, width=520, height=340):
    enc = spec["layer"][1]["encoding"]
    (x0, x1), (y0, y1) = enc["x"]["scale"]["domain"], enc["y"]["scale"]["domain"]
    left = (row[f"{role}_label_x"] - x0) / (x1 - x0) * width
    bottom = height - (row[f"{role}_label_y"] - y0) / (y1 - y0) * height
    return left, bottom - 13, left + len(role) * 7.5, bottom


@pytest.mark.parametrize("current", KEYS)
def test_tradeoff_chart_labels_cover_no_point(current):
    spec = charts.tradeoff_chart(study_frame(), current_key=current).to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    enc = spec["layer"][1]["encoding"]
    (x0, x1), (y0, y1) = enc["x"]["scale"]["domain"], enc["y"]["scale"]["domain"]
    points = [
        ((r["latency_p50_ms"] - x0) / (x1 - x0) * 520, 340 - (r["accuracy"] - y0) / (y1 - y0) * 340)
        for r in rows
    ]
    boxes = []
    for role in ("baseline", "current"):
        labelled = [r for r in rows if r[f"is_{role}"]]
        assert len(labelled) == 1
        box = _label_box(labelled[0], role, spec)
        for px, py in points:  # no point (radius 12 px) under the label's box
            assert not (box[0] - 12 < px < box[2] + 12 and box[1] - 12 < py < box[3] + 12)
        boxes.append(box)
    a, b = boxes
    assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])  # nor each other


def test_charts_offer_no_online_editor():
    actions = charts.EMBED_OPTIONS["actions"]
    assert actions["editor"] is False and actions["export"] is True


def test_latency_axes_carry_error_bars_over_the_rounds_and_the_speedup_tooltip():
    df = study_frame()
    df["latency_p50_low_ms"] = [0.19, 0.11, 0.14, 0.07, 0.20]
    df["latency_p50_high_ms"] = [0.21, 0.13, 0.16, 0.09, 0.22]
    df["speedup"] = [None, 1.6, 1.3, 2.4, 0.95]
    df["speedup_low"] = [None, 1.5, 1.2, 2.2, 0.9]
    df["speedup_high"] = [None, 1.7, 1.4, 2.6, 1.0]
    spec = charts.tradeoff_chart(df).to_dict()
    bars = spec["layer"][-1]
    assert bars["mark"]["type"] == "rule"
    assert bars["encoding"]["x"]["field"] == "latency_p50_low_ms"
    assert bars["encoding"]["x2"]["field"] == "latency_p50_high_ms"
    rows = spec["datasets"][spec["data"]["name"]]
    assert [r["speedup_text"] for r in rows][:4] == [
        "n/a",
        "×1.60 (×1.50–1.70)",
        "×1.30 (×1.20–1.40)",
        "×2.40 (×2.20–2.60)",
    ]
    # Latency on the y axis: the bars are vertical.
    flipped = charts.tradeoff_chart(df, x="size_bytes", y="latency_p50_ms").to_dict()
    assert flipped["layer"][-1]["encoding"]["y2"]["field"] == "latency_p50_high_ms"
    # No latency axis, or no variant timed in rounds: no bars.
    for chart in (charts.tradeoff_chart(df, x="size_bytes"), charts.tradeoff_chart(study_frame())):
        assert all(layer["mark"]["type"] != "rule" for layer in chart.to_dict()["layer"])


def device_view(*, is_host=False, fits=None, bounds=None, budget=1_500_000.0):
    """A DeviceOverlay over study_frame() (the engine's output, made by hand here)."""
    from workbench.devices.view import BudgetLine, DeviceOverlay

    fits = fits if fits is not None else [True, True, True, False, True]
    bounds = bounds if bounds is not None else [1.0, 0.5, 0.6, 0.3, 1.1]
    table = pd.DataFrame(
        {
            "key": KEYS,
            "fits": fits,
            "fit_text": [
                "fits test-board: 40.0% headroom (decided by memory)"
                if f
                else "does not fit test-board: memory 2 MB > budget 1.5 MB (decided by memory)"
                for f in fits
            ],
            "decided_by": ["memory"] * 5,
            "latency_kind": ["estimate"] * 5,
            "latency_text": [f">= {b} ms (estimate: roofline lower bound)" for b in bounds],
            "latency_p50_ms": bounds,
            "latency_p90_ms": bounds,
            "latency_p99_ms": bounds,
        }
    ).set_index("key")
    lines = (
        BudgetLine("peak_memory_bytes", budget, "test-board memory budget 1.5 MB"),
        BudgetLine("size_bytes", 4e9, "test-board storage 4 GB"),
    )
    return DeviceOverlay("host" if is_host else "test-board", is_host, lines, table)


def test_on_another_device_the_latency_axis_is_its_estimate_never_this_machines():
    spec = charts.tradeoff_chart(study_frame(), device=device_view()).to_dict()
    rows = {r["key"]: r for r in spec["datasets"][spec["data"]["name"]]}
    # The device's roofline bounds are plotted, not the latencies measured here.
    assert [rows[k]["latency_p50_ms"] for k in KEYS] == [1.0, 0.5, 0.6, 0.3, 1.1]
    x_title = spec["layer"][1]["encoding"]["x"]["title"]
    assert "on test-board" in x_title and "estimate" in x_title
    titles = [t["title"] for t in spec["layer"][1]["encoding"]["tooltip"]]
    assert "latency p50 (this machine)" in titles and "latency on test-board" in titles
    assert rows["k-int8"]["device_latency_text"].endswith("(estimate: roofline lower bound)")
    # One title on the shared axis (Vega-Lite would join differing layer titles).
    assert {
        layer["encoding"]["x"]["title"]
        for layer in spec["layer"]
        if "x" in layer.get("encoding", {})
    } == {x_title}
    # On host the measured figures stay.
    spec = charts.tradeoff_chart(study_frame(), device=device_view(is_host=True)).to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    assert [r["latency_p50_ms"] for r in rows] == [0.20, 0.12, 0.15, 0.08, 0.21]
    assert spec["layer"][1]["encoding"]["x"]["title"] == charts.AXIS_TITLES["latency_p50_ms"]


def test_variants_that_do_not_fit_are_greyed_hollow_and_off_the_frontier():
    plain = charts.tradeoff_chart(study_frame()).to_dict()
    assert "k-both" in {r["key"] for r in layer_data(plain, 0)}  # on the frontier without a device
    spec = charts.tradeoff_chart(
        study_frame(), device=device_view(bounds=[0.20, 0.12, 0.15, 0.08, 0.21])
    ).to_dict()
    rows = {r["key"]: r for r in spec["datasets"][spec["data"]["name"]]}
    assert not rows["k-both"]["fits"] and not rows["k-both"]["on_frontier"]
    assert rows["k-both"]["frontier_text"] == "no: does not fit test-board"
    assert "decided by memory" in rows["k-both"]["fit_text"]
    assert {k for k, r in rows.items() if r["on_frontier"]} == {"k-base", "k-prune", "k-int8"}
    assert "within the test-board budget" in json.dumps(spec["title"])
    assert "greyed, dotted ring: does not fit test-board" in json.dumps(spec["title"])
    # The points layer greys what does not fit; a dashed hollow ring marks it too.
    color = spec["layer"][1]["encoding"]["color"]
    assert color["condition"]["test"] == "datum.fits" and color["value"] == charts.UNFIT_COLOR
    (ring,) = [
        layer for layer in spec["layer"] if layer.get("transform") == [{"filter": "!datum.fits"}]
    ]
    assert ring["mark"]["filled"] is False and ring["mark"]["strokeDash"]
    fit_tip = [t for t in ring["encoding"]["tooltip"] if t["field"] == "fit_text"]
    assert fit_tip and fit_tip[0]["title"] == "fit on test-board"


def budget_row(layer: dict) -> dict:
    """The one row a budget layer draws: its calculated fields (evaluated here)."""
    return {t["as"]: json.loads(t["calculate"]) for t in layer["transform"] if "calculate" in t}


def test_the_budget_line_is_drawn_on_a_size_axis_and_the_axis_reaches_it():
    spec = charts.tradeoff_chart(
        study_frame(), x="peak_memory_bytes", device=device_view()
    ).to_dict()
    assert "data" in spec  # one dataset shared by every layer
    rules = [layer for layer in spec["layer"] if layer["mark"].get("type") == "rule"]
    (rule,) = rules
    budget = budget_row(rule)
    assert budget["budget_value"] == 1_500_000.0
    assert budget["budget_label"] == "test-board memory budget 1.5 MB"
    assert rule["encoding"]["x"]["field"] == "budget_value"
    lo, hi = spec["layer"][1]["encoding"]["x"]["scale"]["domain"]
    assert lo <= 1_500_000 < 2_000_000 <= hi  # the line and every point in view
    (label,) = [
        layer
        for layer in spec["layer"]
        if layer["mark"].get("type") == "text"
        and layer["encoding"].get("text", {}).get("field") == "budget_label"
    ]
    assert budget_row(label) == budget
    # Storage far beyond every file: not drawn (it would squeeze the points), but said.
    spec = charts.tradeoff_chart(study_frame(), x="size_bytes", device=device_view()).to_dict()
    assert not [layer for layer in spec["layer"] if layer["mark"].get("type") == "rule"]
    assert "test-board storage 4 GB: far right of every variant, not drawn" in json.dumps(
        spec["title"]
    )
    # No budget on an axis that is not a size.
    spec = charts.tradeoff_chart(study_frame(), device=device_view()).to_dict()
    assert not [layer for layer in spec["layer"] if layer["mark"].get("type") == "rule"]


def two_runtime_frame() -> pd.DataFrame:
    """study_frame() measured in two runtimes: the second one's twice as slow."""
    a = study_frame()
    b = study_frame()
    b["runtime"] = "litert"
    b["key"] = [k + "-litert" for k in KEYS]
    b["latency_p50_ms"] = b["latency_p50_ms"] * 2
    return pd.concat([a, b], ignore_index=True)


def test_one_runtime_draws_no_shape_legend():
    spec = charts.tradeoff_chart(study_frame()).to_dict()
    assert "shape" not in spec["layer"][1]["encoding"]
    assert "shape: runtime" not in spec["title"]["subtitle"]
    titles = [t["title"] for t in spec["layer"][1]["encoding"]["tooltip"]]
    assert titles[:2] == ["recipe", "runtime"]


def test_runtimes_are_told_apart_by_shape_with_a_legend():
    spec = charts.tradeoff_chart(two_runtime_frame()).to_dict()
    shape = spec["layer"][1]["encoding"]["shape"]
    assert shape["field"] == "runtime" and shape["title"] == "runtime"
    domain, shapes = shape["scale"]["domain"], shape["scale"]["range"]
    assert sorted(domain) == ["litert", "onnxruntime"]
    assert len(set(shapes)) == 2 and "diamond" not in shapes  # the baseline's shape
    assert "shape: runtime" in spec["title"]["subtitle"]
    rows = spec["datasets"][spec["data"]["name"]]
    assert {r["runtime"] for r in rows} == {"onnxruntime", "litert"}
    # The same runtime gets the same shape whatever else a study holds.
    assert (
        charts.runtime_shapes(["onnxruntime"])["onnxruntime"] == shapes[domain.index("onnxruntime")]
    )


def test_the_frontier_can_be_drawn_per_runtime():
    frame = two_runtime_frame()
    across = charts.tradeoff_chart(frame).to_dict()
    # Across runtimes the slower runtime's variants are all dominated by their twins...
    assert {r["runtime"] for r in layer_data(across, 0)} == {"onnxruntime"}
    assert "detail" not in across["layer"][0]["encoding"]
    per = charts.tradeoff_chart(frame, per_runtime_frontier=True).to_dict()
    # ... within its own runtime, each has the same frontier as the other.
    on = layer_data(per, 0)
    assert sorted(r["recipe"] for r in on if r["runtime"] == "litert") == sorted(
        r["recipe"] for r in on if r["runtime"] == "onnxruntime"
    )
    assert len(on) == 8
    assert per["layer"][0]["encoding"]["detail"]["field"] == "runtime"  # one line each
    assert "one frontier per runtime" in per["title"]["subtitle"]


def test_a_table_without_a_runtime_column_is_onnx_runtime():
    frame = study_frame().drop(columns=["runtime"])
    spec = charts.tradeoff_chart(frame).to_dict()
    assert {r["runtime"] for r in spec["datasets"][spec["data"]["name"]]} == {"onnxruntime"}
