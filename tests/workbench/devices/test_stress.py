"""Latency under stress: bounded, recorded beside the quiet figures, every helper cleaned up."""

from __future__ import annotations

import json

import psutil
import pytest

from workbench.devices import StressResult, measure_under_stress
from workbench.devices import stress as stress_module
from workbench.errors import WorkbenchError

FAST = {"warmup": 2, "min_runs": 20, "min_seconds": 0.05, "timeout": 30.0}


def _children() -> set[int]:
    return {
        c.pid
        for c in psutil.Process().children(recursive=True)
        if c.status() != psutil.STATUS_ZOMBIE
    }


def test_stress_records_quiet_cpu_and_memory_figures_and_leaves_no_child(cnn_baseline):
    before = _children()
    r = measure_under_stress(
        cnn_baseline.artifact,
        "raspberry-pi-zero-2w",
        cpu_processes=2,
        max_memory_bytes=64 << 20,
        **FAST,
    )
    assert _children() == before
    assert r.threads == min(4, len(psutil.Process().cpu_affinity()))
    assert r.cpu_processes == 2 and r.memory_held_bytes == 64 << 20
    for stats in (r.quiet, r.cpu, r.memory):
        assert stats.n >= 20 and stats.threads == r.threads and stats.p50 <= stats.p99
    assert r.slowdown("cpu", "p50") > 0
    assert StressResult.from_dict(r.to_dict()) == r
    assert "busy-loop" in r.basis


def test_the_memory_helper_really_holds_its_share():
    held = 48 << 20
    proc = stress_module._start(stress_module._HOLD, held, 20)
    try:
        stress_module._wait_ready(proc, 20)
        assert psutil.Process(proc.pid).memory_info().rss >= held
    finally:
        stress_module._stop([proc])
    assert proc.poll() is not None


def test_helpers_are_killed_when_the_measurement_fails(cnn_baseline, monkeypatch):
    from workbench.measure import runtime

    real = runtime.measure_latency
    started: list[int] = []
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the timing under CPU stress: helpers are running now
            started.extend(_children())
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "measure_latency", failing)
    before = _children()
    with pytest.raises(RuntimeError, match="interrupted"):
        measure_under_stress(
            cnn_baseline.artifact, "host", cpu_processes=2, max_memory_bytes=1 << 20, **FAST
        )
    assert len(set(started) - before) == 2
    assert _children() == before
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        for p in set(started) - before
    )


def test_helpers_end_by_themselves_at_their_deadline():
    proc = stress_module._start(stress_module._BUSY, 0.3)
    try:
        stress_module._wait_ready(proc, 20)
        assert proc.wait(timeout=10) == 0
    finally:
        stress_module._stop([proc])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"memory_share": 0.9}, "memory_share"),
        ({"memory_share": 0}, "memory_share"),
        ({"cpu_processes": 0}, "cpu_processes"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_stress_settings_are_refused_before_anything_starts(cnn_baseline, kwargs, match):
    before = _children()
    with pytest.raises(WorkbenchError, match=match):
        measure_under_stress(cnn_baseline.artifact, "host", **kwargs)
    assert _children() == before


def test_cli_stress_prints_the_three_figures_side_by_side(capsys, session_cache):
    from workbench.cli import main

    before = _children()
    code = main(
        [
            "stress",
            "digits-cnn",
            "--device",
            "raspberry-pi-4",
            "--cpu-processes",
            "1",
            "--memory-share",
            "0.005",
            "--json",
            "--no-profile",
            "--cache-dir",
            str(session_cache.root),
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["device"] == "raspberry-pi-4" and out["cpu_processes"] == 1
    assert {"quiet", "cpu", "memory"} <= set(out) and out["memory"]["n"] >= 100
    assert _children() == before


def test_cli_stress_bad_settings_exit_2_before_measuring(capsys):
    from workbench.cli import main

    assert main(["stress", "digits-cnn", "--memory-share", "0.9", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "memory_share" in err and len(err.strip().splitlines()) == 1
    assert main(["stress", "digits-cnn", "--device", "pi-9", "--no-cache"]) == 2
    assert "raspberry-pi-4" in capsys.readouterr().err
