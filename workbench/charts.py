"""Altair chart builders: pure functions from a Study's DataFrame to ``alt.Chart`` values.

Nothing here imports ipywidgets: the panels wrap these charts in ``alt.JupyterChart``,
the HTML report embeds their specs, and tests read them through ``chart.to_dict()``.
The number formatters used in tooltips live here too, so the panels and the report
show the same figures the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import altair as alt
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.study import OBJECTIVE_COLUMNS, pareto_mask

__all__ = [
    "AXIS_TITLES",
    "PICK_PARAM",
    "default_y",
    "format_bytes",
    "format_count",
    "format_ms",
    "format_percent",
    "operator_chart",
    "recipe_family",
    "sensitivity_chart",
    "tradeoff_chart",
]

# The point-selection parameter of the tradeoff chart; a click selects one variant's
# key, which JupyterChart reports back as ``jchart.selections.pick``.
PICK_PARAM = "pick"

# Axis titles carry their units: a number without its unit is not shown.
AXIS_TITLES: dict[str, str] = {
    "accuracy": "top-1 accuracy (test split)",
    "agreement": "agreement with the float model",
    "latency_p50_ms": "latency p50 (ms, batch 1)",
    "latency_p90_ms": "latency p90 (ms, batch 1)",
    "latency_p99_ms": "latency p99 (ms, batch 1)",
    "size_bytes": "artifact size (bytes)",
    "compressed_bytes": "deflate-compressed size (bytes)",
    "peak_memory_bytes": "peak inference memory (bytes)",
    "macs": "multiply-accumulates per inference",
    "params": "weight elements",
    "nonzero_params": "non-zero weight elements",
}
# d3-format strings for the axes: fractions as percents, bytes and counts with SI prefixes.
_AXIS_FORMATS: dict[str, str] = {
    "accuracy": "~%",
    "agreement": "~%",
    "size_bytes": "~s",
    "compressed_bytes": "~s",
    "peak_memory_bytes": "~s",
    "macs": "~s",
    "params": "~s",
    "nonzero_params": "~s",
}

FAMILIES = ("baseline", "pruned", "quantized", "pruned + quantized")
_FAMILY_COLORS = ("#222222", "#1f77b4", "#2ca02c", "#9467bd")
CURRENT_COLOR = "#ff7f0e"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _scaled(n: float, units: tuple[str, ...], sep: str) -> str:
    """``n`` divided by 1000 until below 1000 (or the last unit), to 3 significant digits."""
    for unit in units:
        if abs(n) < 1000 or unit == units[-1]:
            return f"{n:.0f}{sep}{unit}".rstrip() if unit == units[0] else f"{n:.3g}{sep}{unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_bytes(n: float | None) -> str:
    """Bytes with a decimal unit: ``1234567`` -> ``"1.23 MB"``; None -> ``"n/a"``."""
    return "n/a" if _missing(n) else _scaled(float(n), ("B", "kB", "MB", "GB"), " ")


def format_ms(ms: float | None) -> str:
    """Milliseconds to three significant digits: ``0.12345`` -> ``"0.123 ms"``."""
    if _missing(ms):
        return "n/a"
    return f"{float(ms):.3g} ms"


def format_count(n: float | None) -> str:
    """A large count with an SI suffix: ``1234567`` -> ``"1.23M"``."""
    return "n/a" if _missing(n) else _scaled(float(n), ("", "k", "M", "G"), "")


def format_percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percent: ``0.9723`` -> ``"97.2%"``."""
    if _missing(fraction):
        return "n/a"
    return f"{float(fraction) * 100:.{digits}f}%"


def recipe_family(name: str) -> str:
    """Which of baseline / pruned / quantized / pruned + quantized a recipe name is.

    Reads :attr:`workbench.recipe.Recipe.name`, whose steps are joined by ``+`` and
    whose pruning step starts with ``prune-``.
    """
    if name == "baseline":
        return "baseline"
    steps = name.split("+")
    pruned = any(s.startswith("prune-") for s in steps)
    quantized = any(not s.startswith("prune-") for s in steps)
    if pruned and quantized:
        return "pruned + quantized"
    return "pruned" if pruned else "quantized"


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


