"""Edge Workbench panels for Jupyter and Voila: ipywidgets over the ``workbench`` engine.

``Workbench()`` is the whole app in one line; the panels it is made of can be used
alone. Panels hold their state in traits; their observers call one engine function
and assign result traits.

The names are imported on first use, so ``import widgets.netron_server`` (a Jupyter
server extension) does not load torch, ipywidgets and Altair into the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ExportPanel",
    "MetricsCard",
    "ModelPicker",
    "NetronView",
    "PruningPanel",
    "QuantizationPanel",
    "SearchPanel",
    "SweepPanel",
    "TradeoffChart",
    "VariantsPanel",
    "Workbench",
]

_MODULES = {
    "ExportPanel": "widgets.export_panel",
    "MetricsCard": "widgets.metrics_card",
    "ModelPicker": "widgets.model_picker",
    "NetronView": "widgets.netron_view",
    "PruningPanel": "widgets.compression_panels",
    "QuantizationPanel": "widgets.compression_panels",
    "SearchPanel": "widgets.search_panel",
    "SweepPanel": "widgets.sweep_panel",
    "TradeoffChart": "widgets.tradeoff_chart",
    "VariantsPanel": "widgets.variants_panel",
    "Workbench": "widgets.workbench_app",
}

if TYPE_CHECKING:
    from widgets.compression_panels import PruningPanel, QuantizationPanel
    from widgets.export_panel import ExportPanel
    from widgets.metrics_card import MetricsCard
    from widgets.model_picker import ModelPicker
    from widgets.netron_view import NetronView
    from widgets.search_panel import SearchPanel
    from widgets.sweep_panel import SweepPanel
    from widgets.tradeoff_chart import TradeoffChart
    from widgets.variants_panel import VariantsPanel
    from widgets.workbench_app import Workbench


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
