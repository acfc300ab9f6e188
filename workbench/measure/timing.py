"""Runtime-independent timing: run a model call one inference at a time, as an
application would, and turn the times into :class:`~workbench.results.LatencyStats`.

Every runtime's latency goes through here, so ONNX Runtime, LiteRT and the interleaved
comparisons are timed and summarised the same way.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.results import LatencyStats, quartiles

__all__ = [
    "MIN_RUNS_PER_ROUND",
    "InterleavedTiming",
    "gc_paused",
    "latency_stats",
    "time_interleaved",
    "time_runs",
]

# Each round times every model at least this often, so a round's p50 means something.
MIN_RUNS_PER_ROUND = 5


@dataclass(frozen=True)
class InterleavedTiming:
    """Latency of several models timed in alternating rounds in one run.

    ``latency[i]`` covers every timed run of model ``i``; ``round_p50[i][r]`` is its
    p50 in round ``r``. ``preempted_share`` is the number of times the operating system
    took the CPU from the timing thread (involuntary context switches) per timed run: a
    direct sign that other work competed with the measurement.
    """

    latency: tuple[LatencyStats, ...]
    round_p50: tuple[tuple[float, ...], ...]
    preempted_share: float


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


def _involuntary_switches() -> int:
    """Involuntary context switches of this thread so far (this process where per-thread
    counts are not available)."""
    try:
        import resource  # Unix only
    except ImportError:
        return 0
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return int(resource.getrusage(who).ru_nivcsw)


def time_interleaved(
    calls: Sequence[Callable[[], object]],
    *,
    warmup: int,
    threads: int,
    rounds: int,
    min_runs: int,
    min_seconds: float,
    max_runs: int,
) -> InterleavedTiming:
    """Time each of ``calls`` (one inference each, already warmed up) in ``rounds``
    interleaved rounds in alternating order (A, B, then B, A, ...), so whatever else the
    machine does slows all of them alike. Each gets at least ``min_runs`` runs and
    ``min_seconds`` seconds over all rounds (at least MIN_RUNS_PER_ROUND per round, at
    most ``max_runs``); ``warmup`` and ``threads`` are recorded in the statistics."""
    per_round = max(MIN_RUNS_PER_ROUND, math.ceil(min_runs / rounds))
    per_round_max = max(per_round, max_runs // rounds)
    times: list[list[np.ndarray]] = [[] for _ in calls]
    buffer = np.empty(per_round_max, dtype=np.int64)
    switches = _involuntary_switches()
    try:
        with gc_paused():
            for r in range(rounds):
                order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
                for i in order:
                    times[i].append(
                        time_runs(
                            calls[i],
                            min_runs=per_round,
                            min_seconds=min_seconds / rounds,
                            max_runs=per_round_max,
                            buffer=buffer,
                        )
                    )
    finally:
        switches = _involuntary_switches() - switches
    stats, round_p50 = [], []
    for per_model in times:
        p50s = tuple(float(np.median(ms)) for ms in per_model)
        stats.append(latency_stats(np.concatenate(per_model), warmup, threads, p50s))
        round_p50.append(p50s)
    total_runs = sum(s.n for s in stats)
    return InterleavedTiming(tuple(stats), tuple(round_p50), switches / total_runs)
