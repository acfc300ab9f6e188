"""Latency under stress: the same timing with busy background processes, and under memory pressure.

The guide asks for tests under stress: other processes competing for the CPU, and
memory taken by the rest of the system. Both are made here, on this machine, with the
device's thread count: N busy-loop processes, then one process holding a set share of
the available RAM. Every helper process has its own deadline (it exits by itself even
if this process dies) and is killed and reaped when the measurement ends, however it
ends.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from workbench.devices.profile import DeviceProfile
from workbench.devices.registry import get_device
from workbench.errors import WorkbenchError
from workbench.results import LatencyStats

__all__ = ["MAX_MEMORY_SHARE", "StressResult", "check_stress_settings", "measure_under_stress"]

# More than half the available RAM would risk the machine itself (the OOM killer picks
# whoever it likes): the pressure is bounded.
MAX_MEMORY_SHARE = 0.5
DEFAULT_MEMORY_SHARE = 0.3

# Helper processes: ``python -I -c CODE ARGS``; each prints "ready" once its load is on.
_BUSY = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
print("ready", flush=True)
while time.monotonic() < end:
    pass
"""
_HOLD = """
import sys, time
n, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
buf = bytearray(n)
buf[::4096] = b"\\x01" * len(range(0, n, 4096))  # touch every page so it is resident
print("ready", flush=True)
while time.monotonic() < end:
    time.sleep(0.05)
"""


@dataclass(frozen=True)
class StressResult:
    """Latency of one artifact, quiet and under two kinds of stress, measured on this machine."""

    device: str  # whose thread count was used
    threads: int  # ONNX Runtime intra-op threads, the device's cores (at most this machine's)
    quiet: LatencyStats  # nothing else started by the workbench
    cpu: LatencyStats  # with ``cpu_processes`` busy loops competing for the CPU
    cpu_processes: int
    memory: LatencyStats  # while another process holds ``memory_held_bytes`` resident
    memory_held_bytes: int
    memory_share: float  # of the RAM available when the measurement began
    seconds: float  # wall time of the whole measurement
    basis: str  # what was measured where, in words

    def slowdown(self, which: str = "cpu", percentile: str = "p99") -> float:
        """Stressed over quiet latency, e.g. ``slowdown("cpu", "p99")``."""
        return getattr(getattr(self, which), percentile) / getattr(self.quiet, percentile)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("quiet", "cpu", "memory"):
            d[k] = getattr(self, k).to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StressResult:
        d = dict(d)
        for k in ("quiet", "cpu", "memory"):
            d[k] = LatencyStats.from_dict(d[k])
        return cls(**d)


def _start(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-I", "-c", code, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen, timeout: float) -> None:
    """Block until ``proc`` prints "ready"; raise if it dies or takes longer than ``timeout``."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout) and proc.stdout.readline().strip() == "ready":
            return
    proc.kill()
    err = (proc.stderr.read() if proc.poll() is not None else "").strip()[-500:]
    raise WorkbenchError(
        f"a stress helper process did not start within {timeout:g} s{': ' + err if err else ''}",
        "check free memory, or ask for less memory pressure (memory_share)",
    )


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill that did not land
            pass
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()


def check_stress_settings(
    cpu_processes: int | None,
    memory_share: float,
    max_memory_bytes: int | None = None,
    timeout: float = 120.0,
) -> None:
    """Raise a WorkbenchError naming the first stress setting out of range."""
    if cpu_processes is None:
        cpu_processes = 1
    if isinstance(cpu_processes, bool) or not isinstance(cpu_processes, int) or cpu_processes < 1:
        raise WorkbenchError(
            f"cpu_processes must be a whole number >= 1, got {cpu_processes!r}",
            "use 1 or more busy processes",
        )
    if isinstance(memory_share, bool) or not 0 < memory_share <= MAX_MEMORY_SHARE:
        raise WorkbenchError(
            f"memory_share {memory_share!r} is out of range",
            f"use a share above 0 and at most {MAX_MEMORY_SHARE} of the available RAM",
        )
    if max_memory_bytes is not None and max_memory_bytes < 1:
        raise WorkbenchError(
            f"max_memory_bytes {max_memory_bytes!r} is below 1", "give a positive cap"
        )
    if timeout <= 0:
        raise WorkbenchError(f"timeout {timeout!r} is not positive", "give seconds > 0")


def measure_under_stress(
    artifact: str | os.PathLike,
    device: str | DeviceProfile = "host",
    *,
    input_shape: Sequence[int] | None = None,
    cpu_processes: int | None = None,
    memory_share: float = DEFAULT_MEMORY_SHARE,
    max_memory_bytes: int | None = None,
    warmup: int = 10,
    min_runs: int = 100,
    min_seconds: float = 0.5,
    max_runs: int = 5000,
    timeout: float = 120.0,
) -> StressResult:
    """Latency of ``artifact`` quiet, with busy processes, and under memory pressure.

    Measured here with the device's thread count (its cores, at most this machine's).

    Args:
        cpu_processes: busy-loop processes competing for the CPU; None: one per usable
            core of this machine.
        memory_share: share of the currently available RAM a helper process holds
            (0 < share <= 0.5).
        max_memory_bytes: a cap on the held memory (tests use a small one).
        timeout: seconds after which every helper exits by itself; also the cap on
            waiting for one to start.

    Returns:
        A StressResult with the three LatencyStats side by side.
    """
    import psutil

    from workbench.measure.runtime import measure_latency

    device = get_device(device)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    usable = usable or 1
    if cpu_processes is None:
        cpu_processes = usable
    check_stress_settings(cpu_processes, memory_share, max_memory_bytes, timeout)
    threads = min(device.cores, usable)
    held = int(psutil.virtual_memory().available * memory_share)
    if max_memory_bytes is not None:
        held = min(held, int(max_memory_bytes))

    def timed() -> LatencyStats:
        return measure_latency(
            artifact,
            input_shape,
            threads=threads,
            warmup=warmup,
            min_runs=min_runs,
            min_seconds=min_seconds,
            max_runs=max_runs,
        )

    start = time.perf_counter()
    quiet = timed()
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(cpu_processes):
            procs.append(_start(_BUSY, timeout))
        for p in procs:
            _wait_ready(p, timeout)
        under_cpu = timed()
        _stop(procs)
        procs = [_start(_HOLD, held, timeout)]
        _wait_ready(procs[0], timeout)
        under_memory = timed()
    finally:
        _stop(procs)
    return StressResult(
        device=device.name,
        threads=threads,
        quiet=quiet,
        cpu=under_cpu,
        cpu_processes=cpu_processes,
        memory=under_memory,
        memory_held_bytes=held,
        memory_share=float(memory_share),
        seconds=time.perf_counter() - start,
        basis=(
            f"measured on this machine in ONNX Runtime with {device.name}'s thread count "
            f"({threads}"
            + (
                ""
                if threads == device.cores
                else f"; it has {device.cores} cores, this machine {usable} usable"
            )
            + f"); stress: {cpu_processes} busy-loop process(es), then one process "
            f"holding {held:,} B resident"
        ),
    )
