"""Honesty warnings: where a setting cannot help on this runtime, say so, and why.

Each check is a small function of what was measured; every warning names the
measured figures it rests on, so a reader can check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from workbench.recipe import PruneConfig, QATConfig, QuantizeConfig, Recipe
from workbench.results import Metrics

__all__ = ["ConvCensus", "conv_census", "honesty_warnings"]

# A quantized variant is called slower than float only beyond this margin, so that
# timing noise on a shared machine does not raise the warning by itself.
SLOWER_MARGIN = 1.05


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
    int8_dot_product: bool,
    max_accuracy_drop: float,
    *,
    float_reference: Metrics | None = None,
) -> tuple[str, ...]:
    """The warnings that apply to a measured variant.

    Args:
        recipe: the variant's recipe.
        metrics: what was measured on the variant's artifact.
        baseline: what was measured on the uncompressed model (None for the baseline).
        census: the quantized convolutions in the variant's artifact.
        int8_dot_product: whether this CPU has VNNI (x86) or dot-product (Arm) instructions.
        max_accuracy_drop: accuracy points that may be lost before a warning.
        float_reference: what was measured on the recipe's PyTorch steps alone (the
            variant before quantization) when it has any; otherwise the baseline is
            the float version a quantized variant is compared with.
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
            "latency gain on ONNX Runtime's dense CPU kernels: the zeros are still stored "
            "and multiplied. It shrinks the file only once compressed (zip, or a sparse "
            "format on the device)." + dense_note + " Use structured pruning to cut latency."
        )
    is_int8 = isinstance(quant, QuantizeConfig) and quant.scheme in ("int8", "dynamic")
    if is_int8 and not int8_dot_product:
        out.append(
            "This CPU has no VNNI (x86) or dot-product (Arm) instructions, so int8 "
            "multiply-accumulates are emulated with wider instructions: expect little or no "
            "speed-up over float here, and measure on the target device."
        )
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
    reference = float_reference or baseline
    if isinstance(quant, QuantizeConfig) and reference is not None:
        ratio = metrics.latency.p50 / reference.latency.p50
        float_steps = "+".join(s.label() for s in recipe.torch_steps())
        versus = f"its float version ({float_steps})" if float_reference else "the float baseline"
        # Beyond the margin and beyond the float version's own spread (its p90), so a
        # model timed in microseconds is not called slower on noise alone.
        if ratio > SLOWER_MARGIN and metrics.latency.p50 > reference.latency.p90:
            out.append(
                f"This {quant.label()} variant measured slower than {versus}: "
                f"p50 {metrics.latency.p50:.3f} ms vs {reference.latency.p50:.3f} ms "
                f"({ratio:.2f}x). Quantization pays off only where the runtime has fast "
                "kernels for the quantized operators."
            )
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
    return tuple(out)
