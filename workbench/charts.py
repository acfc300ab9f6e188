"""Altair chart builders: pure functions from a Study's DataFrame to ``alt.Chart`` values.

Nothing here imports ipywidgets: the panels wrap these charts in ``alt.JupyterChart``,
the HTML report embeds their specs, and tests read them through ``chart.to_dict()``.
The number formatters used in tooltips live here too, so the panels and the report
show the same figures the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import altair as alt
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.formatting import (
    format_bytes,
    format_change,
    format_count,
    format_ms,
    format_percent,
)
from workbench.formatting import is_missing as _missing
from workbench.results import NO_LATENCY
from workbench.runtimes import DEFAULT_RUNTIME, list_runtimes
from workbench.study import FIGURES, METRICS, METRICS_BY_COLUMN, OBJECTIVE_COLUMNS, pareto_mask

__all__ = [
    "AXIS_TITLES",
    "EMBED_OPTIONS",
    "PICK_PARAM",
    "ZOOM_PARAM",
    "default_y",
    "format_bytes",
    "format_change",
    "format_count",
    "format_figure",
    "format_ms",
    "format_percent",
    "operator_chart",
    "search_path_chart",
    "runtime_shapes",
    "variant_family",
    "sensitivity_chart",
    "tradeoff_chart",
]

# The point-selection parameter of the tradeoff chart; a click selects one variant's
# key, which JupyterChart reports back as ``jchart.selections.pick``.
PICK_PARAM = "pick"
# The chart's zoom and pan: an interval bound to the scales (wheel zooms, drag pans).
ZOOM_PARAM = "zoom"
# vega-embed's options wherever a chart is drawn (the app's JupyterChart, the HTML
# report): PNG/SVG export stays (made in the page), but no "Open in Vega Editor",
# which posts the spec to a public site, and no source views.
EMBED_OPTIONS: dict[str, Any] = {
    "renderer": "svg",
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
}

# Axis titles carry their units: a number without its unit is not shown.
AXIS_TITLES: dict[str, str] = {f.column: f.title for f in METRICS}
# A fraction axis spans at least this much (5 points): a 0.3-point spread of accuracy
# drawn across the whole chart makes noise look like a cliff.
_MIN_FRACTION_SPAN = 0.05
# Share of the data's span left empty on each side, so edge points are drawn whole.
_DOMAIN_PAD = 0.08

# What a variant is, from its structured columns (see ``variant_family``), in legend
# order, with a colour each that stays the same whichever families a study holds.
FAMILIES = (
    "baseline",
    "pruned",
    "fine-tuned",
    "distilled",
    "quantized",
    "pruned + fine-tuned",
    "pruned + distilled",
    "pruned + quantized",
    "fine-tuned + quantized",
    "distilled + quantized",
    "pruned + fine-tuned + quantized",
    "pruned + distilled + quantized",
    "variant",  # a table without the structured columns (an old CSV)
)
_FAMILY_COLORS = (
    "#222222",
    "#1f77b4",
    "#8c564b",
    "#e377c2",
    "#2ca02c",
    "#17becf",
    "#bcbd22",
    "#9467bd",
    "#d62728",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#aaaaaa",
)
CURRENT_COLOR = "#ff7f0e"
# Point shapes telling runtimes apart when a chart holds more than one; each registered
# runtime keeps its shape whichever runtimes a study holds. No diamond: the baseline's.
RUNTIME_SHAPES = (
    "circle",
    "square",
    "triangle-up",
    "cross",
    "triangle-down",
    "triangle-left",
    "triangle-right",
    "wedge",
)


def runtime_shapes(runtimes: Iterable[str]) -> dict[str, str]:
    """The point shape of each of ``runtimes``: by its place among the registered
    runtimes (so it stays the same from chart to chart), then names not registered here
    (a study measured elsewhere) in order; shapes repeat past the eighth."""
    present = list(dict.fromkeys(runtimes))
    order = list_runtimes()
    order += [r for r in present if r not in order]
    return {rt: RUNTIME_SHAPES[order.index(rt) % len(RUNTIME_SHAPES)] for rt in present}


def _present(value: Any) -> bool:
    return not _missing(value) and value != "" and value != 0


def variant_family(row: Mapping[str, Any]) -> str:
    """What a variant is, from its structured columns (``prune_method``,
    ``finetune_epochs``, ``teacher``, ``quant_scheme``; see ``workbench.study.variant_columns``):
    "baseline", or its steps joined by " + ", e.g. "pruned + fine-tuned".

    A row without those columns (a table from before they existed) is "variant".
    """
    if bool(row.get("is_baseline", False)) or row.get("recipe") == "baseline":
        return "baseline"
    if "prune_method" not in row:
        return "variant"
    parts = []
    if _present(row.get("prune_method")):
        parts.append("pruned")
    if _present(row.get("teacher")):
        parts.append("distilled")
    elif _present(row.get("finetune_epochs")):
        parts.append("fine-tuned")
    if _present(row.get("quant_scheme")):
        parts.append("quantized")
    return " + ".join(parts) or "variant"


def default_y(df: pd.DataFrame) -> str:
    """``"accuracy"`` when some variant has it, else ``"agreement"`` (a model without labels)."""
    if "accuracy" in df.columns and df["accuracy"].notna().any():
        return "accuracy"
    return "agreement"


def _check_axis(df: pd.DataFrame, column: str, axis: str) -> None:
    if column not in OBJECTIVE_COLUMNS:
        raise WorkbenchError(
            f"{axis} axis {column!r} is not a measured figure",
            f"use one of: {', '.join(OBJECTIVE_COLUMNS)}",
        )
    if not df.empty and column not in df.columns:
        raise WorkbenchError(
            f"the study's table has no {column!r} column", "pass Study.to_dataframe()"
        )


def _is_fraction(column: str) -> bool:
    return METRICS_BY_COLUMN[column].unit == "fraction" if column in METRICS_BY_COLUMN else False


def axis_domain(values: Iterable[float], column: str) -> tuple[float, float] | None:
    """The axis range drawn for ``values`` of ``column``; None when there are none.

    Padded on both sides so edge points are drawn whole; one point (or equal values)
    gets a range around it rather than a single tick; a fraction spans at least
    5 points and stays within 0..100%; a cost never goes below zero.
    """
    vals = [float(v) for v in values if not _missing(v)]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    if _is_fraction(column):
        span = max(hi - lo, _MIN_FRACTION_SPAN)
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
        pad = span * _DOMAIN_PAD
        lo, hi = lo - pad, hi + pad
        if hi > 1.0:  # keep the span, shifted below 100%
            lo, hi = max(0.0, lo - (hi - 1.0)), 1.0
        if lo < 0.0:
            lo, hi = 0.0, min(1.0, hi - lo)
        return lo, hi
    span = hi - lo
    if span <= 0:  # one point: +-20% around it (or +-1 around zero)
        span = abs(hi) * 0.4 or 2.0
        lo, hi = lo - span / 2, hi + span / 2
    pad = span * _DOMAIN_PAD
    return max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad


def _axis(
    column: str,
    channel: type,
    domain: tuple[float, float] | None,
    field: str | None = None,
    title: str | None = None,
) -> Any:
    """``channel`` on ``field`` (default ``column``) with ``column``'s title (or ``title``),
    format and range."""
    fmt = METRICS_BY_COLUMN[column].axis_format if column in METRICS_BY_COLUMN else None
    # About 6 ticks: the default crowds an axis 520 px wide with "0.0155"-long labels.
    axis = alt.Axis(format=fmt, labelOverlap=True, tickCount=6)
    return channel(
        f"{field or column}:Q",
        title=title or AXIS_TITLES[column],
        axis=axis,
        scale=_scale(domain),
    )


def _scale(domain: tuple[float, float] | None) -> alt.Scale:
    if domain is None:
        return alt.Scale(zero=False, nice=False)
    return alt.Scale(zero=False, nice=False, domain=list(domain))


# Where a label may sit relative to its point, in pixels (dx, dy of its left edge and
# baseline), tried in this order; the first that covers no point and no other label wins.
_LABEL_OFFSETS = ((14, -12), (14, 20), (-14, -12), (-14, 20), (0, -22), (0, 30))
_LABEL_CHAR_PX = 7.5  # bold 11 px text
_LABEL_HEIGHT_PX = 13
_POINT_RADIUS_PX = 12  # the current variant's ring (size 420) is the largest mark


def _place_labels(
    data: pd.DataFrame,
    x: str,
    y: str,
    domains: tuple[tuple[float, float], tuple[float, float]],
    size: tuple[int, int],
    labels: list[tuple[str, Any]],
) -> list[dict[str, Any]]:
    """Label positions, in data units, that cover no point and no other label.

    ``labels`` are (text, row mask) pairs. Positions are computed on the chart's initial
    scales (zooming moves labels with their points). A label with no free place takes
    the first offset.
    """
    (x0, x1), (y0, y1) = domains
    width, height = size
    if x1 == x0 or y1 == y0:
        return []

    def to_px(vx: float, vy: float) -> tuple[float, float]:
        return (vx - x0) / (x1 - x0) * width, height - (vy - y0) / (y1 - y0) * height

    points = [to_px(a, b) for a, b in zip(data[x], data[y], strict=True)]
    taken: list[tuple[float, float, float, float]] = []
    placed = []
    for text, mask in labels:
        rows = data[mask]
        if rows.empty:
            continue
        px, py = to_px(float(rows[x].iloc[0]), float(rows[y].iloc[0]))
        w = len(text) * _LABEL_CHAR_PX
        choice = None
        for dx, dy in _LABEL_OFFSETS:
            left = px + dx if dx >= 0 else px + dx - w
            if dx == 0:
                left = px - w / 2
            box = (left, py + dy - _LABEL_HEIGHT_PX, left + w, py + dy)
            inside = box[0] >= 0 and box[2] <= width and box[1] >= 0 and box[3] <= height
            hits_point = any(
                box[0] - _POINT_RADIUS_PX < qx < box[2] + _POINT_RADIUS_PX
                and box[1] - _POINT_RADIUS_PX < qy < box[3] + _POINT_RADIUS_PX
                for qx, qy in points
            )
            hits_label = any(
                box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken
            )
            if inside and not hits_point and not hits_label:
                choice = box
                break
        if choice is None:
            dx, dy = _LABEL_OFFSETS[0]
            choice = (px + dx, py + dy - _LABEL_HEIGHT_PX, px + dx + w, py + dy)
        taken.append(choice)
        # Back to data units: the text mark is drawn left-aligned at its baseline.
        placed.append(
            {
                "label": text,
                "label_x": x0 + choice[0] / width * (x1 - x0),
                "label_y": y0 + (height - choice[3]) / height * (y1 - y0),
            }
        )
    return placed


def format_figure(column: str, value: Any) -> str:
    """A figure of ``Study.to_dataframe()``'s ``column`` with its unit, as tables show it.

    Fractions get two decimals (99.25% and 99.60% differ by one test image on digits);
    unknown columns are shown as they are.
    """
    fig = METRICS_BY_COLUMN.get(column)
    if fig is None:
        return "n/a" if _missing(value) else str(value)
    return fig.text(value)


# Study columns with the 25th and 75th percentile of the rounds' p50s (see LatencyStats).
_LATENCY_SPREAD = ("latency_p50_low_ms", "latency_p50_high_ms")


def _speedup_text(speedup: Any, low: Any, high: Any) -> str:
    """``"×2.4 (×2.2–2.6)"``: the interleaved speed-up against the baseline; "n/a" if none."""
    if _missing(speedup):
        return "n/a"
    return f"×{float(speedup):.2f} (×{float(low):.2f}–{float(high):.2f})"


def _latency_error_bars(
    base: alt.Chart,
    data: pd.DataFrame,
    x: str,
    y: str,
    domains: tuple[tuple[float, float] | None, tuple[float, float] | None],
) -> alt.Chart | None:
    """Error bars over the middle half of the rounds' p50s, where an axis is the p50
    and some variant was timed in rounds; None otherwise. They share the points' axes."""
    low, high = _LATENCY_SPREAD
    if not (data[low].notna() & data[high].notna()).any():
        return None
    if x == "latency_p50_ms":
        encoding = {"x": _axis(x, alt.X, domains[0], low), "x2": alt.X2(f"{high}:Q")}
    elif y == "latency_p50_ms":
        encoding = {"y": _axis(y, alt.Y, domains[1], low), "y2": alt.Y2(f"{high}:Q")}
    else:
        return None
    return (
        base.transform_filter(f"isValid(datum.{low}) && isValid(datum.{high})")
        .mark_rule(color="#555555", strokeWidth=1.5, opacity=0.8)
        .encode(**encoding)
    )


