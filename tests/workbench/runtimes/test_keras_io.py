"""Loading Keras models: .keras, .h5 and SavedModel folders in; bad files out with one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.runtimes import litert
from workbench.runtimes.keras_io import load_keras

pytestmark = pytest.mark.slow  # TensorFlow import and model saving


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Dense model saved in every format, plus the bad files."""
    from workbench._tf import keras

    k = keras()
    d = tmp_path_factory.mktemp("keras")
    inp = k.Input((4,))
    model = k.Model(inp, k.layers.Dense(2)(inp))
    model.save(d / "m.keras")
    model.save(d / "m.h5")
    model.save_weights(d / "w.weights.h5")
    model.export(d / "sm", verbose=False)
    k.Model(inp, k.layers.Lambda(lambda x: x * 2)(inp)).save(d / "lambda.keras")

    @k.saving.register_keras_serializable(package="workbench_test")
    class PlusOne(k.layers.Layer):
        def call(self, x):
            return x + 1

    k.Model(inp, PlusOne()(inp)).save(d / "custom.keras")
    k.saving.get_custom_objects().pop("workbench_test>PlusOne")
    (d / "truncated.keras").write_bytes((d / "m.keras").read_bytes()[:300])
    (d / "empty").mkdir()
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    return d, model, x


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "sm"])
def test_every_format_loads_and_gives_the_same_outputs(saved, name):
    d, model, x = saved
    loaded = load_keras(d / name)
    assert np.allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_a_saved_model_converts_to_tflite(saved, tmp_path):
    d, model, x = saved
    path = litert.export_tflite(load_keras(d / "sm"), tmp_path / "sm.tflite", "float")
    assert np.allclose(litert.predict(path, x), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("w.weights.h5", "holds weights only"),
        ("lambda.keras", "Lambda layer holding Python code"),
        ("custom.keras", "custom object 'PlusOne', which is not registered"),
        ("truncated.keras", "not a readable .keras file"),
        ("empty", "not a SavedModel"),
        ("missing.keras", "does not exist"),
    ],
)
def test_bad_inputs_get_one_clear_error(saved, name, message):
    with pytest.raises(WorkbenchError, match=message):
        load_keras(saved[0] / name)


def test_other_formats_are_named(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(WorkbenchError, match=r"not a Keras model file \(expected .keras"):
        load_keras(tmp_path / "model.pt")
