"""The context every number is measured in: CPU, its int8-relevant features, versions.

A latency without its CPU, thread count and runtime version cannot be compared with
anything, so every Metrics records :func:`environment`.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata

__all__ = ["cpu_features", "environment", "environment_line", "has_int8_dot_product"]

# Raw flag names (x86 /proc/cpuinfo "flags", ARM "Features", macOS sysctl keys) -> the
# normalized feature the workbench reasons about.
_FLAG_MAP = {
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_vnni": "vnni",  # int8 dot product on AVX-512
    "avx_vnni": "vnni",  # int8 dot product on AVX2-class cores (Alder Lake and later)
    "avx512vnni": "vnni",
    "amx_int8": "amx",
    "amx_tile": "amx",
    "asimd": "neon",
    "neon": "neon",
    "asimddp": "dotprod",  # ARMv8.2 SDOT/UDOT: int8 dot product
    "dotprod": "dotprod",
    "i8mm": "i8mm",
    "sve": "sve",
    "fphp": "fp16",
    "avx512_fp16": "fp16",
    "f16c": "f16c",
}
# macOS sysctl names -> the raw flags above.
_SYSCTL_FLAGS = {
    "hw.optional.avx2_0": "avx2",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512vnni": "avx512vnni",
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "fphp",
}


@functools.lru_cache(maxsize=1)
def _cpu() -> tuple[str, frozenset[str]]:
    """CPU model name and its raw feature flags, read once per process."""
    model, raw = "", set()
    if sys.platform.startswith("linux"):
        model, raw = _linux_cpu()
    elif sys.platform == "darwin":
        model, raw = _macos_cpu()
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    return model, frozenset(raw)


def _linux_cpu() -> tuple[str, set[str]]:
    model, raw = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return model, raw
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not raw:
            raw = set(value.split())
    if not model:  # ARM boards often name only the implementer/part in cpuinfo
        model = _run(["lscpu"], grep="Model name")
    return model, raw


def _macos_cpu() -> tuple[str, set[str]]:
    model = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
    raw = set()
    for key, flag in _SYSCTL_FLAGS.items():
        if _run(["sysctl", "-n", key]) == "1":
            raw.add(flag)
    if platform.machine() == "arm64":
        raw.add("neon")  # every Apple silicon core has NEON
    return model, raw


def _run(cmd: list[str], grep: str | None = None) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    if grep is None:
        return out.strip()
    for line in out.splitlines():
        if line.strip().startswith(grep):
            return line.partition(":")[2].strip()
    return ""


def cpu_features() -> frozenset[str]:
    """Normalized CPU features: avx2, avx512, vnni, amx, neon, dotprod, i8mm, sve, fp16, f16c."""
    _, raw = _cpu()
    return frozenset(_FLAG_MAP[f] for f in raw if f in _FLAG_MAP)


def has_int8_dot_product() -> bool:
    """True if this CPU has an int8 dot-product instruction (VNNI on x86, dotprod on ARM).

    Without one, int8 kernels widen to 16 bits and often run no faster than float32.
    """
    return bool(cpu_features() & {"vnni", "dotprod"})


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch_version() -> str | None:
    # Read from package metadata instead of importing torch (1-2 s and ~1 GB of RSS);
    # a torch already imported in this process reports its own version.
    mod = sys.modules.get("torch")
    if mod is not None:
        return str(getattr(mod, "__version__", None) or _version("torch"))
    return _version("torch")


def _cores() -> tuple[int | None, int | None, int | None]:
    """Physical cores, logical CPUs, and the CPUs this process may run on."""
    logical = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to read the topology
        pass
    return physical or logical, logical, usable


def environment(threads: int = 1) -> dict:
    """Fingerprint of the machine and software a measurement ran on (JSON-serialisable).

    Args:
        threads: the intra-op thread count the measurement used, recorded with it.
    """
    import numpy
    import onnxruntime

    model, _ = _cpu()
    physical, logical, usable = _cores()
    return {
        "cpu_model": model,
        "cpu_features": sorted(cpu_features()),
        "int8_dot_product": has_int8_dot_product(),
        "physical_cores": physical,
        "logical_cores": logical,
        "usable_cores": usable,
        "threads": int(threads),
        "os": platform.system(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "onnx": _version("onnx"),
        "torch": _torch_version(),
        "numpy": numpy.__version__,
        "workbench": _version("edge-workbench") or "unknown",
    }


# Packages in a runtime's version record that build the artifact rather than run it.
BUILD_SIDE_PACKAGES = ("edge-workbench", "numpy", "torch", "onnx")


def runtime_text(environment: dict) -> str:
    """The runtime a measurement ran in and its own library's version ("litert
    (ai-edge-litert 2.3.0)", "onnxruntime 1.23.2"); "" when not recorded."""
    if not environment:
        return ""
    runtime = environment.get("runtime", "onnxruntime")
    if runtime == "onnxruntime":
        return f"onnxruntime {environment.get('onnxruntime', '?')}"
    versions = environment.get("runtime_versions") or {}
    own = next(((k, v) for k, v in versions.items() if k not in BUILD_SIDE_PACKAGES), None)
    return f"{runtime} ({own[0]} {own[1]})" if own else runtime


def environment_line(environment: dict, delegation: dict | None = None) -> str:
    """One line of measurement context: CPU, int8 features, threads, runtime versions;
    with ``delegation`` (``Metrics.delegation``), the delegate the runtime applied right
    after the runtime and its version ("... litert (ai-edge-litert 2.3.0, ...), XNNPACK
    took 9 of 9 nodes (1 partition) · ...")."""
    if not environment:
        return "environment not recorded"
    features = ", ".join(environment.get("cpu_features") or []) or "none detected"
    int8 = "int8 dot product" if environment.get("int8_dot_product") else "no int8 dot product"
    runtime = f"ONNX Runtime {environment.get('onnxruntime', '?')}"
    if environment.get("runtime") == "tflite-micro":  # its reference kernels, no timing
        versions = environment.get("runtime_versions") or {}
        runtime = f"TFLite Micro {versions.get('tflite-micro', '?')} (reference kernels)"
    elif environment.get("runtime", "onnxruntime") != "onnxruntime":
        # Another runtime's figures: name it and its own libraries (not the workbench's).
        libraries = {
            k: v
            for k, v in (environment.get("runtime_versions") or {}).items()
            if k not in BUILD_SIDE_PACKAGES
        }
        runtime = (
            f"{environment['runtime']} ("
            + ", ".join(f"{k} {v}" for k, v in libraries.items())
            + ")"
        )
    if delegation:
        from workbench.results import delegation_text

        runtime += f", {delegation_text(delegation)}"
    return (
        f"{environment.get('cpu_model', 'unknown CPU')} ({features}; {int8}) · "
        f"{environment.get('threads', '?')} thread(s) of {environment.get('usable_cores', '?')} "
        f"usable cores · {runtime} · "
        f"{environment.get('os', '')} · Python {environment.get('python', '?')}"
    )
