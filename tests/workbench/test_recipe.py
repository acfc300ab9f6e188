"""Configs validate, round-trip through dicts, and recipes keep their order rules."""

import json

import pytest

from workbench.errors import WorkbenchError
from workbench.recipe import (
    CONFIG_TYPES,
    DistillConfig,
    FineTuneConfig,
    GradualPruneConfig,
    PruneConfig,
    QATConfig,
    QuantizeConfig,
    Recipe,
    config_from_dict,
)
from workbench.study import grid

EXAMPLES = [
    PruneConfig(),
    PruneConfig(
        method="structured", sparsity=0.3, scope="layer", keep_first_last=False, exclude=("fc",)
    ),
    QuantizeConfig(),
    QuantizeConfig(scheme="dynamic", per_channel=False, weight_type="uint8"),
    QuantizeConfig(
        scheme="int8", calibration="entropy", calibration_samples=16, keep_float=("Gemm", "conv1")
    ),
    QuantizeConfig(scheme="fp16"),
    QuantizeConfig(bias_correction=True, max_accuracy_drop=0.5, overflow_fix="all"),
    FineTuneConfig(),
    FineTuneConfig(epochs=2, teacher="digits-resnet18", temperature=2.0, alpha=0.5),
    GradualPruneConfig(method="structured", sparsity=0.5, steps=3, schedule="linear"),
    QATConfig(epochs=1, activation_type="int8"),
    DistillConfig(student="digits-cnn", teacher="digits-resnet18"),
]


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda c: c.label())
def test_every_config_round_trips(config):
    d = config.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-able
    assert config_from_dict(d) == config
    assert type(config).from_dict(d) == config


def test_every_config_type_has_an_example():
    assert {type(c) for c in EXAMPLES} == set(CONFIG_TYPES.values())


def test_recipe_round_trips_and_names():
    r = Recipe.of(PruneConfig(sparsity=0.5), QuantizeConfig())
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert r.name == "prune-unstructured-0.5+int8-minmax-pc"
    assert (
        QuantizeConfig(activation_type="int8", keep_float=("Gemm",)).label()
        == "int8-minmax-pc-aint8-float(Gemm)"
    )
    assert QuantizeConfig(scheme="dynamic").label() == "int8-dynamic-pc"
    assert (
        QuantizeConfig(bias_correction=True, max_accuracy_drop=0.5).label()
        == "int8-minmax-pc-bc-drop0.5"
    )
    assert QuantizeConfig(overflow_fix="none").label() == "int8-minmax-pc-ofnone"
    assert (
        PruneConfig(sparsity=0.8, keep_first_last=False, exclude=("fc",)).label()
        == "prune-unstructured-0.8-all-keep(fc)"
    )
    assert Recipe().name == "baseline" and Recipe().is_baseline
    assert r.digest() == Recipe.from_dict(r.to_dict()).digest()
    assert r.digest() != Recipe.of(PruneConfig(sparsity=0.6), QuantizeConfig()).digest()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PruneConfig(sparsity=1.5), "sparsity 1.5 is out of range"),
        (lambda: PruneConfig(sparsity=-0.1), "out of range"),
        (lambda: PruneConfig(sparsity="half"), "not a number"),
        (lambda: PruneConfig(sparsity=0.995), "use a fraction from 0 to 0.99 for unstructured"),
        (
            lambda: PruneConfig(method="structured", sparsity=0.97),
            "use a fraction from 0 to 0.95 for structured",
        ),
        (
            lambda: PruneConfig(sparsity=0.9, max_layer_sparsity=0.8),
            "max_layer_sparsity 0.8 is below the sparsity 0.9",
        ),
        (lambda: PruneConfig(max_layer_sparsity=0), "max_layer_sparsity 0 is not a fraction"),
        (lambda: PruneConfig(max_layer_sparsity=1.2), "not a fraction above 0 and at most 1"),
        (lambda: PruneConfig(max_layer_sparsity=True), "max_layer_sparsity True is not"),
        (lambda: PruneConfig(max_layer_sparsity="0.9"), "not a fraction"),
        (lambda: PruneConfig(method="random"), "pruning method 'random' is not supported"),
        (lambda: PruneConfig(scope="block"), "use one of: global, layer"),
        (lambda: QuantizeConfig(scheme="int4"), "use one of: dynamic, int8, fp16"),
        (lambda: QuantizeConfig(calibration="kl"), "calibration method 'kl'"),
        (lambda: QuantizeConfig(calibration_samples=0), "at least one sample"),
        (lambda: QuantizeConfig(weight_type="int16"), "weight type"),
        (lambda: QuantizeConfig(max_accuracy_drop=-0.1), "max_accuracy_drop -0.1 is out of range"),
        (lambda: QuantizeConfig(max_accuracy_drop=101), "out of range"),
        (lambda: QuantizeConfig(max_accuracy_drop="1%"), "max_accuracy_drop '1%' is not a number"),
        (lambda: QuantizeConfig(max_accuracy_drop=True), "is not a number"),
        (
            lambda: QuantizeConfig(scheme="fp16", max_accuracy_drop=0.5),
            "max_accuracy_drop applies to int8 only",
        ),
        (lambda: QuantizeConfig(bias_correction="yes"), "bias_correction 'yes' is not True"),
        (
            lambda: QuantizeConfig(scheme="dynamic", bias_correction=True),
            "bias_correction applies to int8 only, not 'dynamic'",
        ),
        (
            lambda: QuantizeConfig(scheme="fp16", overflow_fix="all"),
            "overflow_fix applies to int8 only, not 'fp16'",
        ),
        (lambda: QuantizeConfig(overflow_fix="first"), "use one of: none, first_layer, all"),
        (lambda: config_from_dict({"kind": "rotate"}), "unknown step kind"),
        (
            lambda: config_from_dict({"kind": "prune", "amount": 0.5}),
            "unknown prune setting(s): amount",
        ),
        (lambda: Recipe((QuantizeConfig(), PruneConfig())), "put pruning before quantization"),
        (lambda: Recipe((PruneConfig(), PruneConfig(sparsity=0.2))), "at most once"),
    ],
)
def test_bad_settings_name_the_problem_and_fix(make, message):
    with pytest.raises(WorkbenchError) as info:
        make()
    assert message in str(info.value)
    assert info.value.fix  # every error says what to do instead


