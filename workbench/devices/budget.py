"""Does a variant fit a device? Memory within the budget, the file within the storage.

The budget is the profile's ``memory_budget_fraction`` (0.5-0.7, the guide's rule) of
its available memory. The memory compared with it is the peak that loading and running
the artifact added, measured in ONNX Runtime in a fresh process (``Metrics.memory``);
for a TensorFlow Lite Micro variant it is the exact tensor arena the interpreter needs
(``Metrics.arena``: activations + persistent buffers) plus TFLM's own RAM where known,
and the file compared with the flash is the model's bytes (a microcontroller reads the
model in place from flash, so it is not counted in SRAM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workbench.cache import Cache
from workbench.charts import format_bytes
from workbench.devices.profile import ONNX_RUNTIME, DeviceProfile
from workbench.devices.registry import HOST, get_device
from workbench.errors import WorkbenchError
from workbench.results import Metrics, Result

__all__ = ["Fit", "fit", "measured_on", "runtime_note"]


def measured_on(variant: Result | Metrics) -> tuple[str, str]:
    """Where a variant's own figures were measured: (device name, words for a sentence).

    A variant measured by a Ray node labelled with a device (``cluster``: ``--ray
    --device NAME``) names that device and the node; any other was measured here
    (``HOST``). The words name the runtime: "in LiteRT on raspberry-pi-4 (node pi-1)".
    """
    from workbench.runtimes import get_runtime

    metrics = variant.metrics if isinstance(variant, Result) else variant
    runtime_name = getattr(variant, "runtime", None) or metrics.environment.get(
        "runtime", ONNX_RUNTIME
    )
    try:
        runtime = str(get_runtime(runtime_name))
    except WorkbenchError:  # a runtime this installation lacks: its registry name
        runtime = runtime_name
    node = metrics.environment.get("node") or {}
    device = node.get("device") if isinstance(node, dict) else None
    if device and device != HOST:
        return device, f"in {runtime} on {device} (node {node.get('hostname', '?')})"
    return HOST, f"in {runtime} on this machine"


TFLM = "tflite-micro"
# RAM TFLite Micro needs besides its arena (the interpreter object, the op resolver, the
# call stack): it depends on the build and the compiler, and no figure measured for a
# device is known here, so it is not added; the basis says so.
TFLM_RUNTIME_RAM_BYTES: int | None = None


@dataclass(frozen=True)
class Fit:
    """Whether one variant fits one device, by how much, and which figure decided it."""

    device: str
    fits: bool
    decided_by: str  # "memory", "storage" or "runtime"
    memory_bytes: int  # the variant's measured peak memory
    budget_bytes: int  # budget_fraction x the device's available memory
    budget_fraction: float
    available_bytes: int
    memory_headroom_bytes: int  # budget - memory (negative: over by that much)
    file_bytes: int  # the artifact's size
    storage_bytes: int  # the device's flash or storage
    storage_headroom_bytes: int
    memory_basis: str  # how the memory figure was obtained
    runtime_note: str  # "" when the device runs the runtime the figures were measured in

    @property
    def verdict(self) -> str:
        return "fits" if self.fits else "does not fit"

    def summary(self) -> str:
        """One line: fits / does not fit, the headroom, and the deciding figure."""
        mem = (
            f"memory {format_bytes(self.memory_bytes)} of a {format_bytes(self.budget_bytes)} "
            f"budget ({self.budget_fraction:.0%} of {format_bytes(self.available_bytes)}), "
            f"headroom {format_bytes(self.memory_headroom_bytes)}"
        )
        disk = (
            f"file {format_bytes(self.file_bytes)} of {format_bytes(self.storage_bytes)} storage, "
            f"headroom {format_bytes(self.storage_headroom_bytes)}"
        )
        line = f"{self.device}: {self.verdict} (decided by {self.decided_by}); {mem}; {disk}"
        return f"{line}. {self.runtime_note}" if self.runtime_note else line

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict
        return d


def _arena_memory(arena: dict) -> tuple[int, str]:
    """The SRAM a TFLite Micro variant needs, and how it was found."""
    memory = int(arena["firmware_bytes"])
    basis = (
        f"TFLite Micro tensor arena found by the interpreter on this machine: "
        f"{memory:,} B ({int(arena['activations_bytes']):,} B activations + "
        f"{int(arena['persistent_bytes']):,} B persistent)"
    )
    if TFLM_RUNTIME_RAM_BYTES is None:
        basis += "; TFLM's own RAM (interpreter, stack) is not known here and not added"
    else:
        memory += TFLM_RUNTIME_RAM_BYTES
        basis += f" + {TFLM_RUNTIME_RAM_BYTES:,} B TFLM runtime"
    return memory, basis + "; the model stays in flash"


def runtime_note(device: DeviceProfile, runtime: str = ONNX_RUNTIME) -> str:
    """What to keep in mind when figures measured in ``runtime`` are applied to
    ``device``; "" if none."""
    if runtime != ONNX_RUNTIME:
        if runtime in device.runtimes:
            return ""
        return (
            f"runtime differs: figures were measured in {runtime}, {device.name} runs "
            f"{', '.join(device.runtimes)}"
        )
    if device.kind == "microcontroller":
        return (
            f"ONNX Runtime does not run on a microcontroller ({device.name} runs "
            f"{', '.join(device.runtimes)}): the memory it needs there is the TFLite Micro "
            "arena, measured with the tflite-micro runtime (--runtime tflite-micro)"
        )
    if ONNX_RUNTIME not in device.runtimes:
        return (
            f"runtime differs: figures were measured in ONNX Runtime, {device.name} runs "
            f"{', '.join(device.runtimes)}"
        )
    return ""


def fit(
    variant: Result | Metrics,
    device: str | DeviceProfile,
    *,
    fraction: float | None = None,
    cache: Cache | None = None,
) -> Fit:
    """Check a measured variant against a device's memory budget and storage.

    Args:
        variant: a Result (or its Metrics) from ``evaluate``.
        device: a profile or a registered name.
        fraction: the share of available memory allowed for the model, instead of the
            profile's own ``memory_budget_fraction`` (0 < fraction <= 1).
        cache: where measurements imported from the device runner are looked up; when
            the device has measured this artifact, its own peak memory is used.

    Returns:
        A Fit. On a microcontroller an ONNX artifact never fits: the runtime decides. A
        TFLite Micro variant (``metrics.arena`` set) is fitted with its tensor arena
        against the SRAM budget and its model bytes against the flash.
    """
    device = get_device(device)
    metrics = variant.metrics if isinstance(variant, Result) else variant
    if fraction is None:
        fraction = device.memory_budget_fraction
    elif isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise WorkbenchError(
            f"memory fraction {fraction!r} is out of range", "use a fraction above 0 and at most 1"
        )
    budget = int(device.available_bytes * fraction)
    arena = getattr(metrics, "arena", None)
    runtime = TFLM if arena else getattr(variant, "runtime", ONNX_RUNTIME)
    if arena:
        memory, basis = _arena_memory(arena)
    else:
        memory = int(metrics.memory.peak_bytes)
        basis = f"peak memory measured {measured_on(variant)[1]}"
    if isinstance(variant, Result) and device.name != HOST and not arena:
        from workbench.devices.imported import find_measurement

        on_device = find_measurement(variant.artifact, device.name, cache)
        if on_device is not None:
            memory = int(on_device.memory.peak_bytes)
            basis = f"peak memory {on_device.describe()}"
    file_bytes = int(metrics.size_bytes)
    mem_room = budget - memory
    disk_room = device.storage_bytes - file_bytes
    note = runtime_note(device, runtime)
    if device.kind == "microcontroller" and runtime not in device.runtimes:
        fits, decided = False, "runtime"
    elif mem_room < 0:
        fits, decided = False, "memory"
    elif disk_room < 0:
        fits, decided = False, "storage"
    else:
        # Both hold: the tighter of the two (smaller share left) decided it.
        fits = True
        decided = "memory" if mem_room / budget <= disk_room / device.storage_bytes else "storage"
    return Fit(
        device=device.name,
        fits=fits,
        decided_by=decided,
        memory_bytes=memory,
        budget_bytes=budget,
        budget_fraction=float(fraction),
        available_bytes=device.available_bytes,
        memory_headroom_bytes=mem_room,
        file_bytes=file_bytes,
        storage_bytes=device.storage_bytes,
        storage_headroom_bytes=disk_room,
        memory_basis=basis,
        runtime_note=note,
    )
