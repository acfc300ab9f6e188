"""The CI gate: check measured variants against thresholds on each target device.

Each (variant, device) pair gets one check per threshold:

- ``memory``: the variant fits the device (its measured peak memory within
  ``max_memory_fraction`` of the available memory, by default the profile's own 50-70%
  budget, and its file within the storage). Always checked.
- ``latency_p99``: the p99 latency is at most ``max_latency_p99_ms``. On ``host`` the
  measured p99 is compared. On any other device only a roofline *lower bound* exists:
  when even the bound misses the threshold the check fails; when the bound is within
  it the check is ``unverified`` (a lower bound cannot show that the real latency is
  low enough), which fails the gate unless ``accept_estimates`` is set. Fail closed.
- ``accuracy_drop``: top-1 accuracy lost against the baseline, in points, is at most
  ``max_accuracy_drop`` (the same artifact runs everywhere, so it is the same figure
  for every device).

The gate passes (exit status 0) when every check passes; otherwise 1.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from workbench.cache import Cache
from workbench.charts import format_bytes
from workbench.devices.budget import fit
from workbench.devices.estimate import device_latency
from workbench.devices.profile import DeviceProfile
from workbench.devices.registry import get_device, profiles_from_toml, read_toml, register_device
from workbench.errors import WorkbenchError
from workbench.results import Result

__all__ = [
    "GateCheck",
    "GateConfig",
    "GateReport",
    "GateThresholds",
    "device_matrix",
    "load_gate_config",
    "parse_device_names",
    "run_gate",
    "study_device_record",
]

PASS, FAIL, UNVERIFIED = "pass", "fail", "unverified"


@dataclass(frozen=True)
class GateThresholds:
    """What a variant must meet on every device; None leaves a threshold out."""

    max_latency_p99_ms: float | None = None  # milliseconds, > 0
    max_memory_fraction: float | None = (
        None  # of available memory, 0 < F <= 1; None: profile's budget
    )
    max_accuracy_drop: float | None = None  # top-1 points against the baseline, 0 to 100
    accept_estimates: bool = False  # let a latency lower bound within the threshold pass

    def __post_init__(self) -> None:
        _check_number(
            "max_latency_p99_ms",
            self.max_latency_p99_ms,
            0,
            math.inf,
            "--max-latency-p99",
            "a number of milliseconds above 0",
            lo_open=True,
        )
        _check_number(
            "max_memory_fraction",
            self.max_memory_fraction,
            0,
            1,
            "--max-memory-fraction",
            "a fraction above 0 and at most 1 (the guide's rule: 0.5 to 0.7)",
            lo_open=True,
        )
        _check_number(
            "max_accuracy_drop",
            self.max_accuracy_drop,
            0,
            100,
            "--max-accuracy-drop",
            "points from 0 to 100",
        )
        if not isinstance(self.accept_estimates, bool):
            raise WorkbenchError(
                f"accept_estimates is {self.accept_estimates!r}",
                "write accept_estimates = true or false",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_number(
    name: str, value: Any, lo: float, hi: float, flag: str, what: str, lo_open: bool = False
) -> None:
    if value is None:
        return
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value > lo if lo_open else value >= lo)
        and value <= hi
    )
    if not ok:
        raise WorkbenchError(f"{flag} / {name} {value!r} is out of range", f"give {what}")


@dataclass(frozen=True)
class GateConfig:
    """A gate file's contents: the thresholds, the device names, the user's own profiles."""

    thresholds: GateThresholds
    devices: tuple[str, ...]
    profiles: tuple[DeviceProfile, ...]


_GATE_KEYS = {f.name for f in fields(GateThresholds)} | {"devices"}


def load_gate_config(path: Any) -> GateConfig:
    """Read a gate file (TOML): a ``[gate]`` table and optional ``[[device]]`` profiles.

    ``[gate]`` may hold ``devices = [...]``, ``max_latency_p99_ms``,
    ``max_memory_fraction``, ``max_accuracy_drop`` and ``accept_estimates``. Nothing in
    the file is executed; an unknown key or a value out of range is named.
    """
    data = read_toml(path)
    extra = sorted(set(data) - {"gate", "device"})
    if extra:
        raise WorkbenchError(
            f"{path}: unknown table [{extra[0]}]", "use [gate] and [[device]] tables"
        )
    gate = data.get("gate", {})
    if not isinstance(gate, dict):
        raise WorkbenchError(
            f"{path}: 'gate' must be a [gate] table", "write [gate] followed by key = value lines"
        )
    unknown = sorted(set(gate) - _GATE_KEYS)
    if unknown:
        raise WorkbenchError(
            f"{path}: unknown key {unknown[0]!r} in [gate]", f"use: {', '.join(sorted(_GATE_KEYS))}"
        )
    devices = gate.get("devices", [])
    if (
        isinstance(devices, str)
        or not isinstance(devices, list)
        or not all(isinstance(d, str) for d in devices)
    ):
        raise WorkbenchError(
            f"{path}: [gate] devices must be a list of names",
            'write devices = ["host", "raspberry-pi-4"]',
        )
    try:
        thresholds = GateThresholds(**{k: v for k, v in gate.items() if k != "devices"})
    except WorkbenchError as e:
        raise WorkbenchError(f"{path}: {e.problem}", e.fix) from None
    return GateConfig(thresholds, tuple(devices), tuple(profiles_from_toml(data, str(path))))


@dataclass(frozen=True)
class GateCheck:
    """One threshold on one device for one variant, with the figure that decided it."""

    variant: str
    device: str
    threshold: str  # "memory", "latency_p99" or "accuracy_drop"
    status: str  # "pass", "fail" or "unverified"
    value: float | None  # the figure compared (bytes, ms or points)
    limit: float | None  # what it was compared with
    figure: str  # the deciding figure in words, e.g. "p99 0.06 ms (measured) <= 5 ms"
    basis: str = ""  # how the figure was obtained

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


@dataclass(frozen=True)
class GateReport:
    """Every check of a gate run, as a variants x devices matrix."""

    model: str
    variants: tuple[str, ...]
    devices: tuple[str, ...]
    thresholds: GateThresholds
    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every threshold holds, 1 when one is missed (or not verified)."""
        return 0 if self.passed else 1

    def cell(self, variant: str, device: str) -> str:
        """The matrix cell: pass/FAIL with the deciding figure."""
        mine = [c for c in self.checks if c.variant == variant and c.device == device]
        bad = [c for c in mine if c.status == FAIL] or [c for c in mine if c.status == UNVERIFIED]
        if bad:
            word = "FAIL" if bad[0].status == FAIL else "UNVERIFIED"
            return f"{word} {bad[0].threshold}: {bad[0].figure}"
        return "pass: " + "; ".join(c.figure for c in mine)

    def passed_cell(self, variant: str, device: str) -> bool:
        """Whether every check of ``variant`` on ``device`` passed."""
        return all(c.passed for c in self.checks if c.variant == variant and c.device == device)

    def grid(self) -> str:
        """The variants x devices table at a glance: pass, or the first threshold missed."""
        heads = ["variant", *self.devices]
        rows = []
        for variant in self.variants:
            row = [variant]
            for device in self.devices:
                cell = self.cell(variant, device)
                row.append("pass" if cell.startswith("pass") else cell.split(":", 1)[0])
            rows.append(row)
        widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
        return "\n".join(
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
            for r in [heads, *rows]
        )

    def table(self) -> str:
        """Variants x devices: the grid at a glance, then one block per device with the
        deciding figures, then a one-line verdict."""
        lines = [
            f"workbench check {self.model}: {len(self.variants)} variant(s) x {len(self.devices)} device(s)",
            "",
            self.grid(),
        ]
        width = max(len(v) for v in self.variants)
        for device in self.devices:
            lines.append(f"\n{device}")
            for variant in self.variants:
                lines.append(f"  {variant:<{width}}  {self.cell(variant, device)}")
        failed = sum(c.status == FAIL for c in self.checks)
        unverified = sum(c.status == UNVERIFIED for c in self.checks)
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(
            f"\n{verdict}: {len(self.checks) - failed - unverified} of {len(self.checks)} checks passed"
            + (f", {failed} failed" if failed else "")
            + (
                f", {unverified} unverified (a roofline lower bound cannot prove a latency threshold "
                "holds on a device; measure there, or pass --accept-estimates)"
                if unverified
                else ""
            )
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "variants": list(self.variants),
            "devices": list(self.devices),
            "thresholds": self.thresholds.to_dict(),
            "matrix": {v: {d: self.cell(v, d) for d in self.devices} for v in self.variants},
            "passed_matrix": {
                v: {d: self.passed_cell(v, d) for d in self.devices} for v in self.variants
            },
            "checks": [c.to_dict() for c in self.checks],
        }

    def junit_xml(self) -> str:
        """JUnit XML: one test case per threshold, device and variant; misses are failures."""
        failures = sum(not c.passed for c in self.checks)
        suites = ET.Element(
            "testsuites",
            name="workbench check",
            tests=str(len(self.checks)),
            failures=str(failures),
        )
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"workbench check {self.model}",
            tests=str(len(self.checks)),
            failures=str(failures),
            errors="0",
            skipped="0",
        )
        for c in self.checks:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{self.model}.{c.variant}",
                name=f"{c.device}: {c.threshold}",
            )
            if not c.passed:
                fail = ET.SubElement(
                    case, "failure", message=f"{c.status}: {c.figure}", type=c.status
                )
                fail.text = c.basis
            elif c.basis:
                ET.SubElement(case, "system-out").text = f"{c.figure} ({c.basis})"
        ET.indent(suites)
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            + ET.tostring(suites, encoding="unicode")
            + "\n"
        )


