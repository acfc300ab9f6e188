"""PruningPanel and QuantizationPanel: controls whose state is one step config.

Each panel holds its settings as traits linked to its controls, and one observer
turns them into a frozen config (``PruneConfig`` / ``QuantizeConfig``, validated by
the engine) in the ``config`` trait, or None for "no such step". ``set_config``
loads a config back into the controls (e.g. from a variant picked on the chart).
"""

from __future__ import annotations

import html

import ipywidgets as W
import traitlets as T

from widgets.style import TOGGLE_STYLE
from workbench.errors import WorkbenchError
from workbench.recipe import (
    CALIBRATIONS,
    INT8_TYPES,
    OVERFLOW_FIXES,
    FineTuneConfig,
    PruneConfig,
    QATConfig,
    QuantizeConfig,
)
from workbench.runtimes import DEFAULT_RUNTIME, get_runtime

__all__ = ["PruningPanel", "QuantizationPanel"]

# Op types a user most often keeps in float (the first/last layers' ops, or ops whose
# quantized kernels are slow); free text is accepted too (node names work as well).
_PRUNE, _QUANT, _TUNE = PruneConfig(), QuantizeConfig(), FineTuneConfig()  # the engine's defaults

_DEFAULT_CAP = 0.98  # the cap slider's position when the cap is first switched on

COMMON_FLOAT_OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "GlobalAveragePool", "Softmax")


def _row(*children: W.Widget) -> W.HBox:
    return W.HBox(list(children), layout=W.Layout(align_items="center", flex_flow="row wrap"))


