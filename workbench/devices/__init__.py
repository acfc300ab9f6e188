"""Target devices: profiles, memory budgets with headroom, latency estimates, stress, the CI gate.

``list_devices()`` / ``get_device(name)`` name the profiles (``host`` is this machine,
detected and micro-benchmarked); ``fit(result, device)`` checks a measured variant
against a device's memory budget and storage; ``device_latency(result, device)`` gives
the measured latency on ``host`` (or on the device, once its runner's results are
imported with ``import_results``) and a labelled roofline lower bound elsewhere;
``measure_under_stress`` times an artifact with busy processes and memory pressure;
``run_gate`` checks thresholds per device (``workbench check``).
Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DeviceProfile": "workbench.devices.profile",
    "DEVICE_KINDS": "workbench.devices.profile",
    "Fit": "workbench.devices.budget",
    "fit": "workbench.devices.budget",
    "LatencyFigure": "workbench.devices.estimate",
    "device_latency": "workbench.devices.estimate",
    "get_device": "workbench.devices.registry",
    "list_devices": "workbench.devices.registry",
    "load_profiles": "workbench.devices.registry",
    "register_device": "workbench.devices.registry",
    "host_profile": "workbench.devices.host",
    "StressResult": "workbench.devices.stress",
    "GateThresholds": "workbench.devices.gate",
    "GateReport": "workbench.devices.gate",
    "load_gate_config": "workbench.devices.gate",
    "run_gate": "workbench.devices.gate",
    "DeviceMeasurement": "workbench.devices.imported",
    "import_results": "workbench.devices.imported",
    "measure_under_stress": "workbench.devices.stress",
    "DeviceOverlay": "workbench.devices.view",
    "DeviceStatus": "workbench.devices.view",
    "device_overlay": "workbench.devices.view",
    "frontier_within_budget": "workbench.devices.view",
    "variant_status": "workbench.devices.view",
    "device_matrix": "workbench.devices.gate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'workbench.devices' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
