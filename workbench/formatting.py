"""How the workbench writes a number for people: one formatter per unit.

Charts, tables, the metrics card, the report and the CLI all format through these,
so a figure reads the same everywhere ("0.123 ms", "1.23 MB", "97.2%", "×2.4 faster
than the baseline (×2.2–2.6 over 9 rounds)").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.results import SpeedComparison

__all__ = [
    "INTERLEAVED_NOTE",
    "format_bytes",
    "format_change",
    "format_count",
    "format_ms",
    "format_percent",
    "format_speedup",
    "is_missing",
    "speed_text",
    "versus_text",
]

# How a speed-up was measured, said wherever one is shown: both models timed in
# alternating rounds of one run, not two figures taken at different times.
INTERLEAVED_NOTE = "timed interleaved in one run"


def is_missing(value: Any) -> bool:
    """True for None and NaN: a figure that was not measured."""
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
    return "n/a" if is_missing(n) else _scaled(float(n), ("B", "kB", "MB", "GB"), " ")


def format_ms(ms: float | None) -> str:
    """Milliseconds to three significant digits: ``0.12345`` -> ``"0.123 ms"``."""
    if is_missing(ms):
        return "n/a"
    return f"{float(ms):.3g} ms"


def format_count(n: float | None) -> str:
    """A large count with an SI suffix: ``1234567`` -> ``"1.23M"``."""
    return "n/a" if is_missing(n) else _scaled(float(n), ("", "k", "M", "G"), "")


def format_change(value: float | None, base: float | None, kind: str = "ratio") -> str:
    """The one way the app writes a change against a reference value.

    ``kind="points"`` for fractions (accuracy, agreement): the difference in
    percentage points, ``(0.952, 0.95) -> "+0.2 pt"``. ``kind="ratio"`` for every other
    figure: the relative change in percent, one decimal below 10%, none above:
    ``(1.03, 1) -> "+3.0%"``, ``(10, 34) -> "-71%"``, ``(2, 1) -> "+100%"``,
    ``(5, 5) -> "+0.0%"``. "" when either value is missing (or a ratio's base is 0).
    """
    if is_missing(value) or is_missing(base):
        return ""
    value, base = float(value), float(base)
    if kind == "points":
        return f"{(value - base) * 100:+.1f} pt"
    if kind != "ratio":
        raise ValueError(f"kind must be 'ratio' or 'points', not {kind!r}")
    if base == 0:
        return ""
    pct = (value / base - 1) * 100
    return f"{pct:+.1f}%" if abs(pct) < 10 else f"{pct:+.0f}%"


def format_percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percent: ``0.9723`` -> ``"97.2%"``."""
    if is_missing(fraction):
        return "n/a"
    return f"{float(fraction) * 100:.{digits}f}%"


def _factor(v: float) -> str:
    # Two decimals near 1, where they matter ("×1.04"), one beyond ("×2.4").
    return f"{v:.2f}" if v < 2 else f"{v:.1f}"


def speed_text(c: SpeedComparison, versus: str = "") -> str:
    """A speed-up with its uncertainty: ``"×2.4 faster (×2.2–2.6 over 9 rounds)"``.

    The range is the middle half (25th-75th percentile) of the rounds' ratios;
    ``versus`` (e.g. "than the baseline") goes after "faster"/"slower".
    """
    versus = f" {versus}" if versus else ""
    if c.speedup >= 1:
        return (
            f"×{_factor(c.speedup)} faster{versus} (×{_factor(c.low)}–{_factor(c.high)} "
            f"over {c.rounds} rounds)"
        )
    slow, slow_low, slow_high = 1 / c.speedup, 1 / c.high, 1 / c.low
    return (
        f"×{_factor(slow)} slower{versus} (×{_factor(slow_low)}–{_factor(slow_high)} "
        f"over {c.rounds} rounds)"
    )


def versus_text(c: SpeedComparison) -> str:
    """Whom ``c`` compares with: "than the baseline" or "than its float version (...)"."""
    if c.reference == "float":
        return f"than its float version ({c.reference_recipe})"
    return "than the baseline"


def format_speedup(c: SpeedComparison) -> str:
    """The one line a measured speed-up is shown as, with its spread and how it was timed:
    ``"×2.4 faster than the baseline (×2.2–2.6 over 9 rounds), timed interleaved in one run"``.
    """
    return f"{speed_text(c, versus_text(c))}, {INTERLEAVED_NOTE}"
