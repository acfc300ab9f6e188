#!/usr/bin/env python3
"""workbench-runner: measure an exported .onnx model on the device it runs on.

One self-contained file: copy it to the device next to the model and run

    python3 runner.py model.onnx -o results.json [--threads 1] [--device-name my-pi]

It needs only Python 3.9+, numpy and onnxruntime (not torch, not the workbench). It
measures the way the workbench does: an ONNX Runtime CPU session with all graph
optimisations, ``--threads`` intra-op threads, sequential execution; latency of one
inference on seeded random input, timed one by one after a warm-up until both
``--min-runs`` runs and ``--min-seconds`` seconds are reached, with Python's garbage
collector paused; peak memory in a fresh process (this file run again), as the peak
resident set after the session was made and run minus the resident set just before.
It writes one JSON file with the figures, the device's environment (CPU, its
features, cores, OS, runtime versions) and the model file's sha256, so the results
can be matched to the variant they were measured on.

Exit status: 0 written, 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid

FORMAT = "edge-workbench-runner-results"
FORMAT_VERSION = 1
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}
# CPU flags that matter for int8 speed (x86 "flags", ARM "Features"): raw -> normalised.
_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_vnni": "vnni",
    "avx_vnni": "vnni",
    "asimd": "neon",
    "neon": "neon",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "sve": "sve",
    "fphp": "fp16",
    "f16c": "f16c",
}


class RunnerError(Exception):
    """Bad input: printed as one line, exit status 2."""


# --- the session, made as the workbench makes it ------------------------------------


def make_session(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = next((s.strip() for s in str(e).splitlines() if s.strip()), "no detail")
        raise RunnerError(
            f"{path} cannot be loaded by ONNX Runtime {ort.__version__}: {first[:300]}"
        ) from None


def make_feed(session, shape):
    import numpy as np

    inp = session.get_inputs()[0]
    dtype = _DTYPES.get(inp.type)
    if dtype is None:
        raise RunnerError(
            f"the model's input {inp.name!r} has type {inp.type}, which the runner cannot feed"
        )
    model_shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
    if shape is None:
        shape = [1 if d is None else d for d in model_shape]
    ok = len(shape) == len(model_shape) and all(
        d is None or d == s
        for d, s in zip(model_shape, shape)  # noqa: B905 (Python 3.9 on devices)
    )
    if not ok or any(s < 1 for s in shape):
        raise RunnerError(f"the model expects input shape {inp.shape}, not {list(shape)}")
    rng = np.random.default_rng(0)
    if dtype.startswith("float"):
        x = rng.standard_normal(tuple(shape), dtype=np.float32).astype(dtype)
    else:
        x = rng.integers(0, 2, size=tuple(shape)).astype(dtype)
    return {inp.name: x}, list(shape)


def measure_latency(path, shape, threads, warmup, min_runs, min_seconds, max_runs):
    import numpy as np

    session = make_session(path, threads)
    feed, shape = make_feed(session, shape)
    run = session.run
    for _ in range(warmup):
        run(None, feed)
    times = np.empty(max_runs, dtype=np.int64)
    min_ns = int(min_seconds * 1e9)
    n = 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        while n < max_runs:
            t0 = time.perf_counter_ns()
            run(None, feed)
            t1 = time.perf_counter_ns()
            times[n] = t1 - t0
            n += 1
            if n >= min_runs and t1 - start >= min_ns:
                break
    finally:
        if was_enabled:
            gc.enable()
    ms = times[:n] / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    stats = {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "n": int(n),
        "warmup": int(warmup),
        "threads": int(threads),
    }
    return stats, shape


# --- peak memory, in a fresh process ------------------------------------------------


def _status_kib():
    try:
        with open("/proc/self/status") as f:
            text = f.read()
    except OSError:
        return None
    return {k: int(v) for k, v in re.findall(r"^(Vm\w+):\s+(\d+)\s*kB", text, re.M)}


def _maxrss_bytes():
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def memory_worker(path, shape, threads, runs):
    """Run in a fresh process: what creating and running the session added to the peak RSS."""
    import numpy  # noqa: F401  (imported before the baseline, as the workbench's worker does)
    import onnxruntime  # noqa: F401

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak counter (VmHWM) to the current resident set
        st = _status_kib()
        peak_reset = bool(st) and st["VmHWM"] - st["VmRSS"] < 1024
    except OSError:
        peak_reset = False
    st = _status_kib()
    baseline = st["VmRSS"] * 1024 if st else _maxrss_bytes()
    session = make_session(path, threads)
    feed, _ = make_feed(session, shape)
    for _ in range(runs):
        session.run(None, feed)
    st = _status_kib()
    if st and "VmHWM" in st:
        peak, method = st["VmHWM"] * 1024, "VmHWM"
    else:
        peak, method = _maxrss_bytes(), "ru_maxrss"
    return {
        "peak_bytes": max(peak - baseline, 0),
        "process_peak_bytes": peak,
        "baseline_bytes": baseline,
        "method": method,
        "peak_reset": peak_reset,
    }


def measure_memory(path, shape, threads, runs, timeout):
    args = json.dumps({"path": path, "shape": shape, "threads": threads, "runs": runs})
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunnerError(f"measuring peak memory took longer than {timeout:g} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        out = json.loads(lines[-1]) if lines else {}
    except ValueError:
        out = {}
    if "error" in out:
        raise RunnerError(out["error"])
    if proc.returncode != 0 or "peak_bytes" not in out:
        tail = (proc.stderr or proc.stdout or "no output").strip()[-500:]
        raise RunnerError(f"the memory worker failed (exit status {proc.returncode}): {tail}")
    return out


# --- the device's environment -------------------------------------------------------


def environment(threads):
    import numpy
    import onnxruntime

    model, raw = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not raw:
                    raw = set(value.split())
    except OSError:
        pass
    features = sorted({_FLAGS[f] for f in raw if f in _FLAGS})
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    memory_total = None
    try:
        with open("/proc/meminfo") as f:
            m = re.search(r"^MemTotal:\s+(\d+)\s*kB", f.read(), re.M)
            memory_total = int(m.group(1)) * 1024 if m else None
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or platform.machine() or "unknown",
        "cpu_features": features,
        "int8_dot_product": bool({"vnni", "dotprod"} & set(features)),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "threads": int(threads),
        "memory_total_bytes": memory_total,
        "os": platform.system(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "numpy": numpy.__version__,
        "runner": FORMAT_VERSION,
    }


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(args):
    """Measure ``args.model`` and return the results dict (written by ``main``)."""
    path = os.path.abspath(args.model)
    if not os.path.isfile(path):
        raise RunnerError(f"{args.model} is not a file")
    shape = None
    if args.input_shape:
        try:
            shape = [int(v) for v in args.input_shape.replace("x", ",").split(",")]
        except ValueError:
            raise RunnerError(
                f"--input-shape {args.input_shape!r} is not a shape such as 1,3,224,224"
            ) from None
    if args.threads < 1 or args.min_runs < 1 or args.warmup < 0 or args.min_seconds < 0:
        raise RunnerError("--threads and --min-runs must be >= 1, --warmup and --min-seconds >= 0")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise RunnerError(f"-o {args.output}: the folder {out_dir} does not exist")
    memory = measure_memory(path, shape, args.threads, args.memory_runs, args.timeout)
    latency, shape = measure_latency(
        path, shape, args.threads, args.warmup, args.min_runs, args.min_seconds, args.max_runs
    )
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "device_name": args.device_name,
        "artifact": {
            "file": os.path.basename(path),
            "sha256": sha256_file(path),
            "size_bytes": os.path.getsize(path),
        },
        "input_shape": shape,
        "latency_ms": latency,
        "memory": memory,
        "environment": environment(args.threads),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def build_parser():
    p = argparse.ArgumentParser(
        prog="workbench-runner",
        description="Measure latency percentiles and peak memory of an .onnx model on this device.",
    )
    p.add_argument("model", help="the exported .onnx file")
    p.add_argument("-o", "--output", default="results.json", help="results JSON to write")
    p.add_argument(
        "--device-name", default=platform.node() or "device", help="a name for this device"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)"
    )
    p.add_argument("--input-shape", help="full input shape, batch included, e.g. 1,1,8,8")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-runs", type=int, default=100)
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--max-runs", type=int, default=5000)
    p.add_argument("--memory-runs", type=int, default=5)
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds for the memory measurement"
    )
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--memory-worker"]:
        a = json.loads(argv[1])
        try:
            out = memory_worker(a["path"], a["shape"], int(a["threads"]), int(a["runs"]))
        except RunnerError as e:
            out = {"error": str(e)}
        print(json.dumps(out), flush=True)
        return 0 if "error" not in out else 2
    args = build_parser().parse_args(argv)
    try:
        results = run(args)
    except RunnerError as e:
        print(f"workbench-runner: error: {e}", file=sys.stderr)
        return 2
    write_atomic(args.output, json.dumps(results, indent=1) + "\n")
    lat = results["latency_ms"]
    print(
        f"{results['artifact']['file']} on {args.device_name}: p50 {lat['p50']:.3f} ms, "
        f"p99 {lat['p99']:.3f} ms ({lat['n']} runs, {lat['threads']} thread(s)); peak memory "
        f"{results['memory']['peak_bytes']:,} B; written to {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
