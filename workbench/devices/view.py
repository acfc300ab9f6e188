"""What the app shows for a chosen target device: fit, budget lines, latency, frontier.

The engine side of the app's device selector (the widgets only show it):

- :func:`variant_status`: one variant on one device, for the metrics card: fits /
  does not fit, the headroom left, the deciding figure, and its latency there
  (measured on ``host``, imported from the device runner, or a labelled roofline
  lower bound; never a host figure passed off as the device's).
- :func:`device_overlay`: every variant of a study on one device, for the trade-off
  chart: which fit (and the figure that decided it), the budget lines of the axes that
  are sizes (memory budget on peak memory, storage on the file size), and the device's
  latency figures for the latency axes.
- :func:`frontier_within_budget`: the Pareto frontier of the variants that fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbench.cache import Cache
from workbench.devices.budget import Fit, fit, measured_on
from workbench.devices.estimate import LatencyFigure, device_latency
from workbench.devices.profile import DeviceProfile
from workbench.devices.registry import HOST, get_device
from workbench.formatting import format_bytes, format_ms
from workbench.results import Result

__all__ = [
    "LATENCY_COLUMNS",
    "BudgetLine",
    "DeviceOverlay",
    "DeviceStatus",
    "device_overlay",
    "fit_line",
    "frontier_within_budget",
    "variant_status",
]

# The latency columns of Study.to_dataframe() and the device figure each stands for.
LATENCY_COLUMNS = {"latency_p50_ms": "p50", "latency_p90_ms": "p90", "latency_p99_ms": "p99"}


def fit_line(f: Fit) -> str:
    """One line for a person: ``fits raspberry-pi-4: 99.8% headroom (decided by memory)``
    or ``does not fit cortex-m4: memory 5.2 MB > budget 154 kB (decided by memory)``."""
    if f.fits:
        if f.decided_by == "storage":
            share = f.storage_headroom_bytes / f.storage_bytes
        else:
            share = f.memory_headroom_bytes / f.budget_bytes
        return f"fits {f.device}: {share:.1%} headroom (decided by {f.decided_by})"
    if f.decided_by == "runtime":
        # The note's first clause; the card gives the whole of it below the line.
        why = f.runtime_note.split(": ", 1)[0] or "the device does not run the artifact's runtime"
    elif f.decided_by == "storage":
        why = f"file {format_bytes(f.file_bytes)} > storage {format_bytes(f.storage_bytes)}"
    else:
        why = (
            f"memory {format_bytes(f.memory_bytes)} > budget {format_bytes(f.budget_bytes)} "
            f"({f.budget_fraction:.0%} of {format_bytes(f.available_bytes)})"
        )
    return f"does not fit {f.device}: {why} (decided by {f.decided_by})"


def _latency_text(lat: LatencyFigure) -> str:
    if lat.is_estimate:
        return (
            f">= {format_ms(lat.bound_ms)} (estimate: roofline lower bound, "
            f"{lat.bound_by}-bound; not measured)"
        )
    where = "measured here" if lat.device == HOST else f"measured on {lat.device}"
    return f"p50 {format_ms(lat.p50_ms)}, p99 {format_ms(lat.p99_ms)} ({where})"


@dataclass(frozen=True)
class DeviceStatus:
    """One variant on one device, as the metrics card shows it."""

    device: str
    is_host: bool
    fit: Fit
    line: str  # fit_line(fit)
    detail: str  # fit.summary(): both figures, budgets and headrooms
    latency: LatencyFigure
    latency_line: str  # the latency there, labelled measured or estimate
    latency_method: str  # how that figure was obtained
    variant_key: str = ""  # the cache key of the variant it is about

    @property
    def fits(self) -> bool:
        return self.fit.fits


def variant_status(
    result: Result, device: str | DeviceProfile, cache: Cache | None = None
) -> DeviceStatus:
    """Whether ``result`` fits ``device`` and its latency there, in words for the card.

    Args:
        cache: where device-runner measurements were imported (``workbench import``);
            the device's own figures replace the estimate and this machine's memory.
    """
    device = get_device(device)
    f = fit(result, device, cache=cache)
    lat = device_latency(result, device, cache=cache)
    return DeviceStatus(
        device=device.name,
        is_host=device.name == HOST,
        fit=f,
        line=fit_line(f),
        detail=f.summary(),
        latency=lat,
        latency_line=_latency_text(lat),
        latency_method=lat.method + (f"; {lat.note}" if lat.note else ""),
        variant_key=result.key,
    )


@dataclass(frozen=True)
class BudgetLine:
    """A limit drawn on a chart axis that is a size."""

    column: str  # the Study.to_dataframe() column it bounds
    value: float  # bytes
    label: str  # e.g. "memory budget 2.46 GB (60% of 4.1 GB)"


@dataclass(frozen=True)
class DeviceOverlay:
    """Every variant of a study on one device, for the trade-off chart.

    ``table`` has one row per variant key: ``fits`` (bool), ``fit_text`` (fit_line),
    ``decided_by``, ``latency_kind`` ("measured" or "estimate"), ``latency_text``, and
    the device's latency figures under the LATENCY_COLUMNS names (measured p50/p90/p99
    there, or the roofline bound for each).
    """

    device: str
    is_host: bool
    budget_lines: tuple[BudgetLine, ...]
    table: pd.DataFrame = field(repr=False)

    def budget_for(self, column: str) -> BudgetLine | None:
        """The budget line of ``column``'s axis, if it has one."""
        return next((b for b in self.budget_lines if b.column == column), None)

    @property
    def replaces_latency(self) -> bool:
        """Latency axes show the device's figures, not this machine's."""
        return not self.is_host