class PruningPanel(W.VBox):
    """Magnitude pruning settings.

    Traits:
        method: "none", "unstructured" or "structured".
        sparsity: fraction removed, 0 to 0.95.
        scope: "global" (one threshold for all layers) or "layer".
        keep_first_last: leave the first and last prunable layers dense.
        max_layer_sparsity: the largest fraction of any one layer pruned (None: no cap);
            shown as a checkbox and a slider.
        importance: how unstructured pruning ranks weights: "magnitude" or "bn-scaled"
            (|w| times the scale of the batch norm after the layer); a checkbox.
        finetune_epochs: epochs of retraining after pruning (0: none).
        teacher: a model name to distil from while retraining ("" for none).
        teachers: the names offered as teachers.
        unavailable: why pruning cannot apply to the loaded model ("" when it can): the
            controls are then disabled and the method is "none".
        config: (read-only) the ``PruneConfig``, or None when method is "none".
        finetune_config: (read-only) the ``FineTuneConfig``, or None.
        error: (read-only) why the settings make no config, "" when they do.
    """

    # Defaults follow the engine's config defaults.
    method = T.Unicode("none")
    sparsity = T.Float(_PRUNE.sparsity)
    scope = T.Unicode(_PRUNE.scope)
    keep_first_last = T.Bool(_PRUNE.keep_first_last)
    exclude = T.Tuple(_PRUNE.exclude)
    max_layer_sparsity = T.Float(_PRUNE.max_layer_sparsity, allow_none=True)
    importance = T.Unicode(_PRUNE.importance)
    finetune_epochs = T.Int(0)
    teacher = T.Unicode("")
    teachers = T.Tuple()
    unavailable = T.Unicode("")
    config = T.Any(None, read_only=True)
    finetune_config = T.Any(None, read_only=True)
    error = T.Unicode("", read_only=True)

    def __init__(self, teachers: tuple[str, ...] = (), **kwargs) -> None:
        self.method_w = W.ToggleButtons(
            options=[
                ("none", "none"),
                ("unstructured", "unstructured"),
                ("structured", "structured"),
            ],
            description="pruning",
            style=TOGGLE_STYLE,
            tooltips=[
                "no pruning",
                "zero individual weights: only the compressed file shrinks",
                "remove whole channels: fewer MACs, smaller file, lower latency",
            ],
        )
        # continuous_update=False: a new variant is measured when the slider is released,
        # not for every position it passes while dragged.
        self.sparsity_w = W.FloatSlider(
            min=0.0,
            max=0.95,
            step=0.05,
            description="sparsity",
            readout_format=".0%",
            continuous_update=False,
        )
        self.scope_w = W.ToggleButtons(
            options=[("global", "global"), ("per layer", "layer")],
            description="scope",
            style=TOGGLE_STYLE,
            tooltips=["one threshold across all layers", "the same fraction in every layer"],
        )
        self.keep_w = W.Checkbox(description="keep first and last layers dense", indent=False)
        # One global threshold can empty a layer whose weights are small only because a
        # batch norm rescales them; the cap keeps some of every layer.
        self.cap_on_w = W.Checkbox(description="cap each layer at", indent=False)
        self.cap_w = W.FloatSlider(
            value=_DEFAULT_CAP,
            min=0.5,
            max=1.0,
            step=0.005,
            readout_format=".1%",
            continuous_update=False,
            tooltip="no layer loses more than this share of its weights; the rest of the "
            "sparsity goes to the other layers",
        )
        # A batch norm rescales its layer's channels, so raw |w| of two layers are not
        # comparable; ranking by the scaled weights keeps such layers from being emptied.
        self.bn_scaled_w = W.Checkbox(
            description="rank by batch-norm-scaled weights",
            indent=False,
            tooltip="unstructured: rank each weight by |w| times the scale of the batch norm "
            "after its layer, its size in the function the network computes",
        )
        # Retraining repairs what pruning removed; it costs seconds (digits-cnn) to
        # minutes (digits-resnet18) per variant, so it is off until asked for.
        self.epochs_w = W.IntSlider(
            min=0,
            max=10,
            description="fine-tune",
            readout_format="d",
            continuous_update=False,
            tooltip="epochs of retraining on the training part after pruning (0: none)",
        )
        self.teacher_w = W.Dropdown(
            options=[("none", "")],
            description="distil from",
            tooltip="a larger model whose predictions the pruned model learns from",
        )
        self._error_w = W.HTML()
        super().__init__(
            children=[
                W.HTML("<b>Pruning</b>"),
                self.method_w,
                self.sparsity_w,
                self.scope_w,
                self.keep_w,
                _row(self.cap_on_w, self.cap_w),
                self.bn_scaled_w,
                _row(self.epochs_w, self.teacher_w),
                self._error_w,
            ],
            **kwargs,
        )
        for widget, name in (
            (self.method_w, "method"),
            (self.sparsity_w, "sparsity"),
            (self.scope_w, "scope"),
            (self.keep_w, "keep_first_last"),
            (self.epochs_w, "finetune_epochs"),
            (self.teacher_w, "teacher"),
        ):
            T.link((self, name), (widget, "value"))  # the trait's default wins
        self._showing_cap = False
        self.cap_on_w.observe(self._on_cap_controls, names="value")
        self.cap_w.observe(self._on_cap_controls, names="value")
        self.bn_scaled_w.observe(self._on_bn_scaled, names="value")
        self.teachers = tuple(teachers)
        self._update()

    @T.observe("teachers")
    def _on_teachers(self, change: dict) -> None:
        if self.teacher and self.teacher not in self.teachers:
            self.teacher = ""
        self.teacher_w.options = [("none", "")] + [(t, t) for t in self.teachers]

    @T.observe(
        "method",
        "sparsity",
        "scope",
        "keep_first_last",
        "exclude",
        "max_layer_sparsity",
        "importance",
        "finetune_epochs",
        "teacher",
        "unavailable",
    )
    def _on_settings(self, change: dict) -> None:
        if change["name"] == "unavailable" and self.unavailable:
            self.method = "none"  # observed again if it changes
        self._update()

    @T.validate("method")
    def _method_allowed(self, proposal: dict) -> str:
        return "none" if self.unavailable else proposal["value"]

    def _on_bn_scaled(self, change: dict) -> None:
        self.importance = "bn-scaled" if change["new"] else "magnitude"

    def _on_cap_controls(self, change: dict) -> None:
        if not self._showing_cap:
            self.max_layer_sparsity = round(self.cap_w.value, 4) if self.cap_on_w.value else None

    def _show_cap(self) -> None:
        """The cap's controls follow the trait (set by a script or ``set_config``)."""
        cap = self.max_layer_sparsity
        self._showing_cap = True  # the two controls change one after the other
        try:
            if cap is not None:
                self.cap_w.value = cap
            self.cap_on_w.value = cap is not None
        finally:
            self._showing_cap = False

    def _update(self) -> None:
        active = self.method != "none"
        self.method_w.disabled = bool(self.unavailable)
        for w in (self.sparsity_w, self.scope_w, self.keep_w, self.epochs_w, self.cap_on_w):
            w.disabled = not active
        self._show_cap()
        self.cap_w.disabled = not active or self.max_layer_sparsity is None
        self.bn_scaled_w.value = self.importance == "bn-scaled"
        self.bn_scaled_w.disabled = self.method != "unstructured"
        self.teacher_w.disabled = not active or self.finetune_epochs == 0
        config, tune, error = None, None, ""
        if active:
            try:
                config = PruneConfig(
                    method=self.method,
                    sparsity=round(self.sparsity, 4),
                    scope=self.scope,
                    keep_first_last=self.keep_first_last,
                    exclude=self.exclude,
                    max_layer_sparsity=self.max_layer_sparsity,
                    importance=self.importance if self.method == "unstructured" else "magnitude",
                )
                if self.finetune_epochs > 0:
                    tune = FineTuneConfig(epochs=self.finetune_epochs, teacher=self.teacher or None)
            except WorkbenchError as exc:
                config, tune, error = None, None, str(exc)
        self.set_trait("error", error)
        if error:
            self._error_w.value = f'<span style="color:#b00020">{html.escape(error)}</span>'
        elif self.unavailable:
            self._error_w.value = (
                f'<span style="color:#555">Pruning needs the model as PyTorch layers; this '
                f"model is {html.escape(self.unavailable)}. Load a state_dict with its "
                "architecture to prune it; quantization works as it is.</span>"
            )
        else:
            self._error_w.value = ""
        with self.hold_trait_notifications():
            self.set_trait("finetune_config", tune)
            self.set_trait("config", config)

    def set_config(
        self, config: PruneConfig | None, finetune: FineTuneConfig | None = None
    ) -> None:
        """Show ``config`` (None: no pruning) and ``finetune`` in the controls."""
        with self.hold_trait_notifications():
            self.finetune_epochs = finetune.epochs if finetune else 0
            self.teacher = (finetune.teacher or "") if finetune else ""
            if config is None:
                self.method = "none"
            else:
                self.method = config.method
                self.sparsity = config.sparsity
                self.scope = config.scope
                self.keep_first_last = config.keep_first_last
                self.exclude = config.exclude
                self.max_layer_sparsity = config.max_layer_sparsity
                self.importance = config.importance