def _axis(column: str, channel: type) -> Any:
    fmt = _AXIS_FORMATS.get(column)
    axis = alt.Axis(format=fmt) if fmt else alt.Axis()
    return channel(
        f"{column}:Q",
        title=AXIS_TITLES[column],
        axis=axis,
        # padding: points on the edge drawn whole. Fractions are not rounded out to
        # "nice" bounds, which would put 110% on an accuracy axis.
        scale=alt.Scale(zero=False, nice=fmt != "~%", padding=14),
    )


# Tooltip rows: (column in the chart's data, title). The data holds formatted text, so
# tooltips show units ("0.123 ms", "1.23 MB") rather than raw floats.
_TOOLTIP_TEXT: tuple[tuple[str, str, Any], ...] = (
    ("accuracy", "accuracy", format_percent),
    ("agreement", "agreement", format_percent),
    ("latency_p50_ms", "latency p50", format_ms),
    ("latency_p90_ms", "latency p90", format_ms),
    ("size_bytes", "size", format_bytes),
    ("compressed_bytes", "compressed size", format_bytes),
    ("peak_memory_bytes", "peak memory", format_bytes),
    ("macs", "MACs", format_count),
    ("params", "params", format_count),
    ("nonzero_params", "non-zero params", format_count),
)


# Study columns with the 25th and 75th percentile of the rounds' p50s (see LatencyStats).
_LATENCY_SPREAD = ("latency_p50_low_ms", "latency_p50_high_ms")


def _speedup_text(speedup: Any, low: Any, high: Any) -> str:
    """``"×2.4 (×2.2–2.6)"``: the interleaved speed-up against the baseline; "n/a" if none."""
    if _missing(speedup):
        return "n/a"
    return f"×{float(speedup):.2f} (×{float(low):.2f}–{float(high):.2f})"


def _latency_error_bars(base: alt.Chart, data: pd.DataFrame, x: str, y: str) -> alt.Chart | None:
    """Error bars over the middle half of the rounds' p50s, where an axis is the p50
    and some variant was timed in rounds; None otherwise."""
    low, high = _LATENCY_SPREAD
    if not (data[low].notna() & data[high].notna()).any():
        return None
    if x == "latency_p50_ms":
        encoding = {"x": alt.X(f"{low}:Q"), "x2": alt.X2(f"{high}:Q")}
    elif y == "latency_p50_ms":
        encoding = {"y": alt.Y(f"{low}:Q"), "y2": alt.Y2(f"{high}:Q")}
    else:
        return None
    return (
        base.transform_filter(f"isValid(datum.{low}) && isValid(datum.{high})")
        .mark_rule(color="#555555", strokeWidth=1.5, opacity=0.8)
        .encode(**encoding)
    )


def _chart_data(df: pd.DataFrame, x: str, y: str, current_key: str | None) -> pd.DataFrame:
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
    data["family"] = [recipe_family(n) for n in data["recipe"]]
    data["is_baseline"] = rows["is_baseline"].astype(bool) if "is_baseline" in rows else False
    data["is_current"] = data["key"] == (current_key or "\0")
    if len(rows):
        data["on_frontier"] = pareto_mask(rows, {y: "max", x: "min"})
    else:
        data["on_frontier"] = pd.Series(dtype=bool)
    for column, _title, fmt in _TOOLTIP_TEXT:
        values = rows[column] if column in rows else [None] * len(rows)
        data[f"{column}_text"] = [fmt(v) for v in values]
    data["frontier_text"] = ["yes" if f else "no" for f in data["on_frontier"]]
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


