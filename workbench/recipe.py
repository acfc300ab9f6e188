"""Step configs and the Recipe: an ordered tuple of them.

Configs are frozen dataclasses validated in ``__post_init__`` with messages that
say what to use instead; each round-trips through ``to_dict()``/``from_dict()``.
A config's ``stage`` says where it acts: ``"torch"`` steps change the PyTorch
module before export, ``"artifact"`` steps change the exported artifact (the runtime's
file, e.g. ONNX), through the handlers that runtime registers for them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from workbench.errors import WorkbenchError

__all__ = [
    "CONFIG_TYPES",
    "DistillConfig",
    "FineTuneConfig",
    "GradualPruneConfig",
    "PruneConfig",
    "QATConfig",
    "QuantizeConfig",
    "Recipe",
    "StepConfig",
    "config_from_dict",
]

PRUNE_METHODS = ("unstructured", "structured")
PRUNE_SCOPES = ("global", "layer")
# How unstructured pruning ranks weights: |w| ("magnitude"), or |w| times the scale of
# the batch norm that normalises the weight's output channel ("bn-scaled").
PRUNE_IMPORTANCES = ("magnitude", "bn-scaled")
QUANT_SCHEMES = ("dynamic", "int8", "fp16")
# "meanminmax": each activation's range is the mean over calibration images of each
# image's min and max (NNCF's default for per-tensor activations), not the extremes.
CALIBRATIONS = ("minmax", "meanminmax", "entropy", "percentile")
INT8_TYPES = ("int8", "uint8")
# The input and output type of a full-integer int8 TFLite file: int8 (what a
# microcontroller feeds) or float32 with QUANTIZE/DEQUANTIZE inside. ONNX Runtime's QDQ
# models always take and give float.
IO_TYPES = ("float", "int8")
# 7-bit weights where u8 x s8 products would saturate VPMADDUBSW's 16-bit sums on x86
# CPUs without VNNI (AVX2, AVX-512 without VNNI): nowhere, the layers reading the model
# input (NNCF's default, "first_layer"), or every weight layer.
OVERFLOW_FIXES = ("none", "first_layer", "all")
MAX_SPARSITY = 0.95
# Unstructured pruning may go further: zeroed weights leave the graph whole, and a
# stacked recipe (prune, distil, int8) needs ~97% of the big layers' weights gone before
# the zeros outweigh the int8 file's scales and biases (digits-mobilenetv2: 20x at 97%).
MAX_UNSTRUCTURED_SPARSITY = 0.99
MAX_QUANT_ACCURACY_DROP = 100.0  # points: QuantizeConfig.max_accuracy_drop's upper bound


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise WorkbenchError(
            f"{name} {value!r} is not supported", f"use one of: {', '.join(allowed)}"
        )


class StepConfig:
    """Base of every step config: a ``kind`` for dispatch and dict round-trips."""

    kind: ClassVar[str]
    stage: ClassVar[str]

    def to_dict(self) -> dict:
        d = asdict(self)  # type: ignore[call-overload]
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return {"kind": self.kind, **d}

    @classmethod
    def from_dict(cls, d: dict) -> StepConfig:
        d = dict(d)
        kind = d.pop("kind", cls.kind)
        if kind != cls.kind:
            raise WorkbenchError(
                f"a {kind!r} step cannot be read as {cls.kind!r}", "check the recipe"
            )
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise WorkbenchError(
                f"unknown {cls.kind} setting(s): {', '.join(sorted(unknown))}",
                f"use only: {', '.join(sorted(names))}",
            )
        for f in fields(cls):  # type: ignore[arg-type]
            if isinstance(d.get(f.name), list):
                d[f.name] = tuple(d[f.name])
        return cls(**d)

    def label(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class PruneConfig(StepConfig):
    """Magnitude pruning of a PyTorch model.

    ``unstructured`` zeroes individual weights (the dense file keeps its size; only the
    compressed file shrinks). ``structured`` removes whole channels, so MACs, the
    dense file and latency drop, keeping coupled layers consistent.
    """

    kind: ClassVar[str] = "prune"
    stage: ClassVar[str] = "torch"

    method: str = "unstructured"  # "unstructured" or "structured"
    sparsity: float = 0.5  # fraction of weights (unstructured) or channels (structured) removed
    scope: str = "global"  # "global": one threshold for all layers; "layer": each layer alone
    keep_first_last: bool = True  # leave the first and last prunable layers dense
    exclude: tuple[str, ...] = ()  # module names never pruned (as in model.named_modules())
    # Structured only: channels kept per layer (layers of >= 8 * round_to channels) are
    # rounded to a multiple of this. ONNX
    # Runtime's convolutions run far slower on odd channel counts (measured on
    # digits-resnet18 at half the MACs: 1.25 ms with counts like 37 and 77, 0.50 ms with
    # multiples of 8, 0.97 ms dense); 1 keeps the exact counts.
    round_to: int = 8
    # The largest fraction of any one layer's weights (channels, structured) pruning may
    # remove; the rest of a global request goes to the other layers. One global magnitude
    # threshold empties layers whose weights are small only because a batch norm rescales
    # them: at 95% on digits-mobilenetv2 it left 2 of the 409,600 weights of the last
    # 1x1 conv and 12-25 of each late expansion conv, and training collapsed. None: no cap.
    max_layer_sparsity: float | None = None
    # Unstructured only: "bn-scaled" ranks each weight by |w| * |gamma| / sqrt(var + eps)
    # of the batch norm right after its layer, the weight's size in the function the
    # network computes. A batch norm rescales its channels freely, so raw magnitudes of
    # different layers are not comparable: one global |w| threshold on digits-mobilenetv2
    # empties the late 1x1 convs (small weights, large BN scales). Measured one-shot at
    # 68%: 13.5% test accuracy by |w|, 64.8% bn-scaled.
    importance: str = "magnitude"

    def __post_init__(self) -> None:
        _choice("pruning method", self.method, PRUNE_METHODS)
        _choice("pruning importance", self.importance, PRUNE_IMPORTANCES)
        if self.importance != "magnitude" and self.method != "unstructured":
            raise WorkbenchError(
                f"importance {self.importance!r} applies to unstructured pruning only",
                "use importance='magnitude' with structured pruning (it ranks whole channels "
                "by their group's L1 norm)",
            )
        if (
            isinstance(self.round_to, bool)
            or not isinstance(self.round_to, int)
            or self.round_to < 1
        ):
            raise WorkbenchError(
                f"round_to {self.round_to!r} is not a whole number >= 1",
                "use 8 (or 16) for SIMD-friendly channel counts, or 1 for exact counts",
            )
        _choice("pruning scope", self.scope, PRUNE_SCOPES)
        limit = self.max_sparsity()
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)):
            raise WorkbenchError(
                f"sparsity {self.sparsity!r} is not a number", f"use a number from 0 to {limit}"
            )
        if not 0.0 <= float(self.sparsity) <= limit:
            raise WorkbenchError(
                f"sparsity {self.sparsity} is out of range",
                f"use a fraction from 0 to {limit} for {self.method} pruning (0.8 removes 80% "
                "of the weights)",
            )
        object.__setattr__(self, "sparsity", float(self.sparsity))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        cap = self.max_layer_sparsity
        if cap is not None:
            if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap <= 1:
                raise WorkbenchError(
                    f"max_layer_sparsity {cap!r} is not a fraction above 0 and at most 1",
                    "use e.g. 0.98 (no layer loses more than 98% of its weights), or None for no cap",
                )
            if cap < self.sparsity:
                raise WorkbenchError(
                    f"max_layer_sparsity {cap:g} is below the sparsity {self.sparsity:g}: no "
                    "layer may lose enough for the whole model to reach it",
                    f"use a cap of at least {self.sparsity:g} (e.g. 0.98), or lower the sparsity",
                )
            object.__setattr__(self, "max_layer_sparsity", float(cap))

    def max_sparsity(self) -> float:
        """The largest sparsity this method accepts."""
        return MAX_UNSTRUCTURED_SPARSITY if self.method == "unstructured" else MAX_SPARSITY

    def _amount_label(self) -> str:
        """How much the step prunes, in its label."""
        return f"{self.sparsity:g}"

    def label(self) -> str:
        scope = "" if self.scope == "global" else "-layer"
        label = f"prune-{self.method}{scope}-{self._amount_label()}"
        if not self.keep_first_last:
            label += "-all"
        if self.exclude:
            label += "-keep(" + ",".join(self.exclude) + ")"
        if self.method == "structured" and self.round_to != 8:
            label += f"-round{self.round_to}"
        if self.max_layer_sparsity is not None:
            label += f"-cap{self.max_layer_sparsity:g}"
        if self.importance != "magnitude":
            label += f"-{self.importance}"
        return label

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d["importance"] == "magnitude":
            # The default stays out: recipes (and cache keys) from before it existed keep
            # their digests.
            del d["importance"]
        return d


@dataclass(frozen=True)
class QuantizeConfig(StepConfig):
    """Quantization of the exported ONNX model with ONNX Runtime's tools.

    ``int8`` is static quantization in QDQ format calibrated on training images;
    ``dynamic`` quantizes weights ahead of time and activations at run time;
    ``fp16`` converts weights and compute to float16.
    """

    kind: ClassVar[str] = "quantize"
    stage: ClassVar[str] = "artifact"

    scheme: str = "int8"  # "int8" (static QDQ), "dynamic" or "fp16"
    per_channel: bool = True  # one scale per output channel of each weight
    calibration: str = "minmax"  # one of CALIBRATIONS (int8 only)
    calibration_samples: int = 128  # training images used for calibration (int8 only)
    # uint8 activations with int8 weights: on x86-64 this lets ONNX Runtime fuse every
    # QDQ Conv and Add into QLinear kernels (measured here: ResNet-18 0.58 ms uint8 vs
    # 2.6 ms int8 activations vs 0.97 ms float); on Arm, int8 for both is the better choice.
    activation_type: str = "uint8"  # "int8" or "uint8"
    weight_type: str = "int8"  # "int8" or "uint8"
    keep_float: tuple[str, ...] = ()  # node names or op types (e.g. "Gemm") left in float
    # int8 only: shift each quantized Conv/Gemm bias by the mean change of its output
    # (float vs quantized, per channel) on the calibration images.
    bias_correction: bool = False
    # One of OVERFLOW_FIXES (int8 only): where weights get 7 bits. "first_layer" (NNCF's
    # default) measured on the digits samples: equal accuracy on digits-cnn and
    # digits-resnet18, one more test image right on digits-mobilenetv2 (98.89% vs 98.70%).
    overflow_fix: str = "first_layer"
    # int8 only: keep the fewest, most sensitive weight layers in float so that accuracy
    # on a held-out part of the training split drops by at most this many points (None: off).
    max_accuracy_drop: float | None = None
    # One of IO_TYPES (int8 only): the input/output type of the int8 file. "int8" is a
    # TFLite (LiteRT, TFLite Micro) choice; ONNX Runtime refuses it.
    io_type: str = "float"

    def __post_init__(self) -> None:
        _choice("quantization scheme", self.scheme, QUANT_SCHEMES)
        _choice("int8 input/output type", self.io_type, IO_TYPES)
        if self.io_type != "float" and self.scheme != "int8":
            raise WorkbenchError(
                f"io_type {self.io_type!r} applies to full-integer int8 only, not {self.scheme!r}",
                "use scheme='int8', or leave io_type at 'float'",
            )
        _choice("overflow fix", self.overflow_fix, OVERFLOW_FIXES)
        if not isinstance(self.bias_correction, bool):
            raise WorkbenchError(
                f"bias_correction {self.bias_correction!r} is not True or False",
                "use bias_correction=True or False",
            )
        # Settings of static int8 only: silently dropped for another scheme, a figure
        # measured without them would be taken as measured with them.
        if self.scheme != "int8":
            if self.bias_correction:
                raise WorkbenchError(
                    f"bias_correction applies to int8 only, not {self.scheme!r}",
                    "use scheme='int8', or leave bias_correction at False",
                )
            if self.overflow_fix != QuantizeConfig.overflow_fix:
                raise WorkbenchError(
                    f"overflow_fix applies to int8 only, not {self.scheme!r}",
                    f"use scheme='int8', or leave overflow_fix at {QuantizeConfig.overflow_fix!r}",
                )
        drop = self.max_accuracy_drop
        if drop is not None:
            if isinstance(drop, bool) or not isinstance(drop, (int, float)):
                raise WorkbenchError(
                    f"max_accuracy_drop {drop!r} is not a number",
                    "use points of accuracy such as 0.5, or None to turn it off",
                )
            if not 0.0 <= float(drop) <= MAX_QUANT_ACCURACY_DROP:
                raise WorkbenchError(
                    f"max_accuracy_drop {drop} is out of range",
                    f"use points of accuracy from 0 to {MAX_QUANT_ACCURACY_DROP:g} (0.5 = half a point)",
                )
            if self.scheme != "int8":
                raise WorkbenchError(
                    f"max_accuracy_drop applies to int8 only, not {self.scheme!r}",
                    "use scheme='int8', or leave max_accuracy_drop at None",
                )
            object.__setattr__(self, "max_accuracy_drop", float(drop))

        _choice("calibration method", self.calibration, CALIBRATIONS)
        _choice("activation type", self.activation_type, INT8_TYPES)
        _choice("weight type", self.weight_type, INT8_TYPES)
        if isinstance(self.calibration_samples, bool) or not isinstance(
            self.calibration_samples, int
        ):
            raise WorkbenchError(
                f"calibration_samples {self.calibration_samples!r} is not a whole number",
                "use a whole number such as 128",
            )
        if self.calibration_samples < 1:
            raise WorkbenchError(
                f"calibration needs at least one sample, got {self.calibration_samples}",
                "use a calibration sample count of 1 or more (128 is a good default)",
            )
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def label(self) -> str:
        if self.scheme == "fp16":
            base = "fp16"
        else:
            base = "int8-" + (self.calibration if self.scheme == "int8" else "dynamic")
            base += "-pc" if self.per_channel else "-pt"
            defaults = QuantizeConfig()
            if self.scheme == "int8" and self.activation_type != defaults.activation_type:
                base += f"-a{self.activation_type}"
            if self.weight_type != defaults.weight_type:
                base += f"-w{self.weight_type}"
            if self.scheme == "int8" and self.calibration_samples != defaults.calibration_samples:
                base += f"-n{self.calibration_samples}"
            if self.scheme == "int8" and self.overflow_fix != defaults.overflow_fix:
                base += f"-of{self.overflow_fix.replace('_layer', '')}"
            if self.scheme == "int8" and self.bias_correction != defaults.bias_correction:
                base += "-bc" if self.bias_correction else "-nobc"
            if self.max_accuracy_drop is not None:
                base += f"-drop{self.max_accuracy_drop:g}"
            if self.io_type != "float":
                base += f"-io{self.io_type}"
        if self.keep_float:
            base += "-float(" + ",".join(self.keep_float) + ")"
        return base


@dataclass(frozen=True)
class FineTuneConfig(StepConfig):
    """Retrain the (pruned) PyTorch model on the task's training part, before export.

    With ``teacher`` set to a model name, the training also distils that model's
    softened predictions (knowledge distillation). Pruned weights stay zero.
    """

    kind: ClassVar[str] = "finetune"
    stage: ClassVar[str] = "torch"

    epochs: int = 3  # passes over the training part (1257 digits images)
    lr: float = 2e-3  # peak learning rate of a one-cycle AdamW schedule
    batch_size: int = 64
    teacher: str | None = None  # a model name to distil from, e.g. "digits-resnet18"
    temperature: float = 4.0  # softens both distributions in the distillation loss
    alpha: float = 0.7  # weight of the distillation term (the rest: cross-entropy)
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low, high in (("epochs", 1, 100), ("batch_size", 1, 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise WorkbenchError(
                    f"fine-tuning {name} {value!r} is out of range",
                    f"use a whole number from {low} to {high}",
                )
        if not 0 < float(self.lr) <= 1:
            raise WorkbenchError(
                f"learning rate {self.lr!r} is out of range", "use a value such as 0.002"
            )
        if not 0 <= float(self.alpha) <= 1 or float(self.temperature) <= 0:
            raise WorkbenchError(
                "distillation needs 0 <= alpha <= 1 and temperature > 0",
                "use alpha=0.7 and temperature=4 (the defaults) or similar",
            )

    def label(self) -> str:
        label = f"finetune-{self.epochs}ep"
        if self.teacher:
            label += f"-distill({self.teacher})"
        return label


GRADUAL_SCHEDULES = ("cubic", "linear")
DISTILL_INITS = ("scratch", "pretrained")


def _whole(what: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WorkbenchError(
            f"{what} {value!r} is out of range", f"use a whole number from {low} to {high}"
        )


def _training(lr: Any, batch_size: Any, temperature: Any, alpha: Any) -> None:
    """The checks every training step shares (as FineTuneConfig's)."""
    _whole("batch_size", batch_size, 1, 4096)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < float(lr) <= 1:
        raise WorkbenchError(f"learning rate {lr!r} is out of range", "use a value such as 0.002")
    if not 0 <= float(alpha) <= 1 or float(temperature) <= 0:
        raise WorkbenchError(
            "distillation needs 0 <= alpha <= 1 and temperature > 0",
            "use alpha=0.7 and temperature=4 (the defaults) or similar",
        )


@dataclass(frozen=True)
class GradualPruneConfig(PruneConfig):
    """Magnitude pruning raised over a schedule, with fine-tuning after every step.

    Step ``k`` of ``steps`` prunes to ``sparsity * (1 - (1 - k/steps)**3)`` (``cubic``,
    Zhu & Gupta, "To prune, or not to prune", 2017: large steps first while the network
    has redundancy to spare, small ones at the end) or ``sparsity * k/steps``
    (``linear``), then fine-tunes ``epochs_per_step`` epochs (distilling from
    ``teacher`` when set) with pruned weights held at zero. ``sparsities`` gives the
    schedule explicitly instead; it must rise and end at ``sparsity``.

    Structured pruning can aim at a MACs ratio instead of a channel sparsity:
    ``macs_ratio`` is the fraction of the model's MACs to keep (0.5 halves them), with
    ``sparsity`` left unset. Step ``k`` then keeps ``1 - (1 - macs_ratio) * shape(k)`` of
    the float MACs, ``shape`` being the schedule's (cubic or linear) rise from 0 to 1,
    and its channel sparsity is searched on the module as the earlier steps left it
    (pruned and fine-tuned): fine-tuning re-ranks the channels, so one channel sparsity
    found on the float weights removes more MACs gradually than it did one-shot.
    """

    kind: ClassVar[str] = "gradual_prune"
    stage: ClassVar[str] = "torch"

    # None: PruneConfig's default 0.5, unless macs_ratio sets the target instead.
    sparsity: float | None = None  # type: ignore[assignment]
    steps: int = 4
    schedule: str = "cubic"  # "cubic" or "linear"
    sparsities: tuple[float, ...] = ()  # an explicit schedule (overrides steps/schedule)
    epochs_per_step: int = 1
    lr: float = 2e-3
    batch_size: int = 64
    teacher: str | None = None
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0
    # Structured only: the fraction of the float MACs to keep (MACs after / before), the
    # target instead of ``sparsity``; None: prune to ``sparsity``.
    macs_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.macs_ratio is None:
            if self.sparsity is None:
                object.__setattr__(self, "sparsity", PruneConfig.sparsity)
            super().__post_init__()
        else:
            self._check_macs_ratio()
            # PruneConfig's checks (method, scope, round_to, cap) on a sparsity of 0;
            # each step's channel sparsity is found while pruning.
            object.__setattr__(self, "sparsity", 0.0)
            try:
                super().__post_init__()
            finally:
                object.__setattr__(self, "sparsity", None)
        _choice("pruning schedule", self.schedule, GRADUAL_SCHEDULES)
        _whole("gradual pruning steps", self.steps, 1, 50)
        _whole("epochs_per_step", self.epochs_per_step, 1, 100)
        _training(self.lr, self.batch_size, self.temperature, self.alpha)
        values = tuple(self.sparsities)
        if values:
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                raise WorkbenchError(
                    f"the pruning schedule {list(values)} holds a non-number",
                    "give sparsities as fractions, e.g. (0.4, 0.6, 0.7, 0.8)",
                )
            values = tuple(float(v) for v in values)
            rising = all(b > a for a, b in zip(values, values[1:], strict=False))
            if not rising or values[0] <= 0:
                raise WorkbenchError(
                    f"the pruning schedule {list(values)} does not rise step by step",
                    "give increasing sparsities above 0, e.g. (0.4, 0.6, 0.7, 0.8)",
                )
            if abs(values[-1] - self.sparsity) > 1e-9:
                raise WorkbenchError(
                    f"the pruning schedule {list(values)} ends at {values[-1]:g}, not at the "
                    f"requested sparsity {self.sparsity:g}",
                    f"end the schedule at {self.sparsity:g}, or set sparsity={values[-1]:g}",
                )
            object.__setattr__(self, "steps", len(values))
        object.__setattr__(self, "sparsities", values)

    def _check_macs_ratio(self) -> None:
        ratio = self.macs_ratio
        if self.sparsity is not None:
            raise WorkbenchError(
                f"both sparsity ({self.sparsity}) and macs_ratio ({ratio}) set the pruning target",
                "give one: sparsity (the fraction of channels to remove) or macs_ratio (the "
                "fraction of the MACs to keep)",
            )
        if self.method != "structured":
            raise WorkbenchError(
                f"macs_ratio applies to structured pruning only, not {self.method!r} "
                "(zeroed weights leave the MACs as they are)",
                "use method='structured' (CLI --prune structured), or set sparsity instead",
            )
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise WorkbenchError(
                f"macs_ratio {ratio!r} is not a number",
                "use the fraction of the MACs to keep, e.g. 0.5 to halve them",
            )
        if not 0.0 < float(ratio) < 1.0:
            raise WorkbenchError(
                f"macs_ratio {ratio} is out of range",
                "use the fraction of the MACs to keep, above 0 and below 1 (0.5 halves them)",
            )
        if self.sparsities:
            raise WorkbenchError(
                "an explicit sparsities schedule and macs_ratio both set the steps",
                "drop sparsities: with macs_ratio the steps follow steps and schedule",
            )
        object.__setattr__(self, "macs_ratio", float(ratio))

    def _rise(self) -> tuple[float, ...]:
        """The schedule's shape: the share of the final amount reached after each step."""
        n = self.steps
        if self.schedule == "linear":
            return tuple(k / n for k in range(1, n + 1))
        return tuple(1.0 - (1.0 - k / n) ** 3 for k in range(1, n + 1))

    def macs_schedule(self) -> tuple[float, ...]:
        """With ``macs_ratio``: the fraction of the float MACs kept after each step, from
        near 1 down to ``macs_ratio`` at the last, shaped as the sparsity schedule."""
        if self.macs_ratio is None:
            raise WorkbenchError(
                "this gradual pruning targets a sparsity, not a MACs ratio",
                "set macs_ratio (structured) to prune to a fraction of the MACs",
            )
        return tuple(1.0 - (1.0 - self.macs_ratio) * r for r in self._rise())

    def schedule_values(self) -> tuple[float, ...]:
        """The cumulative sparsity after each step; the last is ``sparsity``."""
        if self.macs_ratio is not None:
            raise WorkbenchError(
                "this gradual pruning targets a MACs ratio: its channel sparsities are found "
                "step by step while pruning",
                "read macs_schedule() for the MACs kept after each step",
            )
        if self.sparsities:
            return self.sparsities
        n = self.steps
        if self.schedule == "linear":
            return tuple(self.sparsity * k / n for k in range(1, n + 1))
        return tuple(self.sparsity * (1.0 - (1.0 - k / n) ** 3) for k in range(1, n + 1))

    def step_config(self, sparsity: float) -> PruneConfig:
        """The one-shot PruneConfig of one step of the schedule."""
        return PruneConfig(
            method=self.method,
            sparsity=min(max(sparsity, 0.0), self.max_sparsity()),
            scope=self.scope,
            keep_first_last=self.keep_first_last,
            exclude=self.exclude,
            round_to=self.round_to,
            max_layer_sparsity=(
                None
                if self.max_layer_sparsity is None
                else max(self.max_layer_sparsity, min(max(sparsity, 0.0), self.max_sparsity()))
            ),
            importance=self.importance,
        )

    def finetune_config(self, step: int) -> FineTuneConfig:
        """The fine-tuning after step ``step`` (0-based)."""
        return FineTuneConfig(
            epochs=self.epochs_per_step,
            lr=self.lr,
            batch_size=self.batch_size,
            teacher=self.teacher,
            temperature=self.temperature,
            alpha=self.alpha,
            seed=self.seed + step,
        )

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d["macs_ratio"] is None:
            # Unset, it stays out: the recipes (and cache keys) from before it existed
            # keep their digests.
            del d["macs_ratio"]
        return d

    def _amount_label(self) -> str:
        if self.macs_ratio is None:
            return super()._amount_label()
        return f"macs{self.macs_ratio:g}"

    def label(self) -> str:
        shape = "x".join(f"{v:g}" for v in self.sparsities) if self.sparsities else self.schedule
        label = super().label() + f"-gradual{self.steps}-{shape}-{self.epochs_per_step}ep"
        if self.teacher:
            label += f"-distill({self.teacher})"
        return label


@dataclass(frozen=True)
class QATConfig(StepConfig):
    """Quantization-aware training: fine-tune with int8 fake quantization, export int8.

    Weights are fake-quantized per output channel, symmetric int8, and the input of every
    convolution and linear layer per tensor (``activation_type``, with moving min/max
    ranges), with straight-through gradients. The trained weights are then exported and
    quantized by the same static QDQ path as ``QuantizeConfig(scheme="int8")``, whose
    per-channel symmetric weight scales reproduce the training grid exactly; so QAT
    replaces post-training quantization in a recipe instead of adding to it. In LiteRT
    the converter's full-integer int8 (per-channel symmetric weights as well) quantizes
    the trained weights to exactly the trained integers too.
    """

    kind: ClassVar[str] = "qat"
    stage: ClassVar[str] = "torch"

    epochs: int = 2
    # Small: the float weights are already trained (PyTorch's MobileNetV2 QAT tutorial
    # uses 1e-4 too). Measured on digits-mobilenetv2 (2 epochs, frozen batch norms,
    # distilled from itself; test split, ONNX Runtime): 5e-4 lost 0.56 point, 2e-4 0.19,
    # 1e-4 none (LiteRT: 0.74 and none); post-training int8 loses 0.19.
    lr: float = 1e-4
    batch_size: int = 64
    teacher: str | None = None  # distil from this model while training
    temperature: float = 4.0
    alpha: float = 0.7
    activation_type: str = "uint8"  # of the exported artifact, as QuantizeConfig's
    calibration_samples: int = 128  # training images calibrating the exported activations
    seed: int = 0
    # Keep BatchNorm in inference mode while training (its running statistics, the ones the
    # export folds into the convolutions, stay fixed; its scale and shift still train).
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        _whole("QAT epochs", self.epochs, 1, 100)
        if not isinstance(self.freeze_bn, bool):
            raise WorkbenchError(
                f"freeze_bn {self.freeze_bn!r} is not a boolean", "use True or False"
            )
        _training(self.lr, self.batch_size, self.temperature, self.alpha)
        _choice("activation type", self.activation_type, INT8_TYPES)
        _whole("calibration_samples", self.calibration_samples, 1, 100_000)

    def quantize_config(self) -> QuantizeConfig:
        """The int8 export of the trained weights (per-channel weights, as trained).

        Every layer keeps 8-bit weights (``overflow_fix="none"``): QAT trains every layer
        on the [-127, 127] grid, and the post-training default's 7-bit first layer would
        round the trained first-layer integers again onto a grid half as fine (measured:
        digits-mobilenetv2's first convolution exported in [-64, 64]). LiteRT's converter
        keeps 8 bits everywhere too, so both runtimes hold exactly the trained integers.
        """
        return QuantizeConfig(
            scheme="int8",
            per_channel=True,
            calibration="minmax",
            calibration_samples=self.calibration_samples,
            activation_type=self.activation_type,
            overflow_fix="none",
        )

    def finetune_config(self) -> FineTuneConfig:
        """The training loop's settings."""
        return FineTuneConfig(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            teacher=self.teacher,
            temperature=self.temperature,
            alpha=self.alpha,
            seed=self.seed,
        )

    def label(self) -> str:
        label = f"qat-int8-{self.epochs}ep"
        if self.activation_type != "uint8":
            label += f"-a{self.activation_type}"
        if self.freeze_bn:
            label += "-frozenbn"
        if self.teacher:
            label += f"-distill({self.teacher})"
        return label


@dataclass(frozen=True)
class DistillConfig(StepConfig):
    """Replace the model by a student trained on the model's (or ``teacher``'s) predictions.

    ``student`` is a sample model name (e.g. "digits-cnn"); empty means the model's own
    architecture. ``width`` scales the student's channels (architectures that take a
    width: DigitsCNN, MobileNetV2). ``init="scratch"`` starts from seeded random weights;
    ``"pretrained"`` from the student sample's own trained weights (width 1 only). The
    loss is finetune's: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE. It
    must be the recipe's first step: every later step acts on the student.
    """

    kind: ClassVar[str] = "distill"
    stage: ClassVar[str] = "torch"

    student: str = ""  # a sample name; "" = the model's own architecture
    width: float = 1.0  # channel multiplier of the student's architecture
    teacher: str | None = None  # None: the model the recipe is applied to
    init: str = "scratch"  # "scratch" or "pretrained"
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.student, str):
            raise WorkbenchError(
                f"student {self.student!r} is not a model name",
                "name a sample model, e.g. student='digits-cnn', or '' for the model's own architecture",
            )
        _choice("student initialisation", self.init, DISTILL_INITS)
        if (
            isinstance(self.width, bool)
            or not isinstance(self.width, (int, float))
            or not 0.05 <= float(self.width) <= 4
        ):
            raise WorkbenchError(
                f"student width {self.width!r} is out of range",
                "use a multiplier from 0.05 to 4, e.g. 0.5 for half the channels",
            )
        object.__setattr__(self, "width", float(self.width))
        if self.init == "pretrained" and (not self.student or self.width != 1.0):
            raise WorkbenchError(
                "a pretrained student must be a sample at its own width",
                "name a student sample with width=1, or use init='scratch'",
            )
        _whole("distillation epochs", self.epochs, 1, 200)
        _training(self.lr, self.batch_size, self.temperature, self.alpha)

    def finetune_config(self) -> FineTuneConfig:
        """The training loop's settings (the teacher is passed separately)."""
        return FineTuneConfig(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            temperature=self.temperature,
            alpha=self.alpha,
            seed=self.seed,
        )

    def label(self) -> str:
        label = "distill(" + (self.student or "self")
        if self.width != 1.0:
            label += f"-w{self.width:g}"
        if self.teacher:
            label += f"<-{self.teacher}"
        return label + f")-{self.init}-{self.epochs}ep"


