"""Latency on a device: measured on ``host``, a labelled roofline lower bound elsewhere.

A latency on a device that is not this machine is never shown as measured. Without a
measurement from the device, the best honest figure is a lower bound: the model cannot
finish before its MACs are done at the device's peak MAC rate, nor before its weights
have been read once from memory at its bandwidth. Both terms matter: digits-resnet18
at 32x32 is bound by moving its 44 MB of float weights, not by its MACs.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workbench.cache import Cache
from workbench.devices.profile import DeviceProfile
from workbench.devices.registry import HOST, get_device
from workbench.results import NO_LATENCY, Result

__all__ = ["LatencyFigure", "device_latency", "roofline_bound", "weight_bytes"]

_INT8_DTYPES = ("int8", "uint8")


@dataclass(frozen=True)
class LatencyFigure:
    """A latency for one device, saying whether it was measured or estimated, and how."""

    device: str
    kind: str  # "measured" or "estimate"
    p50_ms: float | None  # measured only
    p99_ms: float | None  # measured only
    bound_ms: float | None  # estimate only: the roofline lower bound of one inference
    compute_ms: float | None  # MACs / peak MAC rate
    memory_ms: float | None  # weight bytes / bandwidth
    bound_by: str  # "compute", "memory" or "measured"
    method: str  # how the figure was obtained, in words
    note: str = ""  # e.g. the runtime differs

    @property
    def is_estimate(self) -> bool:
        return self.kind == "estimate"

    @property
    def gate_ms(self) -> float:
        """The figure a p99 threshold is compared with: measured p99, or the lower bound."""
        return float(self.p99_ms if self.kind == "measured" else self.bound_ms)

    def label(self) -> str:
        """Short text for tables: the figure with what it is."""
        if self.kind == "measured":
            where = "measured" if self.device == HOST else f"measured on {self.device}"
            return f"p99 {self.p99_ms:.3g} ms ({where})"
        return f">= {self.bound_ms:.3g} ms (estimate: roofline lower bound, {self.bound_by}-bound)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_bytes(artifact: str | os.PathLike, size_bytes: int | None = None) -> tuple[int, str]:
    """Bytes of the artifact's weights, and their dominant storage type.

    Counted from the graph (element count x element size per dtype); capped by the file
    size, since a weight shared by two layers is counted per use but read once.
    """
    st = os.stat(artifact)
    total, dominant = _weight_bytes(str(artifact), st.st_size, st.st_mtime_ns)
    return (min(total, int(size_bytes)) if size_bytes is not None else total), dominant


@functools.lru_cache(maxsize=64)
def _weight_bytes(path: str, size: int, mtime_ns: int) -> tuple[int, str]:
    # Keyed by size and mtime too, so a rewritten file is read again; the gate asks
    # once per device, and loading a 44 MB graph each time would dominate its run.
    if path.endswith(".tflite"):  # LiteRT / TFLite Micro: read from the flatbuffer
        from workbench.runtimes.litert.flatbuffer import graph_stats
    else:
        from workbench.measure.artifact import graph_stats

    stats = graph_stats(path)
    total = sum(int(n) * np.dtype(d).itemsize for d, n in stats.weight_dtypes.items())
    dtypes = stats.weight_dtypes
    dominant = max(dtypes, key=dtypes.get) if dtypes else "float32"
    return min(total, size), dominant


def roofline_bound(
    macs: int, weight_bytes_: int, weight_dtype: str, device: DeviceProfile
) -> tuple[float, float, float, str]:
    """Lower bound of one inference on ``device``: (bound, compute, memory) in ms and the rate used.

    The int8 peak is used for int8 weights when the profile has one, else the fp32 peak
    (and the other way round when only one is known).
    """
    int8 = weight_dtype in _INT8_DTYPES
    rate = device.peak_int8_gmacs if int8 else device.peak_fp32_gmacs
    which = "int8" if int8 else "fp32"
    if rate is None:  # the profile gives only the other peak
        rate = device.peak_fp32_gmacs if int8 else device.peak_int8_gmacs
        which = "fp32" if int8 else "int8"
    compute_ms = macs / (rate * 1e9) * 1e3
    memory_ms = weight_bytes_ / (device.memory_bandwidth_gbps * 1e9) * 1e3
    return max(compute_ms, memory_ms), compute_ms, memory_ms, which


def device_latency(
    result: Result, device: str | DeviceProfile, *, cache: Cache | None = None
) -> LatencyFigure:
    """The latency of a measured variant on ``device``.

    On ``host`` it is the figure measured here. On another device it is the figure the
    device runner measured there, when one was imported into ``cache``; otherwise a
    roofline lower bound from the profile (labelled an estimate, with its method): the
    real latency is higher.
    """
    from workbench.devices.budget import measured_on, runtime_note
    from workbench.devices.imported import find_measurement

    device = get_device(device)
    m = result.metrics
    on_device = (
        None if device.name == HOST else find_measurement(result.artifact, device.name, cache)
    )
    if on_device is not None:
        return LatencyFigure(
            device=device.name,
            kind="measured",
            p50_ms=on_device.latency.p50,
            p99_ms=on_device.latency.p99,
            bound_ms=None,
            compute_ms=None,
            memory_ms=None,
            bound_by="measured",
            method=on_device.describe(),
        )
    # The device the variant's own figures were timed on: this machine, or a cluster node
    # labelled with a device; when the runtime times anything (TFLite Micro does not:
    # NO_LATENCY, and the estimate below stands in).
    where, words = measured_on(result)
    if device.name == where and m.latency is not None:
        lat = m.latency
        return LatencyFigure(
            device=device.name,
            kind="measured",
            p50_ms=lat.p50,
            p99_ms=lat.p99,
            bound_ms=None,
            compute_ms=None,
            memory_ms=None,
            bound_by="measured",
            method=(
                f"measured {words}, {lat.n} timed runs after "
                f"{lat.warmup} warm-up, {lat.threads} thread(s)"
            ),
        )
    wbytes, dtype = weight_bytes(result.artifact, m.size_bytes)
    bound, compute, memory, which = roofline_bound(m.macs, wbytes, dtype, device)
    estimated = [
        f
        for f in ("peak_int8_gmacs", "peak_fp32_gmacs", "memory_bandwidth_gbps")
        if f in device.estimated
    ]
    rate = device.peak_int8_gmacs if which == "int8" else device.peak_fp32_gmacs
    method = (
        f"roofline lower bound: max(MACs / peak {which} MAC rate = {m.macs:,} / {rate:g} GMAC/s "
        f"= {compute:.3g} ms, weight bytes / memory bandwidth = {wbytes:,} B / "
        f"{device.memory_bandwidth_gbps:g} GB/s = {memory:.3g} ms) on all {device.cores} "
        "core(s); activations, overheads and imperfect kernels only add to it"
        + (
            f"; profile figures that are class estimates: {', '.join(estimated)}"
            if estimated
            else ""
        )
    )
    return LatencyFigure(
        device=device.name,
        kind="estimate",
        p50_ms=None,
        p99_ms=None,
        bound_ms=bound,
        compute_ms=compute,
        memory_ms=memory,
        bound_by="compute" if compute >= memory else "memory",
        method=method,
        note="; ".join(
            n
            for n in (
                runtime_note(device, result.runtime),
                NO_LATENCY if m.latency is None else "",
            )
            if n
        ),
    )