def _frontier_mask(rows: pd.DataFrame, objectives: dict[str, str], runtimes: pd.Series) -> Any:
    """``pareto_mask`` within each runtime's rows: a frontier per runtime."""
    mask = pd.Series(False, index=rows.index)
    for rt in dict.fromkeys(runtimes):
        mine = (runtimes == rt).to_numpy()
        mask[mine] = pareto_mask(rows[mine], objectives)
    return mask.to_numpy()


def _chart_data(
    df: pd.DataFrame,
    x: str,
    y: str,
    current_key: str | None,
    *,
    per_runtime_frontier: bool = False,
) -> pd.DataFrame:
    """The columns the chart needs: plotted values, formatted tooltip text, roles."""
    rows = df[df[x].notna() & df[y].notna()].copy() if not df.empty else df.copy()
    data = pd.DataFrame(
        {
            "recipe": rows.get("recipe", pd.Series(dtype=str)),
            "key": rows.get("key", pd.Series(dtype=str)),
        }
    )
    data[x] = rows[x].astype(float) if x in rows else pd.Series(dtype=float)
    data[y] = rows[y].astype(float) if y in rows else pd.Series(dtype=float)
    data["family"] = [variant_family(row) for _, row in rows.iterrows()]
    data["is_baseline"] = rows["is_baseline"].astype(bool) if "is_baseline" in rows else False
    data["is_current"] = data["key"] == (current_key or "\0")
    # A table from before runtimes had names was measured in ONNX Runtime.
    runtimes = rows["runtime"].fillna(DEFAULT_RUNTIME) if "runtime" in rows else None
    data["runtime"] = runtimes.astype(str).to_numpy() if runtimes is not None else DEFAULT_RUNTIME
    if len(rows) and per_runtime_frontier:
        data["on_frontier"] = _frontier_mask(
            rows, {y: "max", x: "min"}, pd.Series(data["runtime"].to_numpy(), index=rows.index)
        )
    elif len(rows):
        data["on_frontier"] = pareto_mask(rows, {y: "max", x: "min"})
    else:
        data["on_frontier"] = pd.Series(dtype=bool)
    for fig in FIGURES:
        values = rows[fig.column] if fig.column in rows else [None] * len(rows)
        data[f"{fig.column}_text"] = [fig.text(v, precise=False) for v in values]
    data["frontier_text"] = ["yes" if f else "no" for f in data["on_frontier"]]
    for role in ("baseline", "current"):  # where their labels go: see _place_labels
        data[f"{role}_label_x"] = float("nan")
        data[f"{role}_label_y"] = float("nan")
    # The middle half of the rounds' p50s: error bars where an axis is the p50.
    for column in _LATENCY_SPREAD:
        data[column] = rows[column].astype(float) if column in rows else float("nan")
    data["speedup_text"] = [
        _speedup_text(*(row.get(c) for c in ("speedup", "speedup_low", "speedup_high")))
        for _, row in rows.iterrows()
    ]
    warn = rows["warnings"] if "warnings" in rows else [0] * len(rows)
    data["warnings_text"] = [str(int(w)) if not _missing(w) else "0" for w in warn]
    return data.reset_index(drop=True)