class QuantizationPanel(W.VBox):
    """Quantization settings, worded for the chosen runtime.

    The runtime (``runtime``) says how it describes each scheme (the scheme buttons'
    tooltips), which settings change what it builds (the others are disabled while at
    their defaults) and what it calls the step (``label``, shown under the controls).

    Traits:
        runtime: the registry name of the runtime the step is for.
        label: (read-only) the step's name in that runtime ("int8-minmax-pc" in ONNX
            Runtime, "int8-full" in LiteRT), "" without quantization.
        scheme: "none", "dynamic", "int8" (static, calibrated) or "fp16".
        per_channel: one scale per output channel (int8 and dynamic).
        calibration: "minmax", "entropy" or "percentile" (int8 only).
        calibration_samples: training images used to calibrate (int8 only).
        activation_type, weight_type: "int8" or "uint8".
        keep_float: op types or node names left in float.
        overflow_fix: int8: where weights get 7 bits (none, first_layer, all).
        bias_correction: int8: correct each layer's bias by its output's mean error.
        accuracy_aware: int8: keep the most sensitive layers in float so that accuracy on
            held-out training images drops by at most ``max_drop`` points.
        max_drop: the points ``accuracy_aware`` may lose.
        qat_epochs: with int8, quantization-aware training for this many epochs instead
            of post-training quantization (0: none).
        config: (read-only) the ``QuantizeConfig``, or None when scheme is "none" or QAT
            replaces it.
        qat_config: (read-only) the ``QATConfig``, or None.
        error: (read-only) why the settings make no config, "" when they do.
    """

    runtime = T.Unicode(DEFAULT_RUNTIME)
    label = T.Unicode("", read_only=True)
    scheme = T.Unicode("none")
    per_channel = T.Bool(_QUANT.per_channel)
    calibration = T.Unicode(_QUANT.calibration)
    calibration_samples = T.Int(_QUANT.calibration_samples)
    activation_type = T.Unicode(_QUANT.activation_type)
    weight_type = T.Unicode(_QUANT.weight_type)
    keep_float = T.Tuple(_QUANT.keep_float)
    overflow_fix = T.Unicode(_QUANT.overflow_fix)
    bias_correction = T.Bool(_QUANT.bias_correction)
    accuracy_aware = T.Bool(_QUANT.max_accuracy_drop is not None)
    max_drop = T.Float(0.5)
    qat_epochs = T.Int(0)
    config = T.Any(None, read_only=True)
    qat_config = T.Any(None, read_only=True)
    error = T.Unicode("", read_only=True)

    def __init__(self, **kwargs) -> None:
        self.scheme_w = W.ToggleButtons(
            options=[("none", "none"), ("dynamic", "dynamic"), ("int8", "int8"), ("fp16", "fp16")],
            description="quantize",
            style=TOGGLE_STYLE,
            tooltips=[
                "keep float32",
                "int8 weights, activations quantized at run time (best for Linear/LSTM)",
                "static int8 (QDQ), calibrated on training images",
                "float16 weights and compute",
            ],
        )
        self.per_channel_w = W.Checkbox(description="per-channel scales", indent=False)
        self.calibration_w = W.Dropdown(options=list(CALIBRATIONS), description="calibration")
        self.samples_w = W.BoundedIntText(min=1, max=10_000, step=32, description="samples")
        self.activation_w = W.Dropdown(options=list(INT8_TYPES), description="activations")
        self.weight_w = W.Dropdown(options=list(INT8_TYPES), description="weights")
        # Wide enough to type a node name in (the default box fits a few letters).
        self.keep_float_w = W.TagsInput(
            allowed_tags=[],
            allow_duplicates=False,
            placeholder="type an op type or node name, then Enter",
            layout=W.Layout(width="95%", min_width="300px", min_height="32px"),
        )
        self.overflow_w = W.Dropdown(
            options=list(OVERFLOW_FIXES),
            description="7-bit weights",
            tooltip="avoids int8 overflow on x86 CPUs without VNNI",
        )
        self.bias_correction_w = W.Checkbox(description="bias correction", indent=False)
        self.accuracy_aware_w = W.Checkbox(
            description="accuracy-aware: keep sensitive layers float, drop at most",
            indent=False,
            layout=W.Layout(width="auto"),
        )
        self.max_drop_w = W.BoundedFloatText(
            min=0.0, max=100.0, step=0.1, description="points", layout=W.Layout(width="160px")
        )
        self.qat_w = W.BoundedIntText(
            min=0,
            max=100,
            description="QAT epochs",
            tooltip="int8 only: fine-tune through fake quantization instead of calibrating (0: off)",
        )
        self._error_w = W.HTML()
        self._title_w = W.HTML("<b>Quantization</b>")
        self._label_w = W.HTML()
        super().__init__(
            children=[
                self._title_w,
                self.scheme_w,
                self.per_channel_w,
                _row(self.calibration_w, self.samples_w),
                _row(self.activation_w, self.weight_w),
                W.HTML(
                    "keep in float (op types such as <code>Gemm</code>, or node names; "
                    f"e.g. {', '.join(COMMON_FLOAT_OPS[:4])}):"
                ),
                self.keep_float_w,
                _row(self.overflow_w, self.bias_correction_w),
                _row(self.accuracy_aware_w, self.max_drop_w),
                self.qat_w,
                self._label_w,
                self._error_w,
            ],
            **kwargs,
        )
        for widget, name in (
            (self.scheme_w, "scheme"),
            (self.per_channel_w, "per_channel"),
            (self.calibration_w, "calibration"),
            (self.samples_w, "calibration_samples"),
            (self.activation_w, "activation_type"),
            (self.weight_w, "weight_type"),
            (self.overflow_w, "overflow_fix"),
            (self.bias_correction_w, "bias_correction"),
            (self.accuracy_aware_w, "accuracy_aware"),
            (self.max_drop_w, "max_drop"),
            (self.qat_w, "qat_epochs"),
        ):
            T.link((self, name), (widget, "value"))  # the trait's default wins
        # TagsInput holds a list; the config wants a tuple.
        T.link((self, "keep_float"), (self.keep_float_w, "value"), transform=(list, tuple))
        self._update()

    @T.observe(
        "runtime",
        "scheme",
        "per_channel",
        "calibration",
        "calibration_samples",
        "activation_type",
        "weight_type",
        "keep_float",
        "overflow_fix",
        "bias_correction",
        "accuracy_aware",
        "max_drop",
        "qat_epochs",
    )
    def _on_settings(self, change: dict) -> None:
        self._update()

    def _update(self) -> None:
        scheme = self.scheme
        self.qat_w.disabled = scheme != "int8"
        # Only the controls that change the chosen scheme's result are enabled.
        self.per_channel_w.disabled = scheme not in ("int8", "dynamic")
        for w in (
            self.calibration_w,
            self.samples_w,
            self.activation_w,
            self.overflow_w,
            self.bias_correction_w,
            self.accuracy_aware_w,
        ):
            w.disabled = scheme != "int8"
        self.max_drop_w.disabled = scheme != "int8" or not self.accuracy_aware
        self.weight_w.disabled = scheme not in ("int8", "dynamic")
        self.keep_float_w.disabled = scheme == "none"
        runtime = get_runtime(self.runtime)
        self._word_for(runtime)
        config, error = None, ""
        if scheme != "none":
            try:
                config = QuantizeConfig(
                    scheme=scheme,
                    per_channel=self.per_channel,
                    calibration=self.calibration,
                    calibration_samples=self.calibration_samples,
                    activation_type=self.activation_type,
                    weight_type=self.weight_type,
                    keep_float=self.keep_float,
                    overflow_fix=self.overflow_fix if scheme == "int8" else _QUANT.overflow_fix,
                    bias_correction=self.bias_correction and scheme == "int8",
                    max_accuracy_drop=self.max_drop
                    if self.accuracy_aware and scheme == "int8"
                    else None,
                )
            except WorkbenchError as exc:
                error = str(exc)
        qat = None
        if scheme == "int8" and self.qat_epochs > 0 and not error:
            # QAT exports through the same int8 path, so it replaces calibration alone.
            try:
                qat = QATConfig(
                    epochs=self.qat_epochs,
                    activation_type=self.activation_type,
                    calibration_samples=self.calibration_samples,
                )
                config = None
            except WorkbenchError as exc:
                error = str(exc)
        self.set_trait("qat_config", qat)
        step = config or qat
        label = runtime.step_label(step) if step is not None else ""
        self.set_trait("label", label)
        self._label_w.value = (
            f'<span style="color:#555">name in {html.escape(str(runtime))}: '
            f"<b>{html.escape(label)}</b></span>"
            if label
            else ""
        )
        self.set_trait("error", error)
        self._error_w.value = (
            f'<span style="color:#b00020">{html.escape(error)}</span>' if error else ""
        )
        self.set_trait("config", config)

    def _word_for(self, runtime) -> None:
        """The runtime's descriptions on the scheme buttons, its name in the title, and
        the settings it does not honour disabled (unless set away from the default, so
        a setting the runtime refuses can still be put back)."""
        described = runtime.scheme_descriptions
        self.scheme_w.tooltips = ["keep float32"] + [
            described.get(s, s) for s in ("dynamic", "int8", "fp16")
        ]
        self._title_w.value = f"<b>Quantization</b> in {html.escape(str(runtime))}"
        honoured = runtime.quantize_settings
        if honoured is None:
            return
        for widget, field, value in (
            (self.per_channel_w, "per_channel", self.per_channel),
            (self.calibration_w, "calibration", self.calibration),
            (self.samples_w, "calibration_samples", self.calibration_samples),
            (self.activation_w, "activation_type", self.activation_type),
            (self.weight_w, "weight_type", self.weight_type),
            (self.keep_float_w, "keep_float", tuple(self.keep_float)),
            (self.overflow_w, "overflow_fix", self.overflow_fix),
            (self.bias_correction_w, "bias_correction", self.bias_correction),
            (self.accuracy_aware_w, "max_accuracy_drop", None if not self.accuracy_aware else 0),
        ):
            if field not in honoured and value == getattr(_QUANT, field):
                widget.disabled = True
        self.max_drop_w.disabled = self.max_drop_w.disabled or self.accuracy_aware_w.disabled

    def set_config(self, config: QuantizeConfig | QATConfig | None) -> None:
        """Show ``config`` in the controls (None: no quantization); ``config`` follows."""
        with self.hold_trait_notifications():
            self.qat_epochs = 0
            if isinstance(config, QATConfig):
                self.scheme = "int8"
                self.activation_type = config.activation_type
                self.calibration_samples = config.calibration_samples
                self.qat_epochs = config.epochs
            elif config is None:
                self.scheme = "none"
            else:
                self.scheme = config.scheme
                self.per_channel = config.per_channel
                self.calibration = config.calibration
                self.calibration_samples = config.calibration_samples
                self.activation_type = config.activation_type
                self.weight_type = config.weight_type
                self.keep_float = tuple(config.keep_float)
                self.overflow_fix = config.overflow_fix
                self.bias_correction = config.bias_correction
                self.accuracy_aware = config.max_accuracy_drop is not None
                if config.max_accuracy_drop is not None:
                    self.max_drop = config.max_accuracy_drop
