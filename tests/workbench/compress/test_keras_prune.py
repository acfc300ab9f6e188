"""Magnitude pruning of Keras models: exact sparsity, global vs per layer, dense first and
last layers, exclude, the report's keys, and structured pruning refused."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.recipe import PruneConfig

LOUD = "loud"  # a layer whose weights are 10x larger than the others'


def _tiny_model():
    """Conv -> depthwise -> 1x1 conv (x10 weights) -> pool -> dense -> dense, seeded weights."""
    from workbench._tf import keras

    k = keras()
    init = k.initializers.RandomNormal(stddev=0.1, seed=0)
    inp = k.Input((8, 8, 1))
    x = k.layers.Conv2D(8, 3, padding="same", kernel_initializer=init, name="stem")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same", depthwise_initializer=init, name="dw")(x)
    x = k.layers.Conv2D(16, 1, kernel_initializer=init, name=LOUD)(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    x = k.layers.Dense(32, kernel_initializer=init, name="hidden")(x)
    out = k.layers.Dense(10, kernel_initializer=init, name="logits")(x)
    model = k.Model(inp, out)
    loud = model.get_layer(LOUD)
    loud.kernel.assign(loud.kernel.numpy() * 10.0)
    return model


def _kernel(model, name: str) -> np.ndarray:
    return model.get_layer(name).kernel.numpy()


def _layers(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["layers"]}


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_reached_sparsity_matches_the_request(scope):
    from workbench.compress.keras_prune import prune_keras

    model = _tiny_model()
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1)).astype(np.float32)
    report = prune_keras(model, PruneConfig(sparsity=0.6, scope=scope))
    assert report["method"] == "unstructured" and report["scope"] == scope
    assert report["requested_sparsity"] == 0.6
    assert abs(report["achieved_sparsity"] - 0.6) < 0.01
    # Measured on the model itself, not only in the report.
    pruned = [r["name"] for r in report["layers"] if r["kept_dense"] is None]
    zeros = sum(int((_kernel(model, n) == 0).sum()) for n in pruned)
    total = sum(_kernel(model, n).size for n in pruned)
    assert abs(zeros / total - 0.6) < 0.01
    assert np.isfinite(np.asarray(model(x))).all()
    if scope == "layer":
        for name in pruned:
            assert abs(_layers(report)[name]["sparsity"] - 0.6) < 0.01, name


def test_global_threshold_spares_the_loud_layer_where_per_layer_does_not():
    from workbench.compress.keras_prune import prune_keras

    by_scope = {}
    for scope in ("global", "layer"):
        model = _tiny_model()
        by_scope[scope] = _layers(prune_keras(model, PruneConfig(sparsity=0.5, scope=scope)))
    # One threshold over all layers: the 10x layer keeps (nearly) all of its weights and
    # the others lose more than half to make up the total.
    assert by_scope["global"][LOUD]["sparsity"] < 0.05
    assert by_scope["global"]["hidden"]["sparsity"] > 0.55
    # Per layer: every pruned layer loses half, the loud one included.
    assert abs(by_scope["layer"][LOUD]["sparsity"] - 0.5) < 0.01
    assert abs(by_scope["layer"]["hidden"]["sparsity"] - 0.5) < 0.01


def test_first_and_last_layers_stay_dense_unless_asked():
    from workbench.compress.keras_prune import prune_keras

    model = _tiny_model()
    stem, logits = _kernel(model, "stem"), _kernel(model, "logits")
    report = prune_keras(model, PruneConfig(sparsity=0.8))
    assert report["kept_dense"] == {"stem": "first", "logits": "last"}
    np.testing.assert_array_equal(_kernel(model, "stem"), stem)
    np.testing.assert_array_equal(_kernel(model, "logits"), logits)

    model = _tiny_model()
    report = prune_keras(model, PruneConfig(sparsity=0.8, scope="layer", keep_first_last=False))
    assert report["kept_dense"] == {}
    assert abs(_layers(report)["stem"]["sparsity"] - 0.8) < 0.02
    assert abs(_layers(report)["logits"]["sparsity"] - 0.8) < 0.01


def test_exclude_keeps_named_layers_dense_and_unknown_names_are_refused():
    from workbench.compress.keras_prune import prune_keras

    model = _tiny_model()
    hidden = _kernel(model, "hidden")
    report = prune_keras(model, PruneConfig(sparsity=0.5, exclude=("hidden",)))
    assert report["kept_dense"]["hidden"] == "excluded"
    np.testing.assert_array_equal(_kernel(model, "hidden"), hidden)
    with pytest.raises(WorkbenchError, match=r"'hiden'.*did you mean 'hidden'"):
        prune_keras(_tiny_model(), PruneConfig(sparsity=0.5, exclude=("hiden",)))
    with pytest.raises(WorkbenchError, match="holds no prunable layer"):
        prune_keras(_tiny_model(), PruneConfig(sparsity=0.5, exclude=("pool",)))


def test_structured_pruning_of_a_keras_model_is_refused_with_the_fix():
    from workbench.compress.keras_prune import prune_keras

    model = _tiny_model()
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(WorkbenchError, match="unstructured") as e:
        prune_keras(model, PruneConfig(method="structured", sparsity=0.5))
    assert "PyTorch" in str(e.value)
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_keras_sample_prunes_with_the_torch_report_keys():
    import torch

    from sample_models.train_keras import KERAS_SAMPLE_DIR, KERAS_SPEC, MODEL_FILE
    from workbench.compress import prune_
    from workbench.compress.keras_prune import keras_prunable_layers, prune_keras
    from workbench.models import load_model
    from workbench.runtimes.keras_io import load_keras

    model = load_keras(KERAS_SAMPLE_DIR / KERAS_SPEC.name / MODEL_FILE)
    names = keras_prunable_layers(model)
    assert len(names) >= 4
    report = prune_keras(model, PruneConfig(sparsity=0.5, scope="global"))
    assert abs(report["achieved_sparsity"] - 0.5) < 0.01
    assert [r["name"] for r in report["layers"]] == names
    assert report["kept_dense"] == {names[0]: "first", names[-1]: "last"}

    torch_model = load_model("digits-cnn")
    with torch.no_grad():
        torch_report = prune_(
            torch_model.module, PruneConfig(sparsity=0.5), torch_model.example_input()
        ).to_dict()
    assert set(report) == set(torch_report)
    assert set(report["layers"][0]) == set(torch_report["layers"][0])


def test_layers_of_a_nested_model_are_pruned_and_excluded_by_its_name():
    from workbench._tf import keras
    from workbench.compress.keras_prune import keras_prunable_layers, prune_keras

    k = keras()
    init = k.initializers.RandomNormal(stddev=0.1, seed=1)
    block = k.Sequential(
        [
            k.Input((8, 8, 4)),
            k.layers.Conv2D(4, 3, padding="same", kernel_initializer=init, name="a"),
            k.layers.Conv2D(4, 3, padding="same", kernel_initializer=init, name="b"),
        ],
        name="block",
    )
    inp = k.Input((8, 8, 1))
    x = k.layers.Conv2D(4, 3, padding="same", kernel_initializer=init, name="stem")(inp)
    x = k.layers.Conv2D(4, 3, padding="same", kernel_initializer=init, name="mid")(x)
    x = block(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = k.Model(inp, k.layers.Dense(10, kernel_initializer=init, name="logits")(x))
    assert keras_prunable_layers(model) == ["stem", "mid", "block/a", "block/b", "logits"]

    report = prune_keras(model, PruneConfig(sparsity=0.5, scope="layer"))
    assert abs(_layers(report)["block/a"]["sparsity"] - 0.5) < 0.01
    assert (block.get_layer("a").kernel.numpy() == 0).mean() == pytest.approx(0.5, abs=0.01)

    report = prune_keras(model, PruneConfig(sparsity=0.5, exclude=("block",)))
    assert report["kept_dense"] == {
        "block/a": "excluded",
        "block/b": "excluded",
        "stem": "first",
        "logits": "last",
    }


def test_max_layer_sparsity_caps_every_layer_and_keeps_the_total():
    from workbench.compress.keras_prune import prune_keras

    model = _tiny_model()
    report = prune_keras(model, PruneConfig(sparsity=0.5, max_layer_sparsity=0.52))
    layers = _layers(report)
    pruned = [n for n, r in layers.items() if r["kept_dense"] is None]
    for name in pruned:  # measured on the kernels, not only in the report
        zeros = int((_kernel(model, name) == 0).sum())
        assert zeros <= int(0.52 * _kernel(model, name).size), name
    assert abs(report["achieved_sparsity"] - 0.5) < 1e-3
    # Without the cap the quiet layers lose more than the cap (the loud one spares them).
    uncapped = _layers(prune_keras(_tiny_model(), PruneConfig(sparsity=0.5)))
    assert max(uncapped[n]["sparsity"] for n in pruned) > 0.55