def _check_training_steps(steps: tuple[StepConfig, ...]) -> None:
    """Order rules of the training steps (distillation, gradual pruning, QAT)."""
    kinds = [s.kind for s in steps]
    if "distill" in kinds and kinds.index("distill") != 0:
        raise WorkbenchError(
            "distillation is not the recipe's first step",
            "put distill first: it replaces the model, and every later step acts on the student",
        )
    if "prune" in kinds and "gradual_prune" in kinds:
        raise WorkbenchError(
            "the recipe prunes twice (one-shot and gradual)", "use one pruning step"
        )
    if "gradual_prune" in kinds and "finetune" in kinds:
        if kinds.index("finetune") < kinds.index("gradual_prune"):
            raise WorkbenchError(
                "fine-tuning comes before pruning in the recipe",
                "prune first, then fine-tune: the training repairs what pruning removed",
            )
    if "qat" in kinds:
        if "quantize" in kinds:
            raise WorkbenchError(
                "QAT already produces the int8 artifact, so a quantize step on top makes no sense",
                "drop the quantize step (--quantize) or QAT (--qat-epochs)",
            )
        torch_kinds = [s.kind for s in steps if s.stage == "torch"]
        if torch_kinds[-1] != "qat":
            raise WorkbenchError(
                f"{torch_kinds[-1]} comes after QAT in the recipe",
                "put QAT last among the PyTorch steps: later training would leave its int8 grid",
            )


