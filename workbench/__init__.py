"""Edge Workbench: compress neural networks for edge devices and measure, honestly.

The engine: no UI imports. ``load_model`` / ``list_models`` name the models,
``evaluate(model, recipe)`` applies a recipe and measures the exported artifact,
``sweep`` collects a Study, and ``export_variant`` writes the chosen variant with its
manifest. Names are imported on first use, so ``import workbench`` stays light (the
measurement subprocess and the CLI's start-up do not pay for torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cache": "workbench.cache",
    "LatencyStats": "workbench.results",
    "MeasureSettings": "workbench.pipeline",
    "MemoryStats": "workbench.results",
    "Metrics": "workbench.results",
    "PruneConfig": "workbench.recipe",
    "QuantizeConfig": "workbench.recipe",
    "Recipe": "workbench.recipe",
    "Result": "workbench.results",
    "SearchResult": "workbench.search",
    "Study": "workbench.study",
    "WorkbenchError": "workbench.errors",
    "evaluate": "workbench.pipeline",
    "export_variant": "workbench.export",
    "get_runtime": "workbench.runtimes",
    "grid": "workbench.study",
    "list_models": "workbench.models",
    "list_runtimes": "workbench.runtimes",
    "load_model": "workbench.models",
    "search": "workbench.search",
    "sweep": "workbench.study",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