def _memory_check(
    result: Result, variant: str, device: DeviceProfile, t: GateThresholds, cache: Cache | None
) -> GateCheck:
    f = fit(result, device, fraction=t.max_memory_fraction, cache=cache)
    if f.decided_by == "runtime" and not f.fits:
        figure = f"does not fit: {f.runtime_note}"
    elif f.decided_by == "storage" and not f.fits:
        figure = f"file {format_bytes(f.file_bytes)} > storage {format_bytes(f.storage_bytes)}"
    else:
        sign = "<=" if f.memory_headroom_bytes >= 0 else ">"
        figure = (
            f"memory {format_bytes(f.memory_bytes)} {sign} budget {format_bytes(f.budget_bytes)} "
            f"({f.budget_fraction:.0%}), headroom {format_bytes(f.memory_headroom_bytes)}"
        )
    basis = f.memory_basis + (
        f"; {f.runtime_note}" if f.runtime_note and f.decided_by != "runtime" else ""
    )
    return GateCheck(
        variant,
        device.name,
        "memory",
        PASS if f.fits else FAIL,
        f.memory_bytes,
        f.budget_bytes,
        figure,
        basis,
    )


def _latency_check(
    result: Result, variant: str, device: DeviceProfile, t: GateThresholds, cache: Cache | None
) -> GateCheck:
    limit = t.max_latency_p99_ms
    lat = device_latency(result, device, cache=cache)
    value = lat.gate_ms
    basis = lat.method + (f"; {lat.note}" if lat.note else "")
    if not lat.is_estimate:
        status = PASS if value <= limit else FAIL
        where = "measured" if device.name == "host" else f"measured on {device.name}"
        figure = f"p99 {value:.3g} ms ({where}) {'<=' if status == PASS else '>'} {limit:g} ms"
    elif value > limit:
        status = FAIL
        figure = f"lower bound {value:.3g} ms (estimate) > {limit:g} ms"
    else:
        status = PASS if t.accept_estimates else UNVERIFIED
        figure = f"lower bound {value:.3g} ms (estimate, not measured) <= {limit:g} ms"
    return GateCheck(variant, device.name, "latency_p99", status, value, limit, figure, basis)


