"""Subprocess that measures the peak memory of one ``.tflite`` in LiteRT: run by
``workbench.runtimes.litert.memory.measure_memory``.

Usage: ``python -m workbench.runtimes.litert._memory_worker '{"path": ..., "threads": 1,
"runs": 5}'``. The same procedure and output as ONNX Runtime's worker
(``workbench.measure._memory_worker``, whose helpers it uses): reset the kernel's
peak-RSS counter, note the resident set, make the interpreter with the settings of
every other LiteRT measurement, run it, print one JSON line.
"""

from __future__ import annotations

import json
import sys


def measure(path: str, threads: int, runs: int) -> dict:
    """Create the interpreter, run it ``runs`` times and report the memory figures."""
    # LiteRT's own import is paid before the baseline, as onnxruntime's is in the
    # ONNX Runtime worker: the figure is what the model adds.
    import ai_edge_litert.interpreter  # noqa: F401

    from workbench.measure._memory_worker import _maxrss_bytes, _reset_peak, _rss_bytes, _status_kib
    from workbench.runtimes.litert import session

    peak_reset = _reset_peak()
    baseline = _rss_bytes()
    interpreter = session.make_interpreter(path, threads)
    inp = interpreter.get_input_details()[0]
    feed = session._random_input(inp)
    for _ in range(runs):
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
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
        out = measure(args["path"], int(args["threads"]), int(args["runs"]))
    except WorkbenchError as e:
        print(json.dumps({"error": e.problem, "fix": e.fix}), flush=True)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
