"""DeviceProfile: what a target device offers a model (memory, storage, compute, runtimes).

A profile is a frozen value, validated when it is made, so a figure that is missing,
negative or out of range is named at once with the fix. Figures are in plain units:
bytes, MHz, GB/s (10^9 bytes per second) and GMAC/s (10^9 multiply-accumulates per
second, all cores together).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from workbench.errors import WorkbenchError

__all__ = [
    "BUDGET_FRACTION_DEFAULT",
    "BUDGET_FRACTION_RANGE",
    "DEVICE_KINDS",
    "ONNX_RUNTIME",
    "DeviceProfile",
]

DEVICE_KINDS = ("host", "linux-board", "phone", "microcontroller")
# The guide's first rule: use only 50-70% of available memory for the model itself; the
# rest is the operating system's, the application's and the headroom for peaks.
BUDGET_FRACTION_RANGE = (0.5, 0.7)
BUDGET_FRACTION_DEFAULT = 0.6
# The runtime every figure of the workbench is measured in today (runtimes are named by
# plain strings: "onnxruntime", "litert", "tflite-micro").
ONNX_RUNTIME = "onnxruntime"

# Fields a profile file must give (the rest have defaults), in the order they are listed.
_REQUIRED = (
    "name",
    "kind",
    "cpu",
    "cores",
    "clock_mhz",
    "ram_bytes",
    "storage_bytes",
    "memory_bandwidth_gbps",
    "runtimes",
)


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: its memory, storage, compute and the runtimes it runs.

    At least one of ``peak_int8_gmacs`` and ``peak_fp32_gmacs`` is needed, since the
    latency estimate divides a model's MACs by it.
    """

    name: str  # registry name, e.g. "raspberry-pi-4"
    kind: str  # one of DEVICE_KINDS
    cpu: str  # the processor, e.g. "Broadcom BCM2711, 4x Cortex-A72"
    cores: int  # CPU cores a model may use
    clock_mhz: float | None  # CPU clock (the big cores' on big.LITTLE); None: not known
    ram_bytes: int  # RAM (SRAM on a microcontroller)
    storage_bytes: int  # where the model file lives: flash, SD card or disk
    memory_bandwidth_gbps: float  # sustained memory bandwidth, GB/s
    runtimes: tuple[str, ...]  # runtimes the device runs: "onnxruntime", "litert", "tflite-micro"
    cpu_features: tuple[str, ...] = ()  # int8-relevant: neon, dotprod, i8mm, avx2, vnni, dsp, ...
    peak_int8_gmacs: float | None = None  # int8 multiply-accumulates per second, all cores, 1e9
    peak_fp32_gmacs: float | None = None  # float32 multiply-accumulates per second, all cores, 1e9
    available_memory_bytes: int | None = None  # memory a model may share; None: all of ram_bytes
    memory_budget_fraction: float = (
        BUDGET_FRACTION_DEFAULT  # share of available memory for the model
    )
    estimated: tuple[str, ...] = ()  # fields that are class estimates, not spec-sheet figures
    source: str = ""  # where the figures come from (document or page title)
    notes: str = ""  # anything a reader of the figures should know

    def __post_init__(self) -> None:
        # Tuples, also when given lists (a TOML file gives lists).
        for name in ("runtimes", "cpu_features", "estimated"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise _bad(self, name, f"must be a list of names, got {value!r}", '["..."]')
            object.__setattr__(self, name, tuple(value))
        for name in ("name", "cpu"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise _bad(self, name, "is empty", "give it a name")
        if self.kind not in DEVICE_KINDS:
            raise _bad(self, "kind", f"is {self.kind!r}", f"use one of: {', '.join(DEVICE_KINDS)}")
        _whole(self, "cores")
        _whole(self, "ram_bytes")
        _whole(self, "storage_bytes")
        if self.available_memory_bytes is not None:
            _whole(self, "available_memory_bytes")
            if self.available_memory_bytes > self.ram_bytes:
                raise _bad(
                    self,
                    "available_memory_bytes",
                    f"({self.available_memory_bytes:,}) is more than ram_bytes ({self.ram_bytes:,})",
                    "give at most ram_bytes, or leave it out",
                )
        if self.clock_mhz is not None:
            _positive(self, "clock_mhz")
        _positive(self, "memory_bandwidth_gbps")
        for name in ("peak_int8_gmacs", "peak_fp32_gmacs"):
            if getattr(self, name) is not None:
                _positive(self, name)
        if self.peak_int8_gmacs is None and self.peak_fp32_gmacs is None:
            raise _bad(
                self,
                "peak_int8_gmacs",
                "and peak_fp32_gmacs are both missing",
                "give at least one peak MAC rate in GMAC/s (the latency estimate needs it)",
            )
        if not self.runtimes or not all(isinstance(r, str) and r for r in self.runtimes):
            raise _bad(
                self,
                "runtimes",
                f"is {list(self.runtimes)!r}",
                'name at least one, e.g. ["onnxruntime"]',
            )
        if self.kind == "microcontroller" and ONNX_RUNTIME in self.runtimes:
            raise _bad(
                self,
                "runtimes",
                "lists onnxruntime, which does not run on a microcontroller",
                'list the runtime it runs, e.g. ["tflite-micro"]',
            )
        lo, hi = BUDGET_FRACTION_RANGE
        f = self.memory_budget_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not lo <= f <= hi:
            raise _bad(
                self,
                "memory_budget_fraction",
                f"is {f!r}",
                f"use {lo} to {hi}: the model may use 50-70% of the available memory",
            )
        unknown = set(self.estimated) - {f.name for f in fields(self)}
        if unknown:
            raise _bad(
                self,
                "estimated",
                f"names unknown fields {sorted(unknown)}",
                "name fields of the profile",
            )

    @property
    def available_bytes(self) -> int:
        """Memory the model shares with the OS and the application."""
        return (
            self.ram_bytes if self.available_memory_bytes is None else self.available_memory_bytes
        )

    @property
    def budget_bytes(self) -> int:
        """The model's memory budget: ``memory_budget_fraction`` of the available memory."""
        return int(self.available_bytes * self.memory_budget_fraction)

    @property
    def runs_onnxruntime(self) -> bool:
        """Whether ONNX Runtime (what every figure is measured in today) runs on this device."""
        return ONNX_RUNTIME in self.runtimes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("runtimes", "cpu_features", "estimated"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceProfile:
        """A profile from a dict (a TOML table); a missing or unknown field is named."""
        if not isinstance(d, dict):
            raise WorkbenchError(
                f"a device profile must be a table, got {d!r}", "write [[device]] tables"
            )
        label = d.get("name", "?")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise WorkbenchError(
                f"device {label!r}: the field {missing[0]} is missing",
                f"add {missing[0]} = ... (required: {', '.join(_REQUIRED)})",
            )
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise WorkbenchError(
                f"device {label!r}: unknown field {extra[0]}",
                f"use only: {', '.join(sorted(known))}",
            )
        try:
            return cls(**d)
        except TypeError as e:  # a wrong type that the checks above could not name
            raise WorkbenchError(f"device {label!r}: {e}", "check the field types") from None


def _bad(p: DeviceProfile, name: str, problem: str, fix: str) -> WorkbenchError:
    return WorkbenchError(f"device {p.name!r}: {name} {problem}", fix)


def _whole(p: DeviceProfile, name: str) -> None:
    v = getattr(p, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _bad(
            p, name, f"must be a whole number >= 1, got {v!r}", f"give {name} as a positive integer"
        )


def _positive(p: DeviceProfile, name: str) -> None:
    v = getattr(p, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise _bad(p, name, f"must be a number > 0, got {v!r}", f"give {name} as a positive number")
