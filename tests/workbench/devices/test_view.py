"""The app's device view, computed by the engine: fit lines, latency there, budget lines,
and the frontier within a device's budget."""

from __future__ import annotations

import pytest

from workbench.devices import get_device
from workbench.devices.view import (
    device_overlay,
    fit_line,
    frontier_within_budget,
    variant_status,
)
from workbench.errors import WorkbenchError
from workbench.formatting import format_ms
from workbench.study import Study, variant_table


def test_on_host_the_variant_fits_with_its_headroom_and_measured_latency(cnn_baseline):
    s = variant_status(cnn_baseline, "host")
    assert s.is_host and s.fits and s.variant_key == cnn_baseline.key
    share = s.fit.memory_headroom_bytes / s.fit.budget_bytes
    assert s.line == f"fits host: {share:.1%} headroom (decided by memory)"
    assert s.latency.kind == "measured" and s.latency.p50_ms == cnn_baseline.metrics.latency.p50
    assert "measured here" in s.latency_line


def test_on_another_device_latency_is_a_labelled_estimate_never_the_host_figure(cnn_baseline):
    s = variant_status(cnn_baseline, "raspberry-pi-4")
    assert not s.is_host and s.latency.is_estimate
    assert "estimate" in s.latency_line and "not measured" in s.latency_line
    assert "roofline" in s.latency_method
    # The figure shown is the estimate's bound, never the host's p50 (compared as the
    # whole number: "0.02" ms on the host is inside "0.0294").
    shown = s.latency_line.split()[1]
    assert shown == format_ms(s.latency.bound_ms).split()[0]
    assert s.latency.bound_ms != cnn_baseline.metrics.latency.p50


def test_the_deciding_figure_is_named_when_a_variant_does_not_fit(cnn_baseline, board):
    memory = cnn_baseline.metrics.memory.peak_bytes
    s = variant_status(cnn_baseline, board(ram_bytes=memory))  # budget 60% of it
    assert not s.fits and s.line.startswith("does not fit test-board: memory ")
    assert s.line.endswith("(decided by memory)") and "> budget" in s.line
    s = variant_status(cnn_baseline, board(storage_bytes=cnn_baseline.metrics.size_bytes - 1))
    assert not s.fits and "(decided by storage)" in s.line and "> storage" in s.line
    m4 = variant_status(cnn_baseline, "cortex-m4")
    assert not m4.fits and m4.line == fit_line(m4.fit) and "(decided by runtime)" in m4.line


def test_the_overlay_has_every_variant_and_the_budget_lines(cnn_baseline, cnn_int8):
    overlay = device_overlay([cnn_baseline, cnn_int8], "raspberry-pi-4")
    assert list(overlay.table.index) == [cnn_baseline.key, cnn_int8.key]
    assert overlay.table["fits"].all() and set(overlay.table["latency_kind"]) == {"estimate"}
    # Every latency column holds the bound (an estimate has no percentiles).
    row = overlay.table.loc[cnn_int8.key]
    assert row["latency_p50_ms"] == row["latency_p99_ms"] > 0
    memory = overlay.budget_for("peak_memory_bytes")
    assert memory.value == get_device("raspberry-pi-4").budget_bytes
    assert "memory budget" in memory.label and "60% of" in memory.label
    assert "storage" in overlay.budget_for("size_bytes").label
    assert overlay.budget_for("accuracy") is None
    assert overlay.replaces_latency and not device_overlay([cnn_int8], "host").replaces_latency


def test_the_frontier_within_a_budget_leaves_out_what_does_not_fit(cnn_baseline, cnn_int8, board):
    study = Study("digits-cnn", [cnn_baseline, cnn_int8])
    small = cnn_int8.metrics.size_bytes
    assert small < cnn_baseline.metrics.size_bytes
    # Storage room for the int8 file only: the float baseline does not fit.
    tight = board(storage_bytes=small)
    assert frontier_within_budget(study, tight) == [cnn_int8]
    # Where everything fits (host), it is the study's own frontier.
    assert frontier_within_budget(study, "host") == study.frontier()
    assert frontier_within_budget(study, "cortex-m4") == []  # nothing runs there yet


def test_the_variant_table_says_whether_each_variant_fits_the_device(cnn_baseline, cnn_int8):
    study = Study("digits-cnn", [cnn_baseline, cnn_int8])
    host = variant_table(study, device="host")
    assert {"fits", "fit"} <= set(host.columns) and "device_latency" not in host.columns
    assert host["fits"].all() and host["fit"].str.startswith("fits host: ").all()
    m4 = variant_table(study, device="cortex-m4")
    assert not m4["fits"].any()  # ONNX files: a microcontroller does not run the runtime
    assert m4["device_latency"].str.contains("estimate").all()
    assert list(m4.columns).index("fits") < list(m4.columns).index("warnings")
    assert "fits" not in variant_table(study).columns  # no device, no device columns
    with pytest.raises(WorkbenchError, match="unknown device 'toaster'"):
        variant_table(study, device="toaster")
