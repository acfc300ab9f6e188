"""The ``host`` profile: this machine, detected, with its bandwidth and MAC rate measured.

CPU model and features come from :mod:`workbench.measure.environment`, cores and RAM
from psutil. Memory bandwidth and the peak MAC rates are measured by a short
micro-benchmark (well under a second each) the first time the profile is asked for,
and kept for the rest of the process.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.devices.profile import ONNX_RUNTIME, DeviceProfile

__all__ = ["HostBenchmark", "host_benchmark", "host_profile"]

# Large enough to leave every cache (256 MiB moved per copy), small enough to be quick.
_BANDWIDTH_BYTES = 64 << 20
# A square matrix product big enough that the kernel, not the call, dominates.
_GEMM_SIZE = 512


@dataclass(frozen=True)
class HostBenchmark:
    """What the micro-benchmark measured on this machine."""

    memory_bandwidth_gbps: float  # best of a few numpy copies of 64 MiB: bytes read + written / s
    peak_fp32_gmacs: float  # ONNX Runtime MatMul, float32, 512x512x512, all usable cores
    peak_int8_gmacs: float  # ONNX Runtime MatMulInteger, uint8 x int8, same shape and threads
    threads: int  # threads the MatMul sessions used
    seconds: float  # how long the whole benchmark took


def _best_seconds(fn, repeats: int, budget_s: float) -> float:
    """Fastest of ``repeats`` timed calls (fewer if ``budget_s`` runs out): the least
    disturbed run is the closest to what the hardware can do."""
    best = float("inf")
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return best


def _bandwidth_gbps(budget_s: float) -> float:
    src = np.ones(_BANDWIDTH_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page before timing
    seconds = _best_seconds(lambda: np.copyto(dst, src), 8, budget_s)
    return 2 * _BANDWIDTH_BYTES / seconds / 1e9  # each byte is read once and written once


def _matmul_model(integer: bool):
    from onnx import TensorProto, helper, numpy_helper

    n = _GEMM_SIZE
    rng = np.random.default_rng(0)
    if integer:
        b = rng.integers(-127, 127, size=(n, n)).astype(np.int8)
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = rng.standard_normal((n, n)).astype(np.float32)
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "peak",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", y_type, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _peak_gmacs(integer: bool, threads: int, budget_s: float) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        _matmul_model(integer), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    n = _GEMM_SIZE
    rng = np.random.default_rng(1)
    a = (
        rng.integers(0, 255, size=(n, n)).astype(np.uint8)
        if integer
        else rng.standard_normal((n, n)).astype(np.float32)
    )
    feed = {"A": a}
    session.run(None, feed)  # warm-up: thread pool and packed weights
    seconds = _best_seconds(lambda: session.run(None, feed), 10, budget_s)
    return n**3 / seconds / 1e9


@functools.lru_cache(maxsize=1)
def host_benchmark(budget_s: float = 0.5) -> HostBenchmark:
    """Measure this machine's memory bandwidth and peak MAC rates, once per process.

    Args:
        budget_s: seconds each of the three measurements may take at most (roughly).
    """
    from workbench.measure.environment import _cores

    _, _, usable = _cores()
    threads = usable or 1
    start = time.perf_counter()
    bandwidth = _bandwidth_gbps(budget_s)
    fp32 = _peak_gmacs(False, threads, budget_s)
    int8 = _peak_gmacs(True, threads, budget_s)
    return HostBenchmark(
        memory_bandwidth_gbps=bandwidth,
        peak_fp32_gmacs=fp32,
        peak_int8_gmacs=int8,
        threads=threads,
        seconds=time.perf_counter() - start,
    )


def _clock_mhz() -> float | None:
    try:
        import psutil

        freq = psutil.cpu_freq()
        if freq is not None and (freq.max or freq.current):
            return float(freq.max or freq.current)
    except Exception:  # psutil cannot read the frequency in some containers
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.partition(":")[2])
    except (OSError, ValueError):
        pass
    return None  # not readable here: the profile says unknown rather than guess


@functools.lru_cache(maxsize=1)
def host_profile() -> DeviceProfile:
    """This machine as a DeviceProfile: detected, with bandwidth and MAC rates measured."""
    import psutil

    from workbench.measure.environment import _cores, _cpu, cpu_features

    model, _ = _cpu()
    physical, logical, usable = _cores()
    bench = host_benchmark()
    clock = _clock_mhz()
    storage = shutil.disk_usage(Path.home() if Path.home().exists() else os.getcwd()).total
    return DeviceProfile(
        name="host",
        kind="host",
        cpu=model,
        cpu_features=tuple(sorted(cpu_features())),
        cores=int(usable or logical or 1),
        clock_mhz=clock,
        ram_bytes=int(psutil.virtual_memory().total),
        storage_bytes=int(storage),
        memory_bandwidth_gbps=round(bench.memory_bandwidth_gbps, 2),
        peak_fp32_gmacs=round(bench.peak_fp32_gmacs, 2),
        peak_int8_gmacs=round(bench.peak_int8_gmacs, 2),
        runtimes=(ONNX_RUNTIME,),
        source="detected on this machine (workbench.measure.environment, psutil) and measured",
        notes=(
            f"This machine: {physical} physical / {logical} logical cores, {usable} usable. "
            f"Bandwidth: best numpy copy of 64 MiB; peak MACs: best ONNX Runtime "
            f"{_GEMM_SIZE}x{_GEMM_SIZE} MatMul (fp32) and MatMulInteger (int8) on "
            f"{bench.threads} thread(s), measured in {bench.seconds:.1f} s this process. "
            "RAM is the machine's total; storage the home file system's size."
        ),
    )
