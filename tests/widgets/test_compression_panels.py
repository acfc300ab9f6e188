"""PruningPanel and QuantizationPanel: set controls as a user would, read the config."""

from __future__ import annotations

from widgets import PruningPanel, QuantizationPanel
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe


def test_pruning_panel_builds_the_config_from_its_controls():
    panel = PruningPanel()
    assert panel.config is None  # "none" by default: the baseline
    assert panel.sparsity_w.disabled and panel.scope_w.disabled

    panel.method_w.value = "structured"
    panel.sparsity_w.value = 0.3  # the slider's float, rounded in the config
    panel.scope_w.value = "layer"
    assert panel.config == PruneConfig(method="structured", sparsity=0.3, scope="layer")
    assert not panel.sparsity_w.disabled
    assert Recipe.of(panel.config).name == "prune-structured-layer-0.3"

    panel.keep_w.value = False
    assert panel.config.keep_first_last is False
    panel.method_w.value = "none"
    assert panel.config is None


def test_pruning_slider_covers_0_to_95_percent_and_reads_as_percent():
    panel = PruningPanel()
    w = panel.sparsity_w
    assert (w.min, w.max, w.step, w.readout_format) == (0.0, 0.95, 0.05, ".0%")
    panel.method = "unstructured"
    w.value = 1.0  # beyond the slider: clamped to 0.95, the engine's maximum
    assert panel.config.sparsity == 0.95


def test_pruning_panel_shows_the_engine_error_for_an_invalid_setting():
    panel = PruningPanel()
    panel.method = "unstructured"
    panel.sparsity = 0.995  # set on the trait (a script), past the engine's range
    assert panel.config is None
    assert "sparsity 0.995 is out of range" in panel.error
    assert "out of range" in panel._error_w.value
    panel.sparsity = 0.5
    assert panel.error == "" and panel.config.sparsity == 0.5


def test_pruning_set_config_round_trips_with_one_config_change():
    panel = PruningPanel()
    seen = []
    panel.observe(lambda c: seen.append(c["new"]), names="config")
    config = PruneConfig(method="structured", sparsity=0.7, scope="layer", keep_first_last=False)
    panel.set_config(config)
    assert panel.config == config
    assert panel.method_w.value == "structured" and panel.sparsity_w.value == 0.7
    assert seen == [config]  # no half-loaded intermediate config
    panel.set_config(None)
    assert panel.config is None and panel.method_w.value == "none"


def test_quantization_panel_enables_only_the_controls_that_apply():
    panel = QuantizationPanel()
    assert panel.config is None and panel.calibration_w.disabled
    panel.scheme_w.value = "int8"
    assert panel.config == QuantizeConfig(scheme="int8")  # the engine's defaults
    panel.scheme_w.value = "none"

    panel.scheme_w.value = "int8"
    assert not panel.calibration_w.disabled and not panel.samples_w.disabled
    panel.calibration_w.value = "percentile"
    panel.samples_w.value = 64
    panel.per_channel_w.value = False
    panel.keep_float_w.value = ["Gemm"]
    assert panel.config == QuantizeConfig(
        scheme="int8",
        per_channel=False,
        calibration="percentile",
        calibration_samples=64,
        keep_float=("Gemm",),
    )
    assert Recipe.of(quantize=panel.config).name.startswith("int8-percentile-pt")

    panel.scheme_w.value = "dynamic"
    assert panel.calibration_w.disabled and panel.samples_w.disabled
    assert not panel.per_channel_w.disabled
    assert panel.config.scheme == "dynamic"

    panel.scheme_w.value = "fp16"
    assert panel.per_channel_w.disabled and not panel.keep_float_w.disabled
    assert panel.config.scheme == "fp16"


def test_quantization_panel_error_and_set_config():
    panel = QuantizationPanel()
    panel.scheme = "int8"
    panel.calibration_samples = 0  # a script can set what the bounded box would refuse
    assert panel.config is None
    assert "at least one sample" in panel.error
    config = QuantizeConfig(
        scheme="int8",
        calibration="entropy",
        calibration_samples=32,
        activation_type="int8" if QuantizeConfig().activation_type == "uint8" else "uint8",
        keep_float=("Conv", "Gemm"),
    )
    panel.set_config(config)
    assert panel.config == config and panel.error == ""
    assert panel.keep_float_w.value == ["Conv", "Gemm"]
    assert panel.activation_w.value == config.activation_type != QuantizeConfig().activation_type


def test_quantization_panel_bias_correction_and_accuracy_aware():
    panel = QuantizationPanel()
    panel.scheme_w.value = "int8"
    assert panel.max_drop_w.disabled  # only with accuracy-aware on
    panel.bias_correction_w.value = True
    panel.accuracy_aware_w.value = True
    assert not panel.max_drop_w.disabled
    panel.max_drop_w.value = 0.3
    panel.overflow_w.value = "all"
    assert panel.config == QuantizeConfig(
        bias_correction=True, max_accuracy_drop=0.3, overflow_fix="all"
    )
    panel.scheme_w.value = "fp16"  # none of them applies: the config still builds
    assert panel.config == QuantizeConfig(scheme="fp16") and panel.accuracy_aware_w.disabled
    panel.set_config(QuantizeConfig(max_accuracy_drop=1.5))
    assert panel.accuracy_aware_w.value and panel.max_drop_w.value == 1.5
    assert not panel.bias_correction_w.value