CONFIG_TYPES: dict[str, type[StepConfig]] = {
    c.kind: c
    for c in (
        PruneConfig,
        FineTuneConfig,
        QuantizeConfig,
        GradualPruneConfig,
        QATConfig,
        DistillConfig,
    )
}


def config_from_dict(d: dict) -> StepConfig:
    """The step config a ``to_dict()`` output describes."""
    try:
        cls = CONFIG_TYPES[d["kind"]]
    except KeyError:
        raise WorkbenchError(
            f"unknown step kind {d.get('kind')!r}", f"use one of: {', '.join(CONFIG_TYPES)}"
        ) from None
    return cls.from_dict(d)


_STAGE_ORDER = {"torch": 0, "artifact": 1}


def _check_step(
    value: Any,
    what: str,
    cls: type[StepConfig] = StepConfig,
    example: str = "PruneConfig(sparsity=0.5) or QuantizeConfig(scheme='int8')",
) -> None:
    """Raise WorkbenchError unless ``value`` is None or a ``cls`` step config; the
    message names the config to write instead (a string like "int8" is the usual slip)."""
    if value is None and cls is not StepConfig:
        return
    if not isinstance(value, cls):
        # The usual slip is a scheme or method name: suggest the config it stands for.
        if isinstance(value, str) and value in QUANT_SCHEMES:
            example = f"QuantizeConfig(scheme={value!r})"
        elif isinstance(value, str) and value in PRUNE_METHODS:
            example = f"PruneConfig(method={value!r}, sparsity=0.5)"
        kind = "step config" if cls is StepConfig else cls.__name__
        raise WorkbenchError(
            f"{what} must be a {kind}, not {type(value).__name__} {value!r}"[:200],
            f"pass {example}",
        )


