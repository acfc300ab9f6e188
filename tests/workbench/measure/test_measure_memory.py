"""Peak memory measured in a fresh worker process."""

from __future__ import annotations

import sys
import time

import pytest

from workbench.errors import WorkbenchError
from workbench.measure import measure_memory
from workbench.measure import memory as memory_module

WEIGHTS_MB = 40  # Linear(1000 -> 10000) in float32


def test_big_initializer_costs_about_its_size(tmp_path, models):
    tiny = models.write_linear(tmp_path / "tiny.onnx", 10, 10)
    big = models.write_linear(tmp_path / "big.onnx", 1000, 10_000)
    t0 = time.perf_counter()
    small_stats = measure_memory(tiny)
    worker_s = time.perf_counter() - t0
    big_stats = measure_memory(big, (1, 1000))
    extra_mb = (big_stats.peak_bytes - small_stats.peak_bytes) / 1e6
    # ORT holds the weights at least once; while the session is built the file's
    # protobuf copy is alive too, so up to about twice (+ pre-packing headroom).
    assert WEIGHTS_MB * 0.9 < extra_mb < WEIGHTS_MB * 3
    for s in (small_stats, big_stats):
        assert s.peak_bytes == s.process_peak_bytes - s.baseline_bytes
        assert s.baseline_bytes > 10e6  # the interpreter with numpy and onnxruntime
    assert small_stats.peak_bytes < 30e6
    print(f"memory worker: {worker_s:.2f} s")  # run for every variant


def test_worker_reports_bad_input_as_workbench_error(tmp_path, conv_linear):
    with pytest.raises(
        WorkbenchError, match=r"expects input of shape \[N,1,8,8\] but got \[1,3,8,8\]"
    ):
        measure_memory(conv_linear, (1, 3, 8, 8))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(WorkbenchError, match="not a loadable ONNX model"):
        measure_memory(bad)


def test_worker_crash_shows_its_stderr(conv_linear, monkeypatch):
    crash = "import sys; sys.stderr.write('worker exploded: xyz'); sys.exit(3)"
    monkeypatch.setattr(
        memory_module, "_worker_command", lambda args: [sys.executable, "-c", crash]
    )
    with pytest.raises(WorkbenchError, match=r"exit status 3\): worker exploded: xyz"):
        measure_memory(conv_linear)


def test_worker_timeout(conv_linear, monkeypatch):
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    monkeypatch.setattr(memory_module, "_worker_command", lambda args: sleep)
    with pytest.raises(WorkbenchError, match="took longer than 0.5 s"):
        measure_memory(conv_linear, timeout=0.5)
