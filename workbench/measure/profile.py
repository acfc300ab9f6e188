"""Time per operator type, from ONNX Runtime's own profiler."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.measure.runtime import check_input_shape, make_session, model_input, random_input

__all__ = ["profile_operators"]


def profile_operators(
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    *,
    threads: int = 1,
    runs: int = 20,
    warmup: int = 10,
) -> dict[str, float]:
    """Milliseconds per inference spent in each operator type, slowest first.

    The names are the kernels ONNX Runtime actually ran after its graph optimisations
    (e.g. ``FusedConv`` for Conv+Relu, ``QLinearConv`` for a fused QDQ Conv), so the
    profile shows what the deployment runtime does with the file. Warm-up runs are
    profiled too but left out of the figures (the first runs after a session is made
    allocate, and would dominate a small model's profile). The profiler adds about 1 µs
    per node, so on models that run in tens of microseconds the per-op times add up to
    more than the measured latency: read them as shares. The profiler's JSON file is written to
    a temporary directory and deleted.

    Args:
        input_shape: full input shape, batch included; None takes the model's own
            shape with a symbolic batch of 1.
    """
    if runs < 1 or warmup < 0:
        raise WorkbenchError(
            f"invalid run counts (runs={runs}, warmup={warmup})", "use runs >= 1 and warmup >= 0"
        )
    with tempfile.TemporaryDirectory(prefix="workbench-profile-") as tmp:
        session = make_session(path, threads, profile_prefix=str(Path(tmp) / "ort_profile"))
        inp = model_input(session)
        shape = inp.concrete_shape() if input_shape is None else tuple(input_shape)
        check_input_shape(inp, shape)
        feed = {inp.name: random_input(inp, shape)}
        for _ in range(warmup + runs):
            session.run(None, feed)
        profile_file = Path(session.end_profiling())
        if not profile_file.is_absolute():  # older ORT versions return a relative path
            profile_file = Path(tmp) / profile_file.name
        with profile_file.open() as f:
            events = json.load(f)
    return _per_op_ms(events, warmup=warmup, runs=runs)


def _per_op_ms(events: list[dict], *, warmup: int, runs: int) -> dict[str, float]:
    """Sum kernel times per op type over the timed runs, in ms per inference."""
    run_starts = sorted(
        e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    if len(run_starts) < warmup + runs:
        raise WorkbenchError(
            f"ONNX Runtime's profile holds {len(run_starts)} runs, expected {warmup + runs}",
            "profile with the workbench's own session settings (make_session)",
        )
    # Node events of the warm-up runs start before the first timed run.
    first_timed = run_starts[warmup]
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if (
            e.get("cat") == "Node"
            and e.get("name", "").endswith("_kernel_time")
            and e.get("ts", -1) >= first_timed
        ):
            totals[e.get("args", {}).get("op_name", "unknown")] += e["dur"]  # microseconds
    per_run = {op: us / 1000.0 / runs for op, us in totals.items()}
    return dict(sorted(per_run.items(), key=lambda kv: kv[1], reverse=True))