@dataclass(frozen=True)
class Recipe:
    """An ordered tuple of step configs; the empty recipe is the baseline.

    PyTorch steps must come before ONNX steps (a model is exported once, between them).
    """

    steps: tuple[StepConfig, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.steps, (StepConfig, str)) or not hasattr(self.steps, "__iter__"):
            raise WorkbenchError(
                f"Recipe takes a tuple of step configs, not {self.steps!r}"[:200],
                "write Recipe((PruneConfig(sparsity=0.5), QuantizeConfig(scheme='int8'))) "
                "or Recipe.of(prune=..., quantize=...)",
            )
        object.__setattr__(self, "steps", tuple(self.steps))
        for step in self.steps:
            _check_step(step, "a step")
        stages = [_STAGE_ORDER[s.stage] for s in self.steps]
        if stages != sorted(stages):
            raise WorkbenchError(
                "a PyTorch step (pruning) comes after an ONNX step (quantization) in the recipe",
                "put pruning before quantization: the model is exported to ONNX between them",
            )
        kinds = [s.kind for s in self.steps]
        if (
            "prune" in kinds
            and "finetune" in kinds
            and kinds.index("finetune") < kinds.index("prune")
        ):
            raise WorkbenchError(
                "fine-tuning comes before pruning in the recipe",
                "prune first, then fine-tune: the training repairs what pruning removed",
            )
        if len(set(kinds)) != len(kinds):
            raise WorkbenchError(
                f"the recipe repeats a step kind: {kinds}", "use each kind of step at most once"
            )
        _check_training_steps(self.steps)

    @property
    def is_baseline(self) -> bool:
        return not self.steps

    def torch_steps(self) -> tuple[StepConfig, ...]:
        return tuple(s for s in self.steps if s.stage == "torch")

    def artifact_steps(self) -> tuple[StepConfig, ...]:
        """The steps that change the exported artifact (quantization), in order."""
        return tuple(s for s in self.steps if s.stage == "artifact")

    # The name from when every artifact was an ONNX file; kept for callers of that time.
    onnx_steps = artifact_steps

    def get(self, kind: str) -> StepConfig | None:
        """The step of this kind, or None."""
        return next((s for s in self.steps if s.kind == kind), None)

    @property
    def name(self) -> str:
        """A short human-readable label such as ``prune-unstructured-0.5+int8-minmax-pc``."""
        return "+".join(s.label() for s in self.steps) or "baseline"

    def to_dict(self) -> list[dict]:
        return [s.to_dict() for s in self.steps]

    @classmethod
    def from_dict(cls, d: list[dict]) -> Recipe:
        return cls(tuple(config_from_dict(s) for s in d))

    def digest(self) -> str:
        """A stable hash of the recipe's settings."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def of(
        cls,
        prune: PruneConfig | None = None,
        quantize: QuantizeConfig | None = None,
        finetune: FineTuneConfig | None = None,
    ) -> Recipe:
        """The recipe: prune, then fine-tune, then quantize (each optional).

        Configs are placed by their kind, so ``Recipe.of(QuantizeConfig())`` is the
        one-step int8 recipe; anything but a step config (a string such as "int8") is
        refused with the config to write instead.
        """
        examples = {
            "prune": "PruneConfig(method='unstructured', sparsity=0.5)",
            "quantize": "QuantizeConfig(scheme='int8')",
            "finetune": "FineTuneConfig(epochs=3)",
        }
        given = {"prune": prune, "quantize": quantize, "finetune": finetune}
        for what, value in given.items():
            if value is not None:
                _check_step(value, what, StepConfig, examples[what])
        order = {"prune": 0, "finetune": 1, "quantize": 2}
        steps = sorted((s for s in given.values() if s is not None), key=lambda s: order[s.kind])
        return cls(tuple(steps))
