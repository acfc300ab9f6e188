"""Edge Workbench: compress neural networks for edge devices and measure, honestly.

The engine: no UI imports. ``load_model`` / ``list_models`` name the models,
``evaluate(model, recipe)`` applies a recipe and measures the exported artifact,
``sweep`` collects a Study, and ``export_variant`` writes the chosen variant with its
manifest.
"""

from workbench.cache import Cache
from workbench.errors import WorkbenchError
from workbench.evaluate import MeasureSettings, evaluate
from workbench.export import export_variant
from workbench.models import list_models, load_model
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.results import LatencyStats, MemoryStats, Metrics, Result
from workbench.study import Study, grid, sweep

__all__ = [
    "Cache",
    "LatencyStats",
    "MeasureSettings",
    "MemoryStats",
    "Metrics",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "Result",
    "Study",
    "WorkbenchError",
    "evaluate",
    "export_variant",
    "grid",
    "list_models",
    "load_model",
    "sweep",
]
