"""Subprocess that measures the peak memory of one model: run by ``measure_memory``.

Usage: ``python -m workbench.measure._memory_worker '{"path": ..., "shape": [...],
"threads": 1, "runs": 5}'`` (``measure_memory`` runs it the same way, minus the import
of ``workbench/__init__.py``). Prints one JSON line: ``baseline_bytes`` (resident set
just before the session is made), ``process_peak_bytes`` (peak resident set of the
process), ``peak_reset`` (whether the peak counter could be reset to the baseline
first) and ``method``. A WorkbenchError is printed as ``{"error": ..., "fix": ...}``
with exit status 2.

It imports only numpy, onnxruntime and this package's light modules (onnx is never
imported), so it starts in a fraction of a second.
"""

from __future__ import annotations

import json
import re
import sys

_STATUS = "/proc/self/status"


def _status_kib() -> dict[str, int] | None:
    """VmRSS/VmHWM (and friends) of this process in KiB, or None off Linux."""
    try:
        with open(_STATUS) as f:
            text = f.read()
    except OSError:
        return None
    return {k: int(v) for k, v in re.findall(r"^(Vm\w+):\s+(\d+)\s*kB", text, re.M)}


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    st = _status_kib()
    # The reset is effective when the peak now equals the resident set (within 1 MiB).
    return bool(st) and st["VmHWM"] - st["VmRSS"] < 1024


def _maxrss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes, else KiB


def _rss_bytes() -> int:
    st = _status_kib()
    if st:
        return st["VmRSS"] * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # no psutil: the peak so far is the best upper bound we have
        return _maxrss_bytes()


def measure(path: str, shape: list[int] | None, threads: int, runs: int) -> dict:
    """Create the session, run it ``runs`` times and report the memory figures."""
    from workbench.measure.runtime import check_input_shape, make_session, model_input, random_input

    peak_reset = _reset_peak()
    baseline = _rss_bytes()
    session = make_session(path, threads)
    inp = model_input(session)
    shape = inp.concrete_shape() if shape is None else shape
    check_input_shape(inp, shape)
    feed = {inp.name: random_input(inp, shape)}
    for _ in range(runs):
        session.run(None, feed)
    st = _status_kib()
    if st and "VmHWM" in st:
        peak, method = st["VmHWM"] * 1024, "VmHWM"
    else:
        peak, method = _maxrss_bytes(), "ru_maxrss"
    return {
        "baseline_bytes": baseline,
        "process_peak_bytes": peak,
        "peak_reset": peak_reset,
        "method": method,
    }


def main(argv: list[str]) -> int:
    from workbench.errors import WorkbenchError

    args = json.loads(argv[1])
    try:
        out = measure(args["path"], args.get("shape"), int(args["threads"]), int(args["runs"]))
    except WorkbenchError as e:
        print(json.dumps({"error": e.problem, "fix": e.fix}), flush=True)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
