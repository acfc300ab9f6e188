"""MetricsCard: the current variant against the baseline, with its context and warnings.

A pure HTML widget: set ``result`` and ``baseline`` (``workbench.Result`` values) and
it shows every figure with its change against the baseline, the honesty warnings in
plain words, and the environment line (CPU, threads, runtime and version) without
which a number is not shown. The speed-up is the one timed interleaved with the
baseline in the same run, shown with its spread over rounds. While a new variant is
measured, ``progress`` shows the figures known so far with the rest marked pending.
Its ``remeasure_button`` (placed by the app) asks for the timing to be measured again.
"""

from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Any

import ipywidgets as W
import traitlets as T

from workbench.charts import (
    format_change,
)
from workbench.formatting import format_bytes, speed_text, versus_text
from workbench.measure.environment import environment_line
from workbench.results import NO_LATENCY
from workbench.runtimes import DEFAULT_RUNTIME, recipe_name
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


# Progress's pending field names, as a reader would say them.
_PENDING_NAMES = {
    "compressed_bytes": "compressed size",
    "latency": "latency",
    "comparisons": "speed-up",
    "noise": "noise check",
    "memory": "peak memory",
    "operator_ms": "operator profile",
}


def _delta_colour(value: float | None, base: float | None, better: str) -> str:
    if value is None or base is None or value == base:
        return NEUTRAL
    improved = value > base if better == "max" else value < base
    return GOOD if improved else BAD


def _get(fig: Any, result: Any) -> Any:
    """A figure of ``result`` (a Result, or a partial stand-in), or None while it is not
    measured yet or there is no ``result``."""
    if result is None:
        return None
    try:
        return fig.read(result)
    except AttributeError:
        return None


def _partial_result(progress: Any) -> Any:
    """A stand-in Result holding the figures ``progress`` knows, the rest None."""
    metrics = SimpleNamespace(
        accuracy=None,
        agreement=None,
        agreement_basis="",
        latency=None,
        memory=None,
        comparisons=(),
        noise=None,
        environment={},
    )
    metrics.__dict__.update(progress.figures)
    return SimpleNamespace(recipe=progress.recipe, metrics=metrics, warnings=(), noisy=False)


def _speed_html(m: Any) -> str:
    """The interleaved speed-ups with their spread, one line each."""
    lines = []
    for c in m.comparisons or ():
        colour = GOOD if c.low > 1 else (BAD if c.high < 1 else NEUTRAL)
        lines.append(
            f'<div class="edge-workbench-speed" style="margin-top: 4px;">speed: '
            f'<b style="color:{colour};">{html.escape(speed_text(c, versus_text(c)))}</b>'
            f'<span style="color:{NEUTRAL};">, timed interleaved in one run</span></div>'
        )
    return "".join(lines)


def _parity_html(m: Any) -> str:
    """One line per runtime this variant was also built for: how closely the two files'
    predictions and outputs agree (measured on both files)."""
    return "".join(
        f'<div class="edge-workbench-parity" style="margin-top: 4px;" '
        f'title="{html.escape(p.detail(), quote=True)}">{html.escape(p.text())}'
        f'<span style="color:{NEUTRAL};">, both files run on the same inputs</span></div>'
        for p in getattr(m, "cross_runtime", ()) or ()
    )


def _device_html(device: Any) -> str:
    """The fit line (fits / does not fit, headroom, the deciding figure) and, on a device
    other than this machine, its latency there: measured there or a labelled estimate."""
    colour = GOOD if device.fits else BAD
    parts = [
        f'<div class="edge-workbench-device" style="margin-top: 6px;" '
        f'title="{html.escape(device.detail, quote=True)}">'
        f'<b style="color:{colour};">{html.escape(device.line)}</b>'
        f'<div style="color:{NEUTRAL}; font-size: 11px;">{html.escape(device.detail)}</div>'
    ]
    if not device.is_host:
        parts.append(
            f'<div class="edge-workbench-device-latency" style="margin-top: 4px;">'
            f"latency on {html.escape(device.device)}: "
            f"<b>{html.escape(device.latency_line)}</b>"
            f'<div style="color:{NEUTRAL}; font-size: 11px;">'
            f"{html.escape(device.latency_method)}</div></div>"
        )
    parts.append("</div>")
    return "".join(parts)


