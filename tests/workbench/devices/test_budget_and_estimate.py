"""Fit against a device's memory budget and storage; latency measured on host, bounded elsewhere."""

from __future__ import annotations

import pytest

from workbench.devices import device_latency, fit, get_device
from workbench.devices.estimate import weight_bytes
from workbench.errors import WorkbenchError


def test_digits_cnn_fits_a_pi_4_with_the_headroom_stated(cnn_baseline):
    f = fit(cnn_baseline, "raspberry-pi-4")
    pi = get_device("raspberry-pi-4")
    peak = cnn_baseline.metrics.memory.peak_bytes
    assert f.fits and f.decided_by == "memory"
    assert f.budget_bytes == int(pi.ram_bytes * 0.6)
    assert f.memory_headroom_bytes == f.budget_bytes - peak
    assert f.storage_headroom_bytes == pi.storage_bytes - cnn_baseline.metrics.size_bytes
    assert f.runtime_note == ""
    assert "fits" in f.summary() and "headroom" in f.summary()


def test_memory_over_the_budget_does_not_fit(cnn_baseline, board):
    peak = cnn_baseline.metrics.memory.peak_bytes
    # Available memory such that 60% of it is 1 byte short of the measured peak.
    tight = board(ram_bytes=peak * 2, available_memory_bytes=int((peak - 1) / 0.6))
    f = fit(cnn_baseline, tight)
    assert not f.fits and f.decided_by == "memory" and f.memory_headroom_bytes < 0
    assert "does not fit" in f.summary()
    # The same device with a 0.7 budget has room.
    assert fit(cnn_baseline, tight, fraction=0.7).fits


def test_a_file_larger_than_storage_does_not_fit(cnn_baseline, board):
    f = fit(cnn_baseline, board(storage_bytes=cnn_baseline.metrics.size_bytes - 1))
    assert not f.fits and f.decided_by == "storage" and f.storage_headroom_bytes == -1


def test_onnx_runtime_does_not_run_on_a_microcontroller(cnn_int8):
    f = fit(cnn_int8, "cortex-m4")
    assert not f.fits and f.decided_by == "runtime"
    assert "ONNX Runtime does not run on a microcontroller" in f.runtime_note
    assert f.budget_bytes == int(256 * 1024 * 0.6)


def test_a_device_without_onnx_runtime_gets_figures_that_say_the_runtime_differs(
    cnn_baseline, board
):
    f = fit(cnn_baseline, board(runtimes=("litert",)))
    assert f.fits and "runtime differs" in f.runtime_note and "litert" in f.runtime_note
    lat = device_latency(cnn_baseline, board(runtimes=("litert",)))
    assert "runtime differs" in lat.note


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_a_memory_fraction_out_of_range_is_refused(cnn_baseline, fraction):
    with pytest.raises(WorkbenchError, match="memory fraction"):
        fit(cnn_baseline, "raspberry-pi-4", fraction=fraction)


def test_host_latency_is_the_measured_figure(cnn_baseline):
    lat = device_latency(cnn_baseline, "host")
    assert lat.kind == "measured" and not lat.is_estimate
    assert lat.p99_ms == cnn_baseline.metrics.latency.p99 and lat.gate_ms == lat.p99_ms
    assert "measured" in lat.label()


def test_other_devices_get_a_labelled_roofline_lower_bound(cnn_baseline):
    pi = get_device("raspberry-pi-4")
    lat = device_latency(cnn_baseline, pi)
    m = cnn_baseline.metrics
    wbytes, dtype = weight_bytes(cnn_baseline.artifact, m.size_bytes)
    assert dtype == "float32"
    # float weights: 4 bytes per weight element, and never more than the file
    assert m.params * 4 * 0.9 <= wbytes <= m.size_bytes
    assert lat.kind == "estimate" and lat.p99_ms is None
    assert lat.compute_ms == pytest.approx(m.macs / (pi.peak_fp32_gmacs * 1e9) * 1e3)
    assert lat.memory_ms == pytest.approx(wbytes / (pi.memory_bandwidth_gbps * 1e9) * 1e3)
    assert lat.bound_ms == max(lat.compute_ms, lat.memory_ms) == lat.gate_ms
    assert "estimate" in lat.label() and "roofline lower bound" in lat.method
    assert "class estimates" in lat.method  # the Pi's peak MAC rates are class estimates


def test_the_bound_includes_bytes_moved_not_only_macs(cnn_baseline, board):
    # Plenty of compute, little bandwidth: the weights' bytes decide the bound.
    slow_memory = board(peak_fp32_gmacs=1e6, peak_int8_gmacs=1e6, memory_bandwidth_gbps=0.001)
    lat = device_latency(cnn_baseline, slow_memory)
    assert lat.bound_by == "memory" and lat.bound_ms == lat.memory_ms > lat.compute_ms


def test_int8_weights_use_the_int8_rate_and_move_fewer_bytes(cnn_baseline, cnn_int8):
    pi = get_device("raspberry-pi-4")
    f32, i8 = device_latency(cnn_baseline, pi), device_latency(cnn_int8, pi)
    assert weight_bytes(cnn_int8.artifact)[1] == "int8"
    assert i8.compute_ms == pytest.approx(cnn_int8.metrics.macs / (pi.peak_int8_gmacs * 1e9) * 1e3)
    assert i8.memory_ms < f32.memory_ms / 3


def _measured_by_node(result, device: str):
    """``result`` as a Ray node labelled ``device`` returns it (cluster._label_node)."""
    import dataclasses

    node = {"hostname": "pi-node-1", "ray_node_id": "n1", "device": device}
    metrics = dataclasses.replace(
        result.metrics, environment={**result.metrics.environment, "node": node}
    )
    return dataclasses.replace(result, metrics=metrics)


def test_figures_from_a_device_labelled_node_are_that_devices_not_this_machines(cnn_baseline):
    on_pi = _measured_by_node(cnn_baseline, "raspberry-pi-4")
    # On the Pi: its own timing and memory, named with the node.
    lat = device_latency(on_pi, "raspberry-pi-4")
    assert lat.kind == "measured" and lat.p99_ms == on_pi.metrics.latency.p99
    assert "on raspberry-pi-4 (node pi-node-1)" in lat.method and "this machine" not in lat.method
    f = fit(on_pi, "raspberry-pi-4")
    assert f.memory_bytes == on_pi.metrics.memory.peak_bytes
    assert (
        f.memory_basis == "peak memory measured in ONNX Runtime on raspberry-pi-4 (node pi-node-1)"
    )
    # On this machine the Pi's timing is not a measurement: the labelled bound stands in.
    here = device_latency(on_pi, "host")
    assert here.kind == "estimate" and "roofline lower bound" in here.method
    # A variant measured here still says so, naming its runtime.
    assert (
        fit(cnn_baseline, "host").memory_basis
        == "peak memory measured in ONNX Runtime on this machine"
    )
    assert "measured in ONNX Runtime on this machine" in device_latency(cnn_baseline, "host").method