def untimed_note(df: pd.DataFrame, x: str, y: str) -> str:
    """ " · N variant(s) not shown: no latency measured: ..." when a latency axis leaves
    out variants of a runtime that times nothing here (TFLite Micro); "" otherwise."""
    latency_axes = [c for c in (x, y) if c.startswith("latency_") and c in df]
    if df.empty or not latency_axes:
        return ""
    untimed = int(df[latency_axes].isna().any(axis=1).sum())
    if not untimed:
        return ""
    return (
        f" · {untimed} variant(s) not shown: {NO_LATENCY} (choose memory or size as the cost axis)"
    )


def tradeoff_chart(
    df: pd.DataFrame,
    x: str = "latency_p50_ms",
    y: str = "accuracy",
    current_key: str | None = None,
    *,
    width: int = 520,
    height: int = 340,
    device: Any = None,
    per_runtime_frontier: bool = False,
) -> alt.LayerChart:
    """Every variant as a point of ``y`` against ``x``, with the Pareto frontier.

    Layers, bottom to top: the frontier over (``y`` max, ``x`` min) as a line; every
    variant coloured by family, carrying the click-selection parameter
    :data:`PICK_PARAM` on the ``key`` field and the zoom-and-pan parameter
    :data:`ZOOM_PARAM` (wheel zooms, drag pans, double click resets); the baseline as
    a black diamond; the current variant ringed in orange; then their labels, placed
    where they cover no point. Axes are padded around the data (one point still gets
    a readable range), fractions span at least 5 points, and ticks are rounded to
    3 significant digits. Tooltips give the recipe and its formatted figures.
    Where an axis is the latency p50, error bars span the middle half of the p50s over
    the interleaved timing rounds, and tooltips give the interleaved speed-up against
    the baseline. Variants missing ``x`` or ``y`` are left out. Variants measured in
    more than one runtime are told apart by their point's shape (see
    :func:`runtime_shapes`), with a legend; tooltips name the runtime.

    Args:
        df: ``Study.to_dataframe()``.
        x: the cost axis (a column of ``OBJECTIVE_COLUMNS``, smaller is better).
        y: the quality axis (``accuracy`` or ``agreement``, larger is better).
        current_key: the cache key of the variant to highlight, if any.
        device: a target device's view of the variants
            (``workbench.devices.view.device_overlay``): its budget line is drawn on
            an axis that is a size (memory budget on peak memory, flash or storage on
            the file size), variants that do not fit are drawn greyed and hollow with
            the deciding figure in the tooltip, the frontier is taken over the
            variants that fit, and on a device other than this machine a latency axis
            shows the device's figure (measured there, else the labelled roofline
            lower bound), never this machine's.
        per_runtime_frontier: a frontier for each runtime (one line each: a variant is
            on it when no variant of its own runtime dominates it) instead of one
            across every runtime.

    Raises:
        WorkbenchError: ``x`` or ``y`` is not a measured figure.
    """
    _check_axis(df, x, "x")
    _check_axis(df, y, "y")
    data = _chart_data(df, x, y, current_key, per_runtime_frontier=per_runtime_frontier)
    titles: dict[str, str] = {}
    if device is not None:
        data, titles = _apply_device(data, x, y, device, per_runtime_frontier=per_runtime_frontier)
    on_device = device is not None and not device.is_host
    shapes = runtime_shapes(data["runtime"]) if len(data) else {}
    several_runtimes = len(shapes) > 1
    tooltip = [
        alt.Tooltip("recipe:N", title="recipe"),
        alt.Tooltip("runtime:N", title="runtime"),
    ] + [
        alt.Tooltip(
            f"{fig.column}_text:N",
            title=f"{fig.label} (this machine)"
            if on_device and fig.column.startswith("latency")
            else fig.label,
        )
        for fig in FIGURES
    ]
    if device is not None:
        tooltip.append(alt.Tooltip("fit_text:N", title=f"fit on {device.device}"))
        if on_device:
            tooltip.append(
                alt.Tooltip("device_latency_text:N", title=f"latency on {device.device}")
            )
    tooltip.append(alt.Tooltip("speedup_text:N", title="speed-up vs baseline (interleaved)"))
    tooltip.append(alt.Tooltip("warnings_text:N", title="warnings"))
    tooltip.append(alt.Tooltip("frontier_text:N", title="on the frontier"))
    budgets, far_budgets = _budgets_shown(data, x, device)
    x_domain = axis_domain([*data[x], *(b.value for b in budgets)], x)
    y_domain = axis_domain(data[y], y)
    x_enc = _axis(x, alt.X, x_domain, title=titles.get(x))
    y_enc = _axis(y, alt.Y, y_domain, title=titles.get(y))
    if x_domain is not None and y_domain is not None:
        for label in _place_labels(
            data,
            x,
            y,
            (x_domain, y_domain),
            (width, height),
            [("baseline", data["is_baseline"]), ("current", data["is_current"])],
        ):
            role = label["label"]
            mask = data[f"is_{role}"]
            data.loc[mask, f"{role}_label_x"] = label["label_x"]
            data.loc[mask, f"{role}_label_y"] = label["label_y"]

    base = alt.Chart(data).encode(x=x_enc, y=y_enc)
    present = set(data["family"]) or {"baseline"}

    pick = alt.selection_point(
        name=PICK_PARAM, fields=["key"], on="click", clear="dblclick", empty=False
    )
    zoom = alt.selection_interval(name=ZOOM_PARAM, bind="scales")
    frontier = (
        base.transform_filter(alt.datum.on_frontier)
        # Open grey rings mark the frontier's points, so a one-point frontier shows too.
        .mark_line(
            color="#888888",
            strokeDash=[4, 3],
            interpolate="linear",
            point=alt.OverlayMarkDef(filled=False, color="#888888", size=190),
        )
        .encode(order=alt.Order(f"{x}:Q"))
    )
    if per_runtime_frontier:  # one line per runtime, not one zigzag through them all
        frontier = frontier.encode(detail=alt.Detail("runtime:N"))
    family_color = alt.Color(
        "family:N",
        title="variant",
        # Only the families present, each in its fixed colour.
        scale=alt.Scale(
            domain=[f for f in FAMILIES if f in present],
            range=[c for f, c in zip(FAMILIES, _FAMILY_COLORS, strict=True) if f in present],
        ),
    )
    points = (
        base.mark_point(filled=True, size=80, opacity=0.85)
        .encode(
            # A variant that does not fit the device is greyed (and ringed below).
            color=family_color
            if device is None
            else alt.condition("datum.fits", family_color, alt.value(UNFIT_COLOR)),
            **(
                {
                    "shape": alt.Shape(
                        "runtime:N",
                        title="runtime",
                        scale=alt.Scale(domain=list(shapes), range=list(shapes.values())),
                    )
                }
                if several_runtimes
                else {}
            ),
            stroke=alt.condition(pick, alt.value("black"), alt.value(None)),
            strokeWidth=alt.condition(pick, alt.value(2), alt.value(0)),
            tooltip=tooltip,
        )
        .add_params(pick, zoom)
    )
    baseline_mark = (
        base.transform_filter(alt.datum.is_baseline)
        .mark_point(shape="diamond", size=220, filled=True, color="#222222")
        .encode(
            tooltip=tooltip,
            # A baseline that does not fit the device is greyed like any other variant.
            **(
                {"color": alt.condition("datum.fits", alt.value("#222222"), alt.value(UNFIT_COLOR))}
                if device is not None
                else {}
            ),
        )
    )
    current_mark = (
        base.transform_filter(alt.datum.is_current)
        .mark_point(shape="circle", size=420, filled=False, strokeWidth=3, color=CURRENT_COLOR)
        .encode(tooltip=tooltip)
    )

    def label_layer(role: str, color: str) -> alt.Chart:
        # Drawn at its placed position (data units), which covers no point.
        return (
            base.transform_filter(getattr(alt.datum, f"is_{role}"))
            .mark_text(
                text=role, align="left", baseline="alphabetic", fontWeight="bold", color=color
            )
            .encode(
                x=_axis(x, alt.X, x_domain, f"{role}_label_x", title=titles.get(x)),
                y=_axis(y, alt.Y, y_domain, f"{role}_label_y", title=titles.get(y)),
            )
        )

    baseline_label = label_layer("baseline", "#222222")
    current_label = label_layer("current", CURRENT_COLOR)
    # Last, so the other layers keep their places. The spread is this machine's timing:
    # no error bars on an axis that shows a device's latency.
    error_bars = (
        _latency_error_bars(base, data, x, y, (x_domain, y_domain))
        if not (set(titles) & {x, y})
        else None
    )
    device_layers = []
    if device is not None:
        # A dashed grey ring over each variant that does not fit: hollow, greyed.
        device_layers.append(
            base.transform_filter("!datum.fits")
            .mark_point(shape="circle", size=260, filled=False, strokeWidth=1.5, strokeDash=[2, 2])
            .encode(color=alt.value("#666666"), tooltip=tooltip)
        )
        device_layers += _budget_layers(data, budgets, x, y, x_domain, y_domain)
    subtitle = (
        "grey rings and dashed line: Pareto frontier"
        + (" (one frontier per runtime)" if per_runtime_frontier else "")
        + (f" within the {device.device} budget" if device is not None else "")
        + " · diamond: baseline"
        + (" · shape: runtime" if several_runtimes else "")
        + (" · orange ring: current" if current_key else "")
        + ("" if device is not None else " · scroll: zoom, drag: pan")
        + untimed_note(df, x, y)
    )
    subtitles = [subtitle]
    if device is not None:  # a second line: the first would run past the chart
        subtitles.append(
            (
                f"greyed, dotted ring: does not fit {device.device} · "
                if not data["fits"].all()
                else ""
            )
            + "scroll: zoom, drag: pan"
        )
    subtitles += [f"{b.label}: far right of every variant, not drawn" for b in far_budgets]
    x_title = titles.get(x, AXIS_TITLES[x]).split(" (")[0]
    return alt.layer(
        frontier,
        points,
        baseline_mark,
        baseline_label,
        current_mark,
        current_label,
        *([error_bars] if error_bars is not None else []),
        *device_layers,
    ).properties(
        width=width,
        height=height,
        title=alt.Title(
            f"{AXIS_TITLES[y].split(' (')[0]} vs {x_title}",
            subtitle=subtitles if len(subtitles) > 1 else subtitle,
        ),
    )


