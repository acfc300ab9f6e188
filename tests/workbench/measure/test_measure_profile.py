"""Per-operator time from ONNX Runtime's profiler."""

from __future__ import annotations

import os

from workbench.measure import measure_latency, profile_operators


def test_profile_lists_conv_and_gemm_within_the_latency(conv_linear, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    shape = (64, 1, 8, 8)  # a batch large enough that kernel times dwarf profiler overhead
    profile = profile_operators(conv_linear, shape, runs=10)
    assert any("Conv" in op for op in profile)
    assert any("Gemm" in op for op in profile)
    assert all(ms > 0 for ms in profile.values())
    assert list(profile.values()) == sorted(profile.values(), reverse=True)
    latency = measure_latency(conv_linear, shape, min_runs=20, min_seconds=0.05)
    # Two separate timings on a shared machine: they must agree in order of magnitude.
    assert sum(profile.values()) < latency.p90 * 3
    assert os.listdir(cwd) == []  # the profiler's JSON did not land in cwd


def test_warmup_runs_are_excluded():
    from workbench.measure.profile import _per_op_ms

    def node(ts, dur, op):
        return {
            "cat": "Node",
            "name": f"n_{op}_kernel_time",
            "ts": ts,
            "dur": dur,
            "args": {"op_name": op},
        }

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 1000},
        node(10, 900, "Conv"),  # warm-up: slow first run
        {"cat": "Session", "name": "model_run", "ts": 2000, "dur": 100},
        node(2010, 60, "Conv"),
        node(2070, 20, "Gemm"),
        {
            "cat": "Node",
            "name": "n_Conv_fence_before",
            "ts": 2005,
            "dur": 5,
            "args": {"op_name": "Conv"},
        },
        {"cat": "Session", "name": "model_run", "ts": 3000, "dur": 100},
        node(3010, 40, "Conv"),
        node(3070, 20, "Gemm"),
    ]
    assert _per_op_ms(events, warmup=1, runs=2) == {"Conv": 0.05, "Gemm": 0.02}