def tradeoff_chart(
    df: pd.DataFrame,
    x: str = "latency_p50_ms",
    y: str = "accuracy",
    current_key: str | None = None,
    *,
    width: int = 480,
    height: int = 320,
) -> alt.LayerChart:
    """Every variant as a point of ``y`` against ``x``, with the Pareto frontier.

    Layers, bottom to top: the frontier over (``y`` max, ``x`` min) as a line; every
    variant coloured by family, carrying the click-selection parameter
    :data:`PICK_PARAM` on the ``key`` field; the baseline as a black diamond with a
    label; the current variant ringed in orange with a label. Where an axis is the
    latency p50, error bars span the middle half of the p50s over the interleaved timing
    rounds. Tooltips give the recipe, its formatted figures and its interleaved speed-up
    against the baseline. Variants missing ``x`` or ``y`` are left out.

    Args:
        df: ``Study.to_dataframe()``.
        x: the cost axis (a column of ``OBJECTIVE_COLUMNS``, smaller is better).
        y: the quality axis (``accuracy`` or ``agreement``, larger is better).
        current_key: the cache key of the variant to highlight, if any.

    Raises:
        WorkbenchError: ``x`` or ``y`` is not a measured figure.
    """
    _check_axis(df, x, "x")
    _check_axis(df, y, "y")
    data = _chart_data(df, x, y, current_key)
    tooltip = [alt.Tooltip("recipe:N", title="recipe")] + [
        alt.Tooltip(f"{column}_text:N", title=title) for column, title, _ in _TOOLTIP_TEXT
    ]
    tooltip.append(alt.Tooltip("speedup_text:N", title="speed-up vs baseline (interleaved)"))
    tooltip.append(alt.Tooltip("warnings_text:N", title="warnings"))
    tooltip.append(alt.Tooltip("frontier_text:N", title="on the frontier"))
    x_enc, y_enc = _axis(x, alt.X), _axis(y, alt.Y)
    base = alt.Chart(data).encode(x=x_enc, y=y_enc)

    pick = alt.selection_point(
        name=PICK_PARAM, fields=["key"], on="click", clear="dblclick", empty=False
    )
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
    points = (
        base.mark_point(filled=True, size=80, opacity=0.85)
        .encode(
            color=alt.Color(
                "family:N",
                title="variant",
                scale=alt.Scale(domain=list(FAMILIES), range=list(_FAMILY_COLORS)),
            ),
            stroke=alt.condition(pick, alt.value("black"), alt.value(None)),
            strokeWidth=alt.condition(pick, alt.value(2), alt.value(0)),
            tooltip=tooltip,
        )
        .add_params(pick)
    )
    baseline = base.transform_filter(alt.datum.is_baseline)
    baseline_mark = baseline.mark_point(
        shape="diamond", size=220, filled=True, color="#222222"
    ).encode(tooltip=tooltip)
    baseline_label = baseline.mark_text(
        text="baseline", align="left", dx=10, dy=-10, fontWeight="bold", color="#222222"
    )
    current = base.transform_filter(alt.datum.is_current)
    current_mark = current.mark_point(
        shape="circle", size=420, filled=False, strokeWidth=3, color=CURRENT_COLOR
    ).encode(tooltip=tooltip)
    current_label = current.mark_text(
        text="current", align="left", dx=12, dy=12, fontWeight="bold", color=CURRENT_COLOR
    )
    # Last, so the other layers keep their places.
    error_bars = _latency_error_bars(base, data, x, y)
    return alt.layer(
        frontier,
        points,
        baseline_mark,
        baseline_label,
        current_mark,
        current_label,
        *([error_bars] if error_bars is not None else []),
    ).properties(
        width=width,
        height=height,
        title=alt.Title(
            f"{AXIS_TITLES[y].split(' (')[0]} vs {AXIS_TITLES[x].split(' (')[0]}",
            subtitle="grey rings and dashed line: Pareto frontier · diamond: baseline"
            + (" · orange ring: current" if current_key else ""),
        ),
    )


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
