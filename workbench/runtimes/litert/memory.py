"""Peak memory of loading and running a ``.tflite`` in LiteRT, measured in a fresh process.

The same method as ONNX Runtime's :func:`workbench.measure.measure_memory` (see there
for why a fresh process): the worker resets the kernel's peak counter after its
imports, notes its resident set, makes the interpreter (XNNPACK on, fixed threads),
runs it and reports the peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.results import MemoryStats
from workbench.runtimes.litert.flatbuffer import read_tflite

__all__ = ["measure_memory"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_STDERR_TAIL = 2000


def measure_memory(
    path: str | os.PathLike, *, threads: int = 1, runs: int = 5, timeout: float = 120.0
) -> MemoryStats:
    """Peak resident memory that creating a LiteRT interpreter for ``path`` and running it adds.

    ``peak_bytes`` is the worker's peak resident set after ``runs`` inferences minus its
    resident set just before the interpreter was made (Python, numpy and LiteRT's
    import excluded).
    """
    if runs < 1:
        raise WorkbenchError(f"runs must be >= 1, got {runs}", "use runs=1 or more")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise WorkbenchError(f"threads must be a whole number >= 1, got {threads!r}", "use 1+")
    p = read_tflite(path).path  # a bad file fails here, with its own message
    args = {"path": str(p.resolve()), "threads": threads, "runs": runs}
    cmd = [sys.executable, "-m", "workbench.runtimes.litert._memory_worker", json.dumps(args)]
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
            f"measuring the memory of {p.name} in LiteRT took longer than {timeout:g} s",
            "pass a larger timeout=, or measure a smaller model",
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
            f"the LiteRT memory worker for {p.name} failed (exit status {proc.returncode}): {tail}",
            "check that the model runs with workbench.runtimes.litert.predict; if it does, "
            "report this output",
        )
    baseline = int(out["baseline_bytes"])
    peak = int(out["process_peak_bytes"])
    return MemoryStats(
        peak_bytes=max(peak - baseline, 0), process_peak_bytes=peak, baseline_bytes=baseline
    )
