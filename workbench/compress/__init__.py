"""Compression steps: pruning of PyTorch modules and quantization of exported ONNX files.

``prune_(module, PruneConfig(...), example_input)`` changes a module in place before
export; ``quantize(src, dst, QuantizeConfig(...), calibration)`` writes a new ONNX file
from an exported one. Both return a frozen report with ``to_dict()``.
"""

from __future__ import annotations

from workbench.compress.prune import (
    PRUNABLE_TYPES,
    LayerPruning,
    MacsSearch,
    PruneReport,
    batch_norm_scales,
    capped_prune_counts,
    layer_sensitivity,
    prunable_layers,
    prune_,
    search_structured_sparsity,
    structured_sparsity_for_macs,
)
from workbench.compress.quantize import (
    CALIBRATION_BATCH,
    INT8_EXTRA_OPTIONS,
    QuantizeReport,
    quantize,
)

__all__ = [
    "CALIBRATION_BATCH",
    "INT8_EXTRA_OPTIONS",
    "PRUNABLE_TYPES",
    "LayerPruning",
    "MacsSearch",
    "PruneReport",
    "QuantizeReport",
    "batch_norm_scales",
    "capped_prune_counts",
    "layer_sensitivity",
    "prunable_layers",
    "prune_",
    "quantize",
    "search_structured_sparsity",
    "structured_sparsity_for_macs",
]
