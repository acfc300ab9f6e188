"""MetricsCard: its format helpers and what the card shows for a variant vs the baseline."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from widgets import MetricsCard
from widgets.metrics_card import point_delta, ratio_delta
from workbench.measure.environment import environment_line
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.results import LatencyStats, MemoryStats, Metrics, Result

ENV = {
    "cpu_model": "Test CPU 9000",
    "cpu_features": ["avx2", "vnni"],
    "int8_dot_product": True,
    "threads": 1,
    "usable_cores": 2,
    "onnxruntime": "1.99.0",
    "os": "Linux",
    "python": "3.11.9",
}


def result(recipe: Recipe, *, accuracy, p50, size, compressed, warnings=(), key="k") -> Result:
    """A Result with the given headline figures (the card only formats them)."""
    metrics = Metrics(
        accuracy=accuracy,
        agreement=0.99 if not recipe.is_baseline else 1.0,
        agreement_basis="540 digits test images",
        size_bytes=size,
        compressed_bytes=compressed,
        params=30_000,
        nonzero_params=15_000 if not recipe.is_baseline else 30_000,
        macs=1_500_000,
        latency=LatencyStats(
            p50=p50,
            p90=p50 * 1.2,
            p99=p50 * 1.5,
            mean=p50,
            min=p50 * 0.9,
            max=p50 * 2,
            n=200,
            warmup=10,
            threads=1,
        ),
        memory=MemoryStats(
            peak_bytes=2_000_000, process_peak_bytes=90_000_000, baseline_bytes=88_000_000
        ),
        environment=ENV,
    )
    return Result("digits-cnn", recipe, Path("model.onnx"), metrics, tuple(warnings), key)


@pytest.mark.parametrize(
    ("value", "base", "text"),
    [
        (10, 34, "-71%"),
        (2, 1, "+100%"),
        (1.03, 1, "+3.0%"),
        (0.96, 1, "-4.0%"),
        (1.002, 1, "+0.2%"),
        (5, 5, "+0.0%"),
        (None, 5, ""),
        (5, 0, ""),
    ],
)
def test_ratio_delta(value, base, text):
    assert ratio_delta(value, base) == text


def test_point_delta_and_environment_line():
    assert point_delta(0.952, 0.95) == "+0.2 pt"
    assert point_delta(0.90, 0.95) == "-5.0 pt"
    assert point_delta(None, 0.95) == ""
    line = environment_line(ENV)
    assert "Test CPU 9000" in line and "int8 dot product" in line
    assert "1 thread(s)" in line and "ONNX Runtime 1.99.0" in line
    assert environment_line({}) == "environment not recorded"


def test_card_shows_figures_deltas_warnings_and_environment():
    base = result(Recipe(), accuracy=0.97, p50=0.34, size=120_000, compressed=110_000, key="b")
    variant = result(
        Recipe.of(PruneConfig(method="unstructured", sparsity=0.5), QuantizeConfig(scheme="int8")),
        accuracy=0.968,
        p50=0.10,
        size=32_000,
        compressed=20_000,
        warnings=("Unstructured pruning gives no latency gain <here>.",),
        key="v",
    )
    card = MetricsCard()
    assert "No variant measured yet" in card.value
    card.baseline = base
    card.result = variant
    html = card.value
    assert "prune-unstructured-0.5+int8-minmax-pc" in html
    assert "96.80%" in html and "-0.2 pt" in html  # accuracy and its change
    assert "0.1 ms" in html and "-71%" in html  # latency p50: 0.34 -> 0.10
    assert "32 kB" in html and "-73%" in html  # size
    assert "20 kB" in html and "-82%" in html  # compressed size
    # One delta format across the card: a signed percent, or signed points for fractions.
    deltas = re.findall(r'text-align: right;">([^<]*)</td><td', html)
    assert deltas and all(re.fullmatch(r"[+-]\d+(\.\d)?( pt|%)", d) for d in deltas), deltas
    assert "from 120 kB" in html
    assert "Unstructured pruning gives no latency gain &lt;here&gt;." in html  # escaped
    assert "Test CPU 9000" in html and "ONNX Runtime 1.99.0" in html
    assert "200 timed runs" in html


def test_card_busy_dims_the_previous_figures_and_shows_errors():
    card = MetricsCard()
    card.result = result(Recipe(), accuracy=0.97, p50=0.3, size=1, compressed=1)
    card.busy = "measuring int8-minmax-pc..."
    assert "opacity: 0.55" in card.value and "measuring int8-minmax-pc..." in card.value
    card.busy = ""
    assert "opacity: 0.55" not in card.value and "edge-workbench-busy" not in card.value
    card.error = "int8 could not be measured: boom"
    assert "int8 could not be measured: boom" in card.value
    # The baseline shown alone: no deltas against itself.
    assert "from " not in card.value


def device_status(key: str, *, device: str, fits: bool) -> SimpleNamespace:
    """A stand-in for workbench.devices.view.DeviceStatus (the card only shows it)."""
    line = (
        f"fits {device}: 99.5% headroom (decided by memory)"
        if fits
        else f"does not fit {device}: memory 2 MB > budget 154 kB (decided by memory)"
    )
    return SimpleNamespace(
        device=device,
        is_host=device == "host",
        fits=fits,
        line=line,
        detail=f"{device}: budgets and headrooms <both>",
        latency_line=">= 0.0294 ms (estimate: roofline lower bound, memory-bound; not measured)",
        latency_method="roofline lower bound: max(MACs / peak ..., weight bytes / bandwidth)",
        variant_key=key,
    )


def test_card_says_whether_the_variant_fits_the_chosen_device():
    card = MetricsCard()
    card.result = result(Recipe(), accuracy=0.97, p50=0.3, size=1, compressed=1, key="b")
    assert "edge-workbench-device" not in card.value  # no device chosen
    card.device_status = device_status("b", device="host", fits=True)
    html = card.value
    assert "fits host: 99.5% headroom (decided by memory)" in html
    assert "&lt;both&gt;" in html  # the detail, escaped
    # On this machine the measured latency is the device's: no estimate, no relabelling.
    assert "latency on host" not in html and "(this machine)" not in html
    card.device_status = device_status("b", device="cortex-m4", fits=False)
    html = card.value
    assert "does not fit cortex-m4: memory 2 MB &gt; budget 154 kB (decided by memory)" in html
    # Elsewhere this machine's latency is labelled as such, and the device's is the estimate.
    assert "latency p50 (this machine)" in html
    assert "latency on cortex-m4: <b>&gt;= 0.0294 ms (estimate: roofline lower bound" in html
    # A status about another variant is not shown for this one.
    card.device_status = device_status("other", device="cortex-m4", fits=False)
    assert "edge-workbench-device" not in card.value and "(this machine)" not in card.value
