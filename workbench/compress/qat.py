"""Quantization-aware training: fine-tuning through int8 fake quantization.

Post-training quantization rounds weights trained in float; the network never saw the
rounding. QAT trains with it in the forward pass (straight-through gradients), so the
weights settle where int8 costs little.

What is simulated matches the artifact the static QDQ quantizer writes:

- weights: per output channel, symmetric int8 in [-127, 127], scale = max|w| / 127.
  Per-channel symmetric rounding is unchanged by a positive per-channel scale, so
  fake-quantizing a convolution's weight before batch norm gives the same integers
  as quantizing the BN-folded weight of the exported graph;
- activations: the input of every convolution and linear layer, per tensor, affine
  uint8 (or int8) over a moving min/max range.

After training the fake quantization is removed with the weights left *on* their int8
grid, so the exported float file quantizes back to exactly the trained integers.
Pruned weights (exact zeros) stay zero: the weight parametrization multiplies by their
mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from workbench.compress.finetune import finetune_
from workbench.compress.prune import PRUNABLE_TYPES
from workbench.errors import WorkbenchError
from workbench.recipe import QATConfig

__all__ = ["QATReport", "qat_"]

WEIGHT_QMAX = 127  # symmetric int8 weights in [-127, 127], as ONNX Runtime's quantizer
ACTIVATION_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
# Moving-average factor of the activation ranges (as torch's observers' default).
RANGE_MOMENTUM = 0.01


@dataclass(frozen=True)
class QATReport:
    """What QAT trained: layers fake-quantized, and the last epoch's loss and accuracy."""

    epochs: int
    quantized_layers: int
    teacher: str | None
    final_loss: float
    final_train_accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)


class _WeightFakeQuant(nn.Module):
    """Parametrization: per-output-channel symmetric int8 fake quantization (and mask)."""

    def __init__(self, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            w = w * self.mask
        scale = (w.detach().reshape(w.shape[0], -1).abs().amax(1) / WEIGHT_QMAX).clamp_min(1e-12)
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(
            w, scale.float(), zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX
        )


class _InputFakeQuant:
    """Forward pre-hook: fake-quantize a layer's input over a moving min/max range."""

    def __init__(self, qmin: int, qmax: int) -> None:
        self.qmin, self.qmax = qmin, qmax
        self.low: float | None = None
        self.high: float | None = None

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if module.training:
            low, high = float(x.detach().min()), float(x.detach().max())
            if self.low is None or self.high is None:
                self.low, self.high = low, high
            else:
                self.low += RANGE_MOMENTUM * (low - self.low)
                self.high += RANGE_MOMENTUM * (high - self.high)
        if self.low is None or self.high is None:
            return args
        low, high = min(self.low, 0.0), max(self.high, 0.0)  # zero must be exact
        scale = max((high - low) / (self.qmax - self.qmin), 1e-8)
        zero = int(round(self.qmin - low / scale))
        zero = min(max(zero, self.qmin), self.qmax)
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero, self.qmin, self.qmax),) + (
            args[1:]
        )


def _inference_mode(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: run a BatchNorm on its running statistics, even while training."""
    module.training = False


def qat_(module: nn.Module, config: QATConfig, model: Any, teacher: Any | None = None) -> QATReport:
    """Train ``module`` in place with int8 fake quantization; its weights end on the grid.

    Args:
        module: the (possibly pruned) copy of the model's module.
        config: the QATConfig.
        model: the Model the module came from (its task and preprocessing).
        teacher: a Model to distil from, or None.

    Raises:
        WorkbenchError: a module without convolution or linear layers, or as finetune_.
    """
    layers = [m for m in module.modules() if isinstance(m, PRUNABLE_TYPES)]
    if not layers:
        raise WorkbenchError(
            f"{type(module).__name__} has no Conv1d, Conv2d or Linear layer to quantize",
            "use post-training quantization (--quantize int8) instead of QAT",
        )
    qmin, qmax = ACTIVATION_RANGES[config.activation_type]
    hooks = []
    try:
        for m in layers:
            w = m.weight.detach()
            mask = (w != 0).to(w.dtype) if bool((w == 0).any()) else None
            parametrize.register_parametrization(m, "weight", _WeightFakeQuant(mask))
            hooks.append(m.register_forward_pre_hook(_InputFakeQuant(qmin, qmax)))
        if config.freeze_bn:
            for bn in module.modules():
                if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                    hooks.append(bn.register_forward_pre_hook(_inference_mode))
        tuned = finetune_(module, config.finetune_config(), model, teacher)
    finally:
        for h in hooks:
            h.remove()
        for m in layers:
            if parametrize.is_parametrized(m, "weight"):
                # Keep the fake-quantized (on-grid, masked) values as the plain weight.
                with torch.no_grad():
                    parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        module.eval()
    return QATReport(
        epochs=config.epochs,
        quantized_layers=len(layers),
        teacher=None if teacher is None else teacher.name,
        final_loss=tuned.final_loss,
        final_train_accuracy=tuned.final_train_accuracy,
    )