def test_finetune_config_round_trips_orders_and_validates():
    cfg = FineTuneConfig(epochs=2, teacher="digits-resnet18")
    assert config_from_dict(cfg.to_dict()) == cfg
    r = Recipe.of(PruneConfig(), QuantizeConfig(), cfg)
    assert [s.kind for s in r.steps] == ["prune", "finetune", "quantize"]
    assert r.name == "prune-unstructured-0.5+finetune-2ep-distill(digits-resnet18)+int8-minmax-pc"
    with pytest.raises(WorkbenchError, match="prune first, then fine-tune"):
        Recipe((cfg, PruneConfig()))
    with pytest.raises(WorkbenchError, match="epochs 0 is out of range"):
        FineTuneConfig(epochs=0)
    with pytest.raises(WorkbenchError, match="alpha"):
        FineTuneConfig(alpha=1.5)


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: Recipe.of("int8"), "QuantizeConfig(scheme='int8')"),
        (lambda: Recipe.of(0.5), "PruneConfig(method='unstructured', sparsity=0.5)"),
        (lambda: Recipe.of(prune="structured"), "PruneConfig(method='structured'"),
        (lambda: Recipe.of(quantize="int8"), "QuantizeConfig(scheme='int8')"),
        (lambda: Recipe(QuantizeConfig()), "Recipe((PruneConfig"),
        (lambda: Recipe(("int8",)), "QuantizeConfig(scheme='int8')"),
        (lambda: grid(prune=[0.5]), "PruneConfig(sparsity=0.5)"),
        (lambda: grid(prune=0.5), "PruneConfig(sparsity=0.5)"),
        (lambda: grid(quantize=["int8"]), "QuantizeConfig(scheme='int8')"),
        (lambda: grid(quantize=[]), "QuantizeConfig(scheme='int8')"),
        (lambda: grid(finetune=3), "FineTuneConfig(epochs=3)"),
    ],
)
def test_misuse_names_the_right_call(call, names):
    with pytest.raises(WorkbenchError) as exc:
        call()
    assert names in str(exc.value)


def test_the_obvious_forms_are_accepted():
    assert Recipe.of(PruneConfig()).steps == (PruneConfig(),)
    # A config is placed by its kind, whatever the argument it was given as.
    assert Recipe.of(QuantizeConfig()).steps == (QuantizeConfig(),)
    both = Recipe.of(QuantizeConfig(), PruneConfig())
    assert both.steps == (PruneConfig(), QuantizeConfig())
    assert Recipe([QuantizeConfig()]).steps == (QuantizeConfig(),)
    assert len(grid(prune=(p for p in [None, PruneConfig()]))) == 2


def test_max_layer_sparsity_round_trips_and_reaches_every_gradual_step():
    config = PruneConfig(sparsity=0.97, max_layer_sparsity=0.995)
    assert config.label() == "prune-unstructured-0.97-cap0.995"
    assert PruneConfig.from_dict(config.to_dict()) == config
    assert Recipe((config,)).digest() != Recipe((PruneConfig(sparsity=0.97),)).digest()
    gradual = GradualPruneConfig(sparsity=0.97, steps=4, max_layer_sparsity=0.995)
    steps = [gradual.step_config(s) for s in gradual.schedule_values()]
    assert [s.max_layer_sparsity for s in steps] == [0.995] * 4
    assert steps[-1].sparsity == 0.97
    assert "-cap0.995-gradual4" in gradual.label()