# A variant that does not fit the chosen device: greyed, with a dashed ring.
UNFIT_COLOR = "#c8c8c8"
BUDGET_COLOR = "#b00020"
# A budget line is drawn when it is within this factor of the largest value on its
# axis; one far beyond would squeeze every point against the left edge.
_BUDGET_REACH = 4.0


def _apply_device(
    data: pd.DataFrame, x: str, y: str, device: Any, *, per_runtime_frontier: bool = False
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Add the device's fit to the chart's rows; on a device other than this machine,
    put its latency (measured there, else the roofline bound) on a latency axis.
    Returns the rows and the axis titles that change."""
    from workbench.devices.view import LATENCY_COLUMNS

    table = device.table
    known = [k in table.index for k in data["key"]]
    data = data[known].copy() if not all(known) else data.copy()
    keys = list(data["key"])
    data["fits"] = [bool(table.loc[k, "fits"]) for k in keys]
    data["fit_text"] = [str(table.loc[k, "fit_text"]) for k in keys]
    data["device_latency_text"] = [str(table.loc[k, "latency_text"]) for k in keys]
    titles = {}
    if not device.is_host:
        for column in {x, y} & set(LATENCY_COLUMNS):
            data[column] = [table.loc[k, column] for k in keys]
            data = data[data[column].notna()].copy()
            kinds = set(table.loc[list(data["key"]), "latency_kind"])
            how = (
                "roofline lower bound, an estimate"
                if kinds == {"estimate"}
                else "measured there"
                if kinds == {"measured"}
                else "measured there, else the roofline lower bound (estimate)"
            )
            label = METRICS_BY_COLUMN[column].label
            titles[column] = f"{label} on {device.device} (ms, {how})"
    # The frontier of the variants that fit: one that does not is no choice at all.
    fits = data["fits"].to_numpy(dtype=bool)
    on_frontier = [False] * len(data)
    if fits.any():
        fitting = data[fits]
        objectives = {y: "max", x: "min"}
        mask = (
            _frontier_mask(fitting, objectives, fitting["runtime"])
            if per_runtime_frontier
            else pareto_mask(fitting, objectives)
        )
        for i, keep in zip(fits.nonzero()[0], mask, strict=True):
            on_frontier[i] = bool(keep)
    data["on_frontier"] = on_frontier
    data["frontier_text"] = [
        "yes" if f else ("no" if ok else f"no: does not fit {device.device}")
        for f, ok in zip(on_frontier, fits, strict=True)
    ]
    return data.reset_index(drop=True), titles


def _budgets_shown(data: pd.DataFrame, x: str, device: Any) -> tuple[list[Any], list[Any]]:
    """The device's budget lines for the x axis: (drawn, too far right to draw)."""
    if device is None:
        return [], []
    line = device.budget_for(x)
    if line is None:
        return [], []
    top = max((float(v) for v in data[x] if not _missing(v)), default=0.0)
    if top > 0 and line.value > top * _BUDGET_REACH:
        return [], [line]
    return [line], []


def _budget_layers(
    data: pd.DataFrame,
    budgets: list[Any],
    x: str,
    y: str,
    x_domain: tuple[float, float] | None,
    y_domain: tuple[float, float] | None,
) -> list[alt.Chart]:
    """A red dashed rule at each budget, labelled at the top of the chart.

    Drawn from the chart's own data (counted to one row), so the spec keeps one
    top-level dataset that every layer shares.
    """
    if y_domain is None:
        return []
    layers = []
    for b in budgets:
        # The variants' own data (the same object), counted to one row.
        one = (
            alt.Chart(data)
            .transform_aggregate(variants="count()")
            .transform_calculate(
                budget_value=f"{float(b.value)!r}",
                budget_label=json.dumps(b.label),
                budget_top=f"{float(y_domain[1])!r}",
            )
        )
        x_enc = _axis(x, alt.X, x_domain, "budget_value")
        left_half = x_domain is None or b.value < (x_domain[0] + x_domain[1]) / 2
        layers.append(
            one.mark_rule(color=BUDGET_COLOR, strokeDash=[6, 3], strokeWidth=2).encode(
                x=x_enc, tooltip=[alt.Tooltip("budget_label:N", title="budget")]
            )
        )
        layers.append(
            # Beside the line, on the side with more room, so the label stays in view.
            one.mark_text(
                align="left" if left_half else "right",
                baseline="top",
                dx=4 if left_half else -4,
                dy=4,
                color=BUDGET_COLOR,
                fontWeight="bold",
            ).encode(x=x_enc, y=_axis(y, alt.Y, y_domain, "budget_top"), text="budget_label:N")
        )
    return layers


def sensitivity_chart(rows: Iterable[Mapping[str, Any]]) -> alt.Chart:
    """A bar per layer: the accuracy lost when only that layer is compressed.

    Args:
        rows: dicts with ``layer`` (name), ``accuracy`` and ``drop`` (both fractions
            0..1, as ``workbench.compress.layer_sensitivity`` returns them; the chart
            shows the drop in accuracy points); other keys are shown in the tooltip.
            The most sensitive layer is on top.
    """
    data = pd.DataFrame(list(rows))
    for column in ("layer", "accuracy", "drop"):
        if column not in data.columns:
            raise WorkbenchError(
                f"sensitivity rows need a {column!r} value",
                "pass dicts with layer, accuracy and drop",
            )
    extra = [c for c in data.columns if c not in ("layer", "accuracy", "drop")]
    data["drop_points"] = data["drop"].astype(float) * 100
    tooltip = [
        alt.Tooltip("layer:N", title="layer"),
        alt.Tooltip("accuracy:Q", title="accuracy", format=".2%"),
        alt.Tooltip("drop_points:Q", title="drop (points)", format=".2f"),
        *[alt.Tooltip(f"{c}:N", title=c) for c in extra],
    ]
    return (
        alt.Chart(data)
        .mark_bar(color="#d62728")
        .encode(
            x=alt.X("drop_points:Q", title="accuracy drop (points, larger = more sensitive)"),
            y=alt.Y("layer:N", title="layer", sort="-x"),
            tooltip=tooltip,
        )
        .properties(width=420, title="Layer sensitivity")
    )


def operator_chart(operator_ms: Mapping[str, float]) -> alt.Chart:
    """A bar per ONNX operator type: milliseconds per inference spent in it, largest on top."""
    total = sum(operator_ms.values()) or 1.0
    data = pd.DataFrame(
        {
            "op": list(operator_ms),
            "ms": [float(v) for v in operator_ms.values()],
            "share": [float(v) / total for v in operator_ms.values()],
        }
    )
    return (
        alt.Chart(data)
        .mark_bar(color="#1f77b4")
        .encode(
            x=alt.X("ms:Q", title="time per inference (ms)"),
            y=alt.Y("op:N", title="operator type", sort="-x"),
            tooltip=[
                alt.Tooltip("op:N", title="operator"),
                alt.Tooltip("ms:Q", title="ms per inference", format=".4f"),
                alt.Tooltip("share:Q", title="share of time", format=".1%"),
            ],
        )
        .properties(
            width=420,
            title=alt.Title(
                "Time per operator type",
                subtitle="ONNX Runtime's profiler (adds its own overhead): compare shares, "
                "not totals, with the latency",
            ),
        )
    )


# The search path's colours: a candidate that kept the floor, one that did not, the chosen.
SEARCH_ACCEPTED_COLOR = "#2ca02c"
SEARCH_REJECTED_COLOR = "#d62728"
SEARCH_CHOSEN_COLOR = "#ff7f0e"
# A five-pointed star as an SVG path in Vega's unit square (Vega has no named star shape).
_STAR = "M0.000,-1.000L0.235,-0.324L0.951,-0.309L0.380,0.124L0.588,0.809L0.000,0.400L-0.588,0.809L-0.380,0.124L-0.951,-0.309L-0.235,-0.324Z"


def search_path_chart(
    df: pd.DataFrame,
    path: Iterable[Mapping[str, Any]],
    x: str = "compressed_bytes",
    y: str = "accuracy",
    *,
    floor: float | None = None,
    floor_title: str = "the floor",
    width: int = 520,
    height: int = 340,
) -> alt.LayerChart:
    """The trade-off chart of a search's variants with the path it took drawn on top.

    Layers over :func:`tradeoff_chart` (bottom to top): the path as a line joining the
    candidates in the order they were tried; each candidate as a green circle (kept the
    floor) or a red cross (rejected), numbered by its step; the chosen candidate as an
    orange star labelled "chosen"; and, when ``floor`` is given and ``y`` is accuracy, the
    floor as a dashed horizontal rule.

    Args:
        df: the measured variants, ``SearchResult.to_study().to_dataframe()`` (or any
            ``Study.to_dataframe()`` holding the path's keys).
        path: rows with ``step``, ``key``, ``accepted`` and ``chosen`` (and optionally
            ``recipe`` and ``reason``), as ``SearchResult.path_rows()`` gives them; steps
            whose key is not in ``df`` (a failed candidate) are left out.
        floor: the accuracy floor (a fraction), drawn when ``y`` is ``accuracy``.
        floor_title: what the dashed line is, in the subtitle (a search decides on
            validation images while ``y`` is the test split's accuracy).

    Raises:
        WorkbenchError: ``x`` or ``y`` is not a measured figure.
    """
    chart = tradeoff_chart(df, x, y, width=width, height=height)
    data = _chart_data(df, x, y, None)
    by_key = {k: i for i, k in enumerate(data["key"])}
    rows = []
    for row in path:
        key = row.get("key")
        if key not in by_key:
            continue
        i = by_key[key]
        rows.append(
            {
                "step": int(row["step"]),
                "key": key,
                "recipe": row.get("recipe") or data["recipe"].iloc[i],
                "verdict": "chosen"
                if row.get("chosen")
                else ("accepted" if row.get("accepted") else "rejected"),
                "reason": row.get("reason", ""),
                x: float(data[x].iloc[i]),
                y: float(data[y].iloc[i]),
                f"{x}_text": data[f"{x}_text"].iloc[i] if f"{x}_text" in data else "",
                f"{y}_text": data[f"{y}_text"].iloc[i] if f"{y}_text" in data else "",
            }
        )
    steps = pd.DataFrame(
        rows, columns=["step", "key", "recipe", "verdict", "reason", x, y, f"{x}_text", f"{y}_text"]
    )
    x_domain, y_domain = axis_domain(data[x], x), axis_domain(data[y], y)
    base = alt.Chart(steps).encode(x=_axis(x, alt.X, x_domain), y=_axis(y, alt.Y, y_domain))
    tooltip = [
        alt.Tooltip("step:Q", title="step"),
        alt.Tooltip("recipe:N", title="recipe"),
        alt.Tooltip("verdict:N", title="verdict"),
        alt.Tooltip("reason:N", title="why"),
        alt.Tooltip(f"{x}_text:N", title=METRICS_BY_COLUMN[x].label),
        alt.Tooltip(f"{y}_text:N", title=METRICS_BY_COLUMN[y].label),
    ]
    line = base.mark_line(color="#000000", strokeWidth=2, opacity=0.45).encode(
        order=alt.Order("step:Q")
    )
    marks = base.mark_point(size=130, strokeWidth=2.5, filled=False).encode(
        shape=alt.Shape(
            "verdict:N",
            title="search path",
            scale=alt.Scale(
                domain=["accepted", "rejected", "chosen"], range=["circle", "cross", "diamond"]
            ),
        ),
        color=alt.Color(
            "verdict:N",
            title="search path",
            scale=alt.Scale(
                domain=["accepted", "rejected", "chosen"],
                range=[SEARCH_ACCEPTED_COLOR, SEARCH_REJECTED_COLOR, SEARCH_CHOSEN_COLOR],
            ),
        ),
        tooltip=tooltip,
    )
    numbers = base.mark_text(align="right", dx=-9, dy=-9, fontSize=10, color="#333333").encode(
        text="step:Q", tooltip=tooltip
    )
    chosen = (
        base.transform_filter(alt.datum.verdict == "chosen")
        .mark_point(shape=_STAR, size=520, filled=True, color=SEARCH_CHOSEN_COLOR, opacity=0.9)
        .encode(tooltip=tooltip)
    )
    chosen_label = base.transform_filter(alt.datum.verdict == "chosen").mark_text(
        text="chosen",
        align="left",
        dx=14,
        dy=-14,
        fontWeight="bold",
        color=SEARCH_CHOSEN_COLOR,
    )
    layers: list[Any] = [line, marks, numbers, chosen, chosen_label]
    if floor is not None and y == "accuracy":
        rule = (
            alt.Chart(pd.DataFrame({"floor": [float(floor)]}))
            .mark_rule(color=SEARCH_REJECTED_COLOR, strokeDash=[6, 4], clip=True)
            .encode(y=_axis(y, alt.Y, y_domain, "floor"))
        )
        layers.insert(0, rule)
    # The trade-off chart's own layers and parameters (click and zoom, held at its top
    # level) stay as they are; the path is drawn over them.
    combined = chart.copy()
    combined.layer = [*chart.layer, *layers]
    combined.title = alt.Title(
        f"Search path: {AXIS_TITLES[y].split(' (')[0]} vs {AXIS_TITLES[x].split(' (')[0]}",
        subtitle="line: candidates in the order tried · green circle: kept the floor · "
        "red cross: rejected · star: chosen"
        + (f" · dashed red: {floor_title}" if floor is not None and y == "accuracy" else ""),
    )
    return combined.resolve_scale(color="independent", shape="independent")
