"""MetricsCard: the current variant against the baseline, with its context and warnings.

A pure HTML widget: set ``result`` and ``baseline`` (``workbench.Result`` values) and
it shows every figure with its change against the baseline, the honesty warnings in
plain words, and the environment line (CPU, threads, ONNX Runtime version) without
which a number is not shown.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import traitlets as T

from workbench.charts import (
    format_change,
)
from workbench.measure.environment import environment_line
from workbench.study import FIGURES

__all__ = ["SPINNER", "MetricsCard", "point_delta", "ratio_delta"]

GOOD, BAD, NEUTRAL = "#1a7f37", "#b00020", "#555555"


def ratio_delta(value: float | None, base: float | None) -> str:
    """A figure's change against ``base`` in the app's one delta format (relative, in %).

    ``ratio_delta(10, 34) == "-71%"``, ``ratio_delta(1.03, 1) == "+3.0%"``; see
    :func:`workbench.charts.format_change`.
    """
    return format_change(value, base, "ratio")


def point_delta(value: float | None, base: float | None) -> str:
    """The change of a fraction in percentage points: ``(0.952, 0.95) -> "+0.2 pt"``."""
    return format_change(value, base, "points")


# A busy indicator drawn in CSS: the hourglass character is missing from many fonts.
SPINNER = (
    "<style>@keyframes edge-workbench-spin { to { transform: rotate(360deg); } }</style>"
    '<span role="progressbar" aria-label="busy" style="display: inline-block; width: 9px; '
    "height: 9px; margin-right: 6px; border: 2px solid #ccc; border-top-color: #555; "
    'border-radius: 50%; animation: edge-workbench-spin 0.8s linear infinite;"></span>'
)


def _delta_colour(value: float | None, base: float | None, better: str) -> str:
    if value is None or base is None or value == base:
        return NEUTRAL
    improved = value > base if better == "max" else value < base
    return GOOD if improved else BAD


def card_html(result: Any, baseline: Any | None, *, busy: str = "", error: str = "") -> str:
    """The card's HTML for ``result`` against ``baseline`` (both ``workbench.Result``)."""
    style = "font-family: system-ui, sans-serif; font-size: 13px; transition: opacity 0.2s;"
    if busy:
        style += " opacity: 0.55;"
    parts = [f'<div class="edge-workbench-card" style="{style}">']
    if busy:
        parts.append(
            f'<div class="edge-workbench-busy" style="color:{NEUTRAL}; font-style: italic;">'
            f"{SPINNER}{html.escape(busy)}</div>"
        )
    if error:
        parts.append(f'<div style="color:{BAD};">{html.escape(error)}</div>')
    if result is None:
        if not busy:  # while busy, the busy line says what is coming
            parts.append(f'<div style="color:{NEUTRAL};">No variant measured yet.</div>')
        parts.append("</div>")
        return "".join(parts)
    m = result.metrics
    b = baseline.metrics if baseline is not None else None
    name = html.escape(result.recipe.name)
    parts.append(f'<div style="font-size: 15px; margin-bottom: 4px;"><b>{name}</b>')
    if baseline is not None and not result.recipe.is_baseline:
        parts.append(f' <span style="color:{NEUTRAL};">vs baseline</span>')
    parts.append("</div>")
    parts.append('<table style="border-collapse: collapse;">')
    for fig in FIGURES:  # the one table of figures (workbench.study.METRICS)
        value = fig.read(result)
        base_value = fig.read(baseline) if baseline is not None else None
        if value is None and base_value is None:
            continue
        delta, base_text = "", ""
        if b is not None and not result.recipe.is_baseline:
            delta = (point_delta if fig.kind == "points" else ratio_delta)(value, base_value)
            base_text = f"from {fig.text(base_value)}"
        colour = _delta_colour(value, base_value, fig.better)
        parts.append(
            f'<tr><td style="padding: 1px 10px 1px 0; color:{NEUTRAL};">{fig.label}</td>'
            f'<td style="padding: 1px 10px 1px 0; text-align: right;"><b>{fig.text(value)}</b></td>'
            f'<td style="padding: 1px 10px 1px 0; color:{colour}; text-align: right;">{delta}</td>'
            f'<td style="color:{NEUTRAL};">{base_text}</td></tr>'
        )
    parts.append("</table>")
    lat = m.latency
    parts.append(
        f'<div style="color:{NEUTRAL}; margin-top: 4px;">latency over {lat.n} timed runs '
        f"after {lat.warmup} warm-up, batch 1; accuracy and agreement on "
        f"{html.escape(m.agreement_basis)}</div>"
    )
    if result.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
        parts.append(
            '<div style="margin-top: 6px; padding: 4px 8px; background: #fff8e1; '
            'border-left: 3px solid #f0a000;"><b>What this setting does here</b>'
            f'<ul style="margin: 2px 0; padding-left: 18px;">{items}</ul></div>'
        )
    parts.append(
        f'<div class="edge-workbench-env" style="color:{NEUTRAL}; font-size: 11px; '
        f'margin-top: 6px;">measured on {html.escape(environment_line(m.environment))}</div>'
    )
    parts.append("</div>")
    return "".join(parts)


class MetricsCard(W.HTML):
    """The current variant's figures against the baseline's.

    Traits:
        result: the ``workbench.Result`` shown, or None.
        baseline: the baseline ``Result`` the deltas are taken against, or None.
        busy: a message shown while a new variant is measured ("" when idle); the
            figures below it are dimmed since they are the previous variant's.
        error: a message shown above the figures ("" for none).
    """

    result = T.Any(None)
    baseline = T.Any(None)
    busy = T.Unicode("")
    error = T.Unicode("")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._render()

    @T.observe("result", "baseline", "busy", "error")
    def _on_change(self, change: dict) -> None:
        self._render()

    def _render(self) -> None:
        self.value = card_html(self.result, self.baseline, busy=self.busy, error=self.error)