def _accuracy_check(
    result: Result, baseline: Result, variant: str, device: DeviceProfile, t: GateThresholds
) -> GateCheck:
    limit = t.max_accuracy_drop
    acc, base = result.metrics.accuracy, baseline.metrics.accuracy
    if acc is None or base is None:
        return GateCheck(
            variant,
            device.name,
            "accuracy_drop",
            UNVERIFIED,
            None,
            limit,
            "no accuracy: the model has no labelled task",
            "load the model with a task to check accuracy",
        )
    drop = (base - acc) * 100
    status = PASS if drop <= limit else FAIL
    figure = f"drop {drop:.2f} pt ({acc:.2%} vs baseline {base:.2%}) {'<=' if status == PASS else '>'} {limit:g} pt"
    return GateCheck(
        variant,
        device.name,
        "accuracy_drop",
        status,
        drop,
        limit,
        figure,
        result.metrics.agreement_basis,
    )


def run_gate(
    results: Sequence[Result],
    devices: Sequence[str | DeviceProfile],
    thresholds: GateThresholds,
    *,
    baseline: Result | None = None,
    model: str | None = None,
    cache: Cache | None = None,
) -> GateReport:
    """Check every measured variant against ``thresholds`` on every device.

    Args:
        results: the variants, measured by ``evaluate``.
        devices: profiles or registered names.
        baseline: what accuracy drops are measured from; default the first result.
        cache: where device-runner measurements were imported; a device's own figures
            replace the estimate (latency) and this machine's figure (memory).
    """
    if not results:
        raise WorkbenchError("the gate has no variants to check", "evaluate at least the baseline")
    if not devices:
        raise WorkbenchError(
            "the gate has no device to check against", "give --device NAME (e.g. host)"
        )
    profiles = [get_device(d) for d in devices]
    baseline = baseline or results[0]
    checks: list[GateCheck] = []
    names = [r.name for r in results]  # as the study's rows name them (Result.name)
    for result, variant in zip(results, names, strict=True):
        for device in profiles:
            checks.append(_memory_check(result, variant, device, thresholds, cache))
            if thresholds.max_latency_p99_ms is not None:
                checks.append(_latency_check(result, variant, device, thresholds, cache))
            if thresholds.max_accuracy_drop is not None:
                checks.append(_accuracy_check(result, baseline, variant, device, thresholds))
    return GateReport(
        model=model or results[0].model,
        variants=tuple(names),
        devices=tuple(p.name for p in profiles),
        thresholds=thresholds,
        checks=tuple(checks),
    )


