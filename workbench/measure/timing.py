"""Runtime-independent timing: run a model call one inference at a time, as an
application would, and turn the times into :class:`~workbench.results.LatencyStats`.

Every runtime's latency goes through here, so ONNX Runtime, LiteRT and the interleaved
comparisons are timed and summarised the same way.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from workbench.results import LatencyStats, quartiles

__all__ = ["gc_paused", "latency_stats", "time_runs"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's garbage collector off for the block, so its pauses are not charged to
    the model (restored as it was)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_runs(
    call: Callable[[], object],
    *,
    min_runs: int,
    min_seconds: float,
    max_runs: int,
    buffer: np.ndarray | None = None,
) -> np.ndarray:
    """Milliseconds of each ``call()``, timed one by one with ``perf_counter_ns`` until
    both ``min_runs`` runs and ``min_seconds`` seconds are reached (at most ``max_runs``).

    ``buffer`` (int64, at least ``max_runs`` long) avoids an allocation per call when
    timing in many rounds. The caller warms up and pauses the garbage collector.
    """
    times = buffer if buffer is not None else np.empty(max_runs, dtype=np.int64)
    min_ns = int(min_seconds * 1e9)
    n = 0
    start = time.perf_counter_ns()
    while n < max_runs:
        t0 = time.perf_counter_ns()
        call()
        t1 = time.perf_counter_ns()
        times[n] = t1 - t0
        n += 1
        if n >= min_runs and t1 - start >= min_ns:
            break
    return times[:n] / 1e6


def latency_stats(
    ms: np.ndarray, warmup: int, threads: int, round_p50: Sequence[float] = ()
) -> LatencyStats:
    """The percentiles of ``ms`` (every timed run); with ``round_p50``, the p50 of each
    round of an interleaved timing, whose middle half becomes the p50's spread."""
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    several = len(round_p50) > 1
    low, _, high = quartiles(round_p50) if several else (None, None, None)
    return LatencyStats(
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        mean=float(ms.mean()),
        min=float(ms.min()),
        max=float(ms.max()),
        n=int(len(ms)),
        warmup=int(warmup),
        threads=int(threads),
        rounds=len(round_p50) if round_p50 else 1,
        p50_low=low,
        p50_high=high,
    )