def _runtime_html(result: Any) -> str:
    """Which runtime measured ``result`` ("" for a partial result, whose runtime the
    busy line names)."""
    runtime = getattr(result, "runtime", None)
    if not runtime:
        return ""
    return (
        f' <span class="edge-workbench-runtime" style="color:{NEUTRAL};">· measured in '
        f"<b>{html.escape(runtime)}</b></span>"
    )


def card_html(
    result: Any,
    baseline: Any | None,
    *,
    busy: str = "",
    error: str = "",
    progress: Any = None,
    device: Any = None,
) -> str:
    """The card's HTML for ``result`` against ``baseline`` (both ``workbench.Result``).

    With ``progress`` (a ``workbench.results.Progress`` of a variant being measured)
    the card shows its figures known so far and marks the others pending. With
    ``device`` (a ``workbench.devices.view.DeviceStatus`` of ``result``) it says whether
    the variant fits that device, with the headroom and the deciding figure; on a
    device other than this machine the latency rows are labelled as this machine's and
    the device's own latency (measured there, else a roofline estimate) is added.
    """
    pending = progress is not None
    if device is not None and (
        pending or result is None or device.variant_key != getattr(result, "key", None)
    ):
        device = None  # about another variant (or this one is not measured yet)
    on_device = device is not None and not device.is_host
    if pending:
        result = _partial_result(progress)
    style = "font-family: system-ui, sans-serif; font-size: 13px; transition: opacity 0.2s;"
    if busy and not pending:  # dim the previous variant's figures, not the new ones
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
    # In the runtime's words (Result.name); a partial result names its runtime nowhere.
    name = html.escape(recipe_name(result.recipe, getattr(result, "runtime", DEFAULT_RUNTIME)))
    parts.append(f'<div style="font-size: 15px; margin-bottom: 4px;"><b>{name}</b>')
    if baseline is not None and not result.recipe.is_baseline:
        parts.append(f' <span style="color:{NEUTRAL};">vs baseline</span>')
    parts.append(_runtime_html(result))
    parts.append("</div>")
    parts.append('<table style="border-collapse: collapse;">')
    speed = next((c for c in m.comparisons or () if c.reference == "baseline"), None)
    for fig in FIGURES:  # the one table of figures (workbench.study.METRICS)
        label, kind, better = fig.label, fig.kind, fig.better
        shown_label = (
            f"{label} (this machine)" if on_device and label.startswith("latency") else label
        )
        value = _get(fig, result)
        base_value = _get(fig, baseline)
        if value is None and base_value is None:
            continue
        delta, base_text = "", ""
        if b is not None and not result.recipe.is_baseline and value is not None:
            delta = (point_delta if kind == "points" else ratio_delta)(value, base_value)
            if label.startswith("latency") and speed is not None:
                # The ratio timed interleaved in one run, not against a p50 measured
                # at another time on a machine that may have been busier or calmer; the
                # tail (p90) was not timed side by side, so it gets no ratio.
                delta = (
                    ratio_delta(speed.variant_p50, speed.reference_p50)
                    if label == "latency p50"
                    else ""
                )
            base_text = f"from {fig.text(base_value)}"
        colour = _delta_colour(value, base_value, better)
        shown = (
            f'<i style="color:{NEUTRAL};">pending…</i>'
            if value is None and pending
            else f"<b>{fig.text(value)}</b>"
        )
        parts.append(
            f'<tr><td style="padding: 1px 10px 1px 0; color:{NEUTRAL};">{shown_label}</td>'
            f'<td style="padding: 1px 10px 1px 0; text-align: right;">{shown}</td>'
            f'<td style="padding: 1px 10px 1px 0; color:{colour}; text-align: right;">{delta}</td>'
            f'<td style="color:{NEUTRAL};">{base_text}</td></tr>'
        )
    parts.append("</table>")
    parts.append(_speed_html(m))
    parts.append(_parity_html(m))
    if device is not None:
        parts.append(_device_html(device))
    lat = m.latency
    if pending:
        parts.append(
            f'<div style="color:{NEUTRAL}; margin-top: 4px;">measured so far; pending: '
            f"{html.escape(', '.join(_PENDING_NAMES.get(p, p) for p in progress.pending))}"
            "</div></div>"
        )
        return "".join(parts)
    if lat is None:  # a runtime that times nothing here (TFLite Micro)
        parts.append(
            f'<div class="edge-workbench-no-latency" style="color:{NEUTRAL}; margin-top: 4px;">'
            f"{html.escape(NO_LATENCY)}; accuracy and agreement on "
            f"{html.escape(m.agreement_basis)}</div>"
        )
    else:
        rounds = f" in {lat.rounds} interleaved rounds" if getattr(lat, "rounds", 1) > 1 else ""
        parts.append(
            f'<div style="color:{NEUTRAL}; margin-top: 4px;">latency over {lat.n} timed runs'
            f"{rounds} after {lat.warmup} warm-up, batch 1; accuracy and agreement on "
            f"{html.escape(m.agreement_basis)}</div>"
        )
    arena = getattr(m, "arena", None)
    if arena:
        parts.append(
            f'<div class="edge-workbench-arena" style="color:{NEUTRAL}; margin-top: 2px;">'
            f"tensor arena {format_bytes(arena['firmware_bytes'])} "
            f"({format_bytes(arena['activations_bytes'])} activations + "
            f"{format_bytes(arena['persistent_bytes'])} persistent), found by the TFLite Micro "
            f"interpreter; flash {format_bytes(arena['flash_bytes'])}</div>"
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
        f'margin-top: 6px;">measured on '
        f"{html.escape(environment_line(m.environment, getattr(m, 'delegation', None)))}</div>"
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
        progress: a ``workbench.results.Progress`` of the variant being measured: its
            figures so far are shown (the rest pending) instead of ``result``'s.
        remeasure_requests: counts clicks on ``remeasure_button`` ("Re-measure": time
            the shown variant again); the app observes it.
        device_status: a ``workbench.devices.view.DeviceStatus`` of ``result`` on the
            chosen target device (fits / headroom / deciding figure, its latency
            there), or None.
    """

    result = T.Any(None)
    baseline = T.Any(None)
    busy = T.Unicode("")
    error = T.Unicode("")
    progress = T.Any(None)
    remeasure_requests = T.Int(0)
    device_status = T.Any(None)

    def __init__(self, **kwargs) -> None:
        # Made first: traits given as arguments render the card, which sets its state.
        self.remeasure_button = W.Button(
            description="Re-measure",
            icon="refresh",
            tooltip="time this variant again (latency, memory, profile; nothing is rebuilt)",
            disabled=True,
            layout=W.Layout(width="auto"),
        )
        super().__init__(**kwargs)
        self.remeasure_button.on_click(self._on_remeasure)
        self._render()

    def _on_remeasure(self, _button: Any) -> None:
        self.remeasure_requests += 1

    @T.observe("result", "baseline", "busy", "error", "progress", "device_status")
    def _on_change(self, change: dict) -> None:
        self._render()

    def _render(self) -> None:
        self.value = card_html(
            self.result,
            self.baseline,
            busy=self.busy,
            error=self.error,
            progress=self.progress,
            device=self.device_status,
        )
        self.remeasure_button.disabled = self.result is None or bool(self.busy)