def test_fine_tuning_is_part_of_the_pruning_panel():
    from workbench.recipe import FineTuneConfig

    panel = PruningPanel(teachers=("digits-resnet18",))
    assert panel.finetune_config is None and panel.epochs_w.disabled  # no pruning, no retraining
    panel.method = "structured"
    assert panel.finetune_config is None and not panel.epochs_w.disabled
    assert panel.teacher_w.disabled  # a teacher only matters when retraining
    panel.epochs_w.value = 2
    panel.teacher_w.value = "digits-resnet18"
    assert panel.finetune_config == FineTuneConfig(epochs=2, teacher="digits-resnet18")
    panel.set_config(PruneConfig(method="unstructured", sparsity=0.3), None)
    assert panel.finetune_config is None and panel.epochs_w.value == 0


def test_quantization_panel_qat_epochs_replace_post_training_int8():
    from workbench.recipe import QATConfig

    panel = QuantizationPanel()
    assert panel.qat_w.disabled and panel.qat_config is None
    panel.scheme_w.value = "int8"
    panel.qat_w.value = 2
    assert panel.config is None and panel.error == ""
    assert panel.qat_config == QATConfig(epochs=2)
    panel.scheme_w.value = "fp16"
    assert panel.qat_config is None and panel.config == QuantizeConfig(scheme="fp16")
    panel.set_config(QATConfig(epochs=3, activation_type="int8"))
    assert (panel.scheme, panel.qat_epochs, panel.activation_type) == ("int8", 3, "int8")
    assert panel.qat_config == QATConfig(epochs=3, activation_type="int8")
    panel.set_config(QuantizeConfig())
    assert panel.qat_epochs == 0 and panel.config == QuantizeConfig()


def test_buttons_fit_their_labels_and_the_keep_in_float_box_is_wide():
    """A fixed button width cut "unstructured" to "unstructu..." in a narrow notebook."""
    from widgets import PruningPanel, QuantizationPanel, SweepPanel

    pruning, quantization = PruningPanel(), QuantizationPanel()
    for buttons in (
        pruning.method_w,
        pruning.scope_w,
        quantization.scheme_w,
        SweepPanel().method_w,
    ):
        assert buttons.style.button_width == "auto", buttons.options
    assert quantization.keep_float_w.layout.min_width == "300px"


def test_pruning_panel_caps_each_layer_when_asked():
    panel = PruningPanel()
    assert not panel.cap_on_w.value and panel.cap_on_w.disabled  # no pruning, no cap
    panel.method_w.value = "unstructured"
    panel.sparsity_w.value = 0.9
    assert panel.config.max_layer_sparsity is None and panel.cap_w.disabled
    panel.cap_on_w.value = True
    assert panel.config == PruneConfig(sparsity=0.9, max_layer_sparsity=0.98)
    assert not panel.cap_w.disabled
    panel.cap_w.value = 0.995
    assert panel.config.max_layer_sparsity == 0.995
    panel.cap_w.value = 0.8  # below the sparsity: the engine's error, no config
    assert panel.config is None and "below the sparsity 0.9" in panel.error
    panel.cap_on_w.value = False
    assert panel.config == PruneConfig(sparsity=0.9) and panel.error == ""
    seen = []
    panel.observe(lambda c: seen.append(c["new"]), names="config")
    config = PruneConfig(sparsity=0.95, max_layer_sparsity=0.99)
    panel.set_config(config)
    assert panel.config == config and panel.cap_on_w.value and panel.cap_w.value == 0.99
    assert seen == [config]  # no intermediate config with the slider's old value
    panel.max_layer_sparsity = None  # a script switches the cap off: the checkbox follows
    assert not panel.cap_on_w.value and panel.config.max_layer_sparsity is None


def test_pruning_panel_ranks_by_batch_norm_scaled_weights_when_asked():
    panel = PruningPanel()
    assert panel.bn_scaled_w.disabled  # no pruning
    panel.method_w.value = "unstructured"
    panel.sparsity_w.value = 0.9
    assert not panel.bn_scaled_w.disabled and panel.config.importance == "magnitude"
    panel.bn_scaled_w.value = True
    assert panel.config == PruneConfig(sparsity=0.9, importance="bn-scaled")
    panel.method_w.value = "structured"  # ranks channels its own way: greyed out, not sent
    assert panel.bn_scaled_w.disabled and panel.config.importance == "magnitude"
    assert panel.error == ""
    config = PruneConfig(sparsity=0.8, importance="bn-scaled")
    panel.set_config(config)
    assert panel.config == config and panel.bn_scaled_w.value
    panel.set_config(PruneConfig(sparsity=0.8))
    assert not panel.bn_scaled_w.value and panel.config.importance == "magnitude"