def _budget_lines(device: DeviceProfile) -> tuple[BudgetLine, ...]:
    storage = "flash" if device.kind == "microcontroller" else "storage"
    return (
        BudgetLine(
            "peak_memory_bytes",
            float(device.budget_bytes),
            f"{device.name} memory budget {format_bytes(device.budget_bytes)} "
            f"({device.memory_budget_fraction:.0%} of {format_bytes(device.available_bytes)})",
        ),
        BudgetLine(
            "size_bytes",
            float(device.storage_bytes),
            f"{device.name} {storage} {format_bytes(device.storage_bytes)}",
        ),
    )


def _row(result: Result, device: DeviceProfile, cache: Cache | None) -> dict[str, Any]:
    status = variant_status(result, device, cache)
    lat = status.latency
    row = {
        "key": result.key,
        "fits": status.fits,
        "fit_text": status.line,
        "decided_by": status.fit.decided_by,
        "latency_kind": lat.kind,
        "latency_text": status.latency_line,
    }
    for column, which in LATENCY_COLUMNS.items():
        row[column] = lat.bound_ms if lat.is_estimate else getattr(lat, f"{which}_ms", None)
    if not lat.is_estimate and row["latency_p90_ms"] is None:  # LatencyFigure has p50, p99
        row["latency_p90_ms"] = _measured_p90(result, device, cache)
    return row


def _measured_p90(result: Result, device: DeviceProfile, cache: Cache | None) -> float | None:
    if device.name == measured_on(result)[0]:  # its own figures were timed there
        return result.metrics.latency.p90
    from workbench.devices.imported import find_measurement

    m = find_measurement(result.artifact, device.name, cache)
    return m.latency.p90 if m is not None else None


def device_overlay(
    results: Iterable[Result], device: str | DeviceProfile, cache: Cache | None = None
) -> DeviceOverlay:
    """Fit, latency and budget lines of every variant in ``results`` on ``device``."""
    device = get_device(device)
    rows = [_row(r, device, cache) for r in results]
    columns = ["key", "fits", "fit_text", "decided_by", "latency_kind", "latency_text"]
    table = pd.DataFrame(rows, columns=[*columns, *LATENCY_COLUMNS]).set_index("key")
    return DeviceOverlay(
        device=device.name,
        is_host=device.name == HOST,
        budget_lines=_budget_lines(device),
        table=table,
    )


def frontier_within_budget(
    study: Any,
    device: str | DeviceProfile,
    objectives: dict[str, str] | None = None,
    cache: Cache | None = None,
) -> list[Result]:
    """The Pareto frontier over ``objectives`` (default the study's) of the variants
    that fit ``device``; on a device other than ``host`` latency objectives use the
    device's figures (imported measurements, else the roofline lower bound).

    Variants measured on different machines are compared within their machine, as in
    ``Study.frontier``.
    """
    from workbench.study import machine_of, pareto_mask, result_row

    objectives = study.objectives_used(objectives)
    overlay = device_overlay(study.results, device, cache)
    out: list[Result] = []
    for machine in study.machines():
        mine = [
            r
            for r in study.results
            if machine_of(r) == machine and bool(overlay.table.loc[r.key, "fits"])
        ]
        if not mine:
            continue
        df = pd.DataFrame([result_row(r) for r in mine])
        if overlay.replaces_latency:
            for column in LATENCY_COLUMNS:
                df[column] = [overlay.table.loc[r.key, column] for r in mine]
        keep = pareto_mask(df, objectives)
        out += [r for r, k in zip(mine, keep, strict=True) if k]
    return [r for r in study.results if any(r is o for o in out)]
