"""Peak memory of loading and running a model, measured in a fresh subprocess.

A fresh process is the only honest way: the calling process (a notebook kernel)
already holds PyTorch, other sessions and freed-but-kept heap, and its peak-RSS
counter remembers all of it. The worker (``_memory_worker``) resets the kernel's
peak counter, notes its resident set, makes the session with the same settings as
every other measurement, runs it and reports the peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.measure.artifact import require_file
from workbench.measure.runtime import check_threads
from workbench.results import MemoryStats

__all__ = ["measure_memory"]

# The directory holding the ``workbench`` package, so the worker imports this very
# copy of it even when the package is not installed or another copy is.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_STDERR_TAIL = 2000


def _worker_command(args: dict) -> list[str]:
    return [sys.executable, "-m", "workbench.measure._memory_worker", json.dumps(args)]


def measure_memory(
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    *,
    threads: int = 1,
    runs: int = 5,
    timeout: float = 120.0,
) -> MemoryStats:
    """Peak resident memory that creating a session for ``path`` and running it adds.

    Runs ``python -m workbench.measure._memory_worker`` with this interpreter in a
    fresh process. ``peak_bytes`` is the process's peak resident set after ``runs``
    inferences minus its resident set just before the session was made (interpreter,
    numpy and onnxruntime excluded). On Linux the peak counter is reset to that
    baseline first; where it cannot be (macOS), the peak of the imports may be
    included, so the figure is an upper bound there.

    Args:
        input_shape: full input shape, batch included; None takes the model's own
            shape with a symbolic batch of 1.
        timeout: seconds before the worker is killed and a WorkbenchError raised.
    """
    if runs < 1:
        raise WorkbenchError(f"runs must be >= 1, got {runs}", "use runs=1 or more")
    check_threads(threads)
    p = require_file(path)
    args = {
        "path": str(p.resolve()),
        "shape": None if input_shape is None else [int(s) for s in input_shape],
        "threads": threads,
        "runs": runs,
    }
    cmd = _worker_command(args)
    # workbench/__init__.py imports lazily, so the worker loads only numpy and onnxruntime.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise WorkbenchError(
            f"measuring the memory of {p.name} took longer than {timeout:g} s",
            "pass a larger timeout= to measure_memory, or measure a smaller model",
        ) from e
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        out = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        out = None
    if isinstance(out, dict) and "error" in out:
        raise WorkbenchError(out["error"], out.get("fix", ""))
    if proc.returncode != 0 or not isinstance(out, dict) or "process_peak_bytes" not in out:
        tail = (proc.stderr or proc.stdout or "no output").strip()[-_STDERR_TAIL:]
        raise WorkbenchError(
            f"the memory worker for {p.name} failed (exit status {proc.returncode}): {tail}",
            "check that the model runs with workbench.measure.predict; if it does, report "
            "this output",
        )
    baseline = int(out["baseline_bytes"])
    peak = int(out["process_peak_bytes"])
    return MemoryStats(
        peak_bytes=max(peak - baseline, 0),
        process_peak_bytes=peak,
        baseline_bytes=baseline,
    )