def device_matrix(
    results: Sequence[Result],
    devices: Sequence[str | DeviceProfile],
    *,
    thresholds: GateThresholds | None = None,
    baseline: Result | None = None,
    model: str | None = None,
    cache: Cache | None = None,
) -> GateReport:
    """Variants x devices: whether each variant fits each device (memory budget and
    storage, with the deciding figure), and meets ``thresholds`` where given. A sweep's
    device matrix is this with no thresholds; ``workbench check``'s is ``run_gate``."""
    return run_gate(
        results,
        devices,
        thresholds or GateThresholds(),
        baseline=baseline,
        model=model,
        cache=cache,
    )


def study_device_record(
    study: Any,
    devices: Sequence[str | DeviceProfile],
    objectives: dict[str, str] | None = None,
    *,
    cache: Cache | None = None,
) -> tuple[GateReport, dict[str, Any]]:
    """A study's device matrix and, per device, its frontier within the device's budget.

    Returns the report and a JSON-ready record for ``Study.save(devices=...)`` and
    ``Study.to_csv(devices=...)``: ``{"matrix": report.to_dict(), "frontiers": {device:
    {"objectives": ..., "keys": [...], "recipes": [...]}}}``.
    """
    from workbench.devices.view import frontier_within_budget

    report = device_matrix(
        study.results, devices, baseline=study.baseline, model=study.model, cache=cache
    )
    used = study.objectives_used(objectives)
    frontiers = {}
    for name in report.devices:
        front = frontier_within_budget(study, name, objectives, cache)
        frontiers[name] = {
            "objectives": used,
            "keys": [r.key for r in front],
            "recipes": [r.name for r in front],
        }
    return report, {"matrix": report.to_dict(), "frontiers": frontiers}


def parse_device_names(values: Sequence[str] | str | None, flag: str = "--device") -> list[str]:
    """Device names from ``--device a,b --device c`` (comma-separated and/or repeated),
    in order, each once; a value naming no device is one clear error."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    names = []
    for value in values:
        parts = [n.strip() for n in value.split(",")]
        if not any(parts):
            raise WorkbenchError(
                f"{flag} {value!r} names no device", f"give names, e.g. {flag} host,raspberry-pi-4"
            )
        names += [n for n in parts if n]
    return list(dict.fromkeys(names))


def register_config_profiles(config: GateConfig) -> None:
    """Add a gate file's own ``[[device]]`` profiles to the registry."""
    for p in config.profiles:
        register_device(p, replace=True)
