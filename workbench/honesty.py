"""Honesty warnings: where a setting cannot help on this runtime, say so, and why.

Each check is a small function of what was measured; every warning names the
measured figures it rests on, so a reader can check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# speed_text and versus_text live with the other formatters; still importable from here.
from workbench.formatting import speed_text, versus_text
from workbench.recipe import PruneConfig, QATConfig, QuantizeConfig, Recipe
from workbench.results import Metrics, NoiseCheck
from workbench.runtimes import DEFAULT_RUNTIME, get_runtime

__all__ = [
    "ConvCensus",
    "agreement_warning",
    "conv_census",
    "accuracy_warnings",
    "honesty_warnings",
    "noise_warning",
    "slower_than_float_warning",
    "speed_text",
    "versus_text",
]

# A quantized variant is called slower than float only beyond this margin, so that
# timing noise on a shared machine does not raise the warning by itself.
SLOWER_MARGIN = 1.05
# When the baseline gives one class for at least this share of the agreement inputs,
# agreement cannot tell a faithful variant from a broken one.
ONE_CLASS_SHARE = 0.95


def noise_warning(noise: NoiseCheck | None) -> str | None:
    """The warning for a disturbed latency measurement, or None."""
    if noise is None or not noise.noisy:
        return None
    return (
        "Latency was measured on a busy machine (" + "; ".join(noise.reasons) + "), so its "
        "figures are uncertain. The result is kept but not as final: the next evaluation "
        "measures it again, or re-measure now (Re-measure in the app, --remeasure on the CLI)."
    )


def agreement_warning(base_predictions: np.ndarray) -> str | None:
    """A warning when the baseline predicts (nearly) one class for every agreement input.

    Models with random weights (a torchvision name loaded without pretrained weights)
    or fed inputs unlike their data often do: a variant then "agrees" whatever it does.
    """
    preds = np.asarray(base_predictions).ravel()
    if preds.size == 0:
        return None
    classes, counts = np.unique(preds, return_counts=True)
    top = int(counts.argmax())
    share = counts[top] / preds.size
    if share < ONE_CLASS_SHARE:
        return None
    return (
        f"The uncompressed model predicts class {int(classes[top])} for {int(counts[top])} of "
        f"{preds.size} agreement inputs ({share:.0%}), so agreement with it says next to "
        "nothing about what compression changed (random weights, or inputs unlike its "
        "training data). Judge the variant on labelled data."
    )


@dataclass(frozen=True)
class ConvCensus:
    """The convolutions of a built artifact that the quantization warnings are about.

    ``dynamic``: ConvInteger nodes (convolutions dynamic quantization turned into integer
    ops); ``int8_depthwise``: depthwise convolutions whose weights are quantized (fed by a
    DequantizeLinear, or a QLinearConv). A convolution kept in float counts in neither.
    """

    dynamic: int
    int8_depthwise: int


def conv_census(path: str | Path) -> ConvCensus:
    """Count, in a built ONNX artifact, the quantized convolutions the warnings concern."""
    import onnx  # here, not at the top: a cached result is shown without loading onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    dynamic = int8_depthwise = 0
    for node in graph.node:
        if node.op_type == "ConvInteger":
            dynamic += 1
        weight = {"Conv": 1, "QLinearConv": 3}.get(node.op_type)
        if weight is None or len(node.input) <= weight:
            continue
        source = producer.get(node.input[weight])
        quantized = node.op_type == "QLinearConv" or (
            source is not None and source.op_type == "DequantizeLinear"
        )
        dims = shapes.get(
            source.input[0] if quantized and source is not None else node.input[weight]
        )
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if quantized and group > 1 and dims is not None and len(dims) >= 2 and dims[1] == 1:
            int8_depthwise += 1
    return ConvCensus(dynamic, int8_depthwise)


def honesty_warnings(
    recipe: Recipe,
    metrics: Metrics,
    baseline: Metrics | None,
    census: ConvCensus,
    max_accuracy_drop: float,
    *,
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[str, ...]:
    """The warnings that apply to a measured variant.

    Speed is judged only from what was measured: a quantized variant's interleaved
    speed-up against its float version (``metrics.comparison("float")``, else against
    the baseline). The CPU's int8 features are stated in the environment line, not
    turned into a prediction here.

    Args:
        recipe: the variant's recipe.
        metrics: what was measured on the variant's artifact.
        baseline: what was measured on the uncompressed model (None for the baseline).
        census: the quantized convolutions in the variant's artifact.
        max_accuracy_drop: accuracy points that may be lost before a warning.
        runtime: the registry name of the runtime the variant was measured in; the
            warnings that hold for any runtime name it.
    """
    out: list[str] = []
    prune = recipe.get("prune") or recipe.get("gradual_prune")
    quant = recipe.get("quantize")
    qat = recipe.get("qat")
    if isinstance(qat, QATConfig):  # QAT's artifact is the static int8 one
        quant = qat.quantize_config()
    if isinstance(prune, PruneConfig) and prune.method == "unstructured" and prune.sparsity > 0:
        dense_note = ""
        if baseline is not None:
            dense_note = (
                f" The dense file is {metrics.size_bytes:,} bytes (baseline "
                f"{baseline.size_bytes:,}); compressed it is {metrics.compressed_bytes:,} "
                f"(baseline {baseline.compressed_bytes:,})."
            )
        out.append(
            f"Unstructured pruning (sparsity {prune.sparsity:.0%} in the layers it pruned; "
            f"{metrics.nonzero_params:,} of {metrics.params:,} parameters are non-zero) gives no "
            f"latency gain on {get_runtime(runtime)}'s dense CPU kernels: the zeros are still "
            "stored and multiplied. It shrinks the file only once compressed (zip, or a sparse "
            "format on the device)." + dense_note + " Use structured pruning to cut latency."
        )
    is_int8 = isinstance(quant, QuantizeConfig) and quant.scheme in ("int8", "dynamic")
    if isinstance(quant, QuantizeConfig) and quant.scheme == "dynamic" and census.dynamic:
        out.append(
            f"Dynamic quantization turned {census.dynamic} convolution(s) into ConvInteger, "
            "for which ONNX Runtime's CPU provider has no fast kernel, and it quantizes "
            "activations again on every inference. Use static int8 (QDQ) for convolutional "
            "models."
        )
    if is_int8 and not quant.per_channel and census.int8_depthwise:
        out.append(
            f"Per-tensor int8 on {census.int8_depthwise} depthwise convolution(s): one scale must "
            "cover channels whose weight ranges differ widely, which usually costs accuracy. "
            "Use per-channel quantization."
        )
    slower = slower_than_float_warning(quant, metrics)
    if slower:
        out.append(slower)
    out += accuracy_warnings(metrics, baseline, max_accuracy_drop)
    return tuple(out)


def slower_than_float_warning(
    quant: Any, metrics: Metrics, extra: str = "", *, label: str | None = None
) -> str | None:
    """A warning when a quantized variant measured slower than its float version (else
    the baseline), timed interleaved, beyond the margin and the rounds' spread; ``extra``
    (e.g. the CPU's features) goes at its end; ``label`` names the quantization as the
    runtime does (default ``quant.label()``). None when it was not slower."""
    comparison = metrics.comparison("float") or metrics.comparison("baseline")
    if not isinstance(quant, QuantizeConfig) or comparison is None:
        return None
    # Beyond the margin and beyond the rounds' spread (their upper quartile is
    # slower too), so noise alone does not raise it.
    if not (comparison.speedup < 1 / SLOWER_MARGIN and comparison.slower_beyond_spread):
        return None
    versus = versus_text(comparison).replace("the baseline", "the float baseline")
    return (
        f"This {label or quant.label()} variant measured slower {versus}, timed "
        f"interleaved in the same run: {speed_text(comparison)}; p50 "
        f"{comparison.variant_p50:.3f} ms vs {comparison.reference_p50:.3f} ms. "
        "Quantization pays off only where the runtime has fast kernels for the "
        "quantized operators; measure on the target device too." + (f" {extra}" if extra else "")
    )


def accuracy_warnings(
    metrics: Metrics, baseline: Metrics | None, max_accuracy_drop: float
) -> list[str]:
    """A warning when accuracy (or, without labels, agreement) dropped more than
    ``max_accuracy_drop`` points from the baseline; [] otherwise."""
    out: list[str] = []
    if baseline is not None:
        if metrics.accuracy is not None and baseline.accuracy is not None:
            drop = (baseline.accuracy - metrics.accuracy) * 100
            if drop > max_accuracy_drop:
                out.append(
                    f"Accuracy dropped {drop:.1f} points (from {baseline.accuracy:.2%} to "
                    f"{metrics.accuracy:.2%}), beyond the {max_accuracy_drop:g}-point limit. "
                    "Lower the sparsity, keep sensitive layers dense or in float, or fine-tune."
                )
        elif metrics.agreement is not None:
            lost = (1 - metrics.agreement) * 100
            if lost > max_accuracy_drop:
                out.append(
                    f"The variant's top-1 prediction differs from the float model's on "
                    f"{lost:.1f}% of {metrics.agreement_basis}, beyond the "
                    f"{max_accuracy_drop:g}-point limit (no labels: agreement stands in for "
                    "accuracy)."
                )
    return out
