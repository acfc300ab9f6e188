"""Keras and TFLite models in: NHWC preprocessing, the Keras sample in the registry,
.keras / .h5 / SavedModel / .tflite files through load_model, and the steps they refuse."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from workbench.data import DIGITS, Preprocessing
from workbench.errors import WorkbenchError
from workbench.models import list_models, load_model
from workbench.models.model import keras_weights_fingerprint
from workbench.recipe import FineTuneConfig, PruneConfig, QuantizeConfig, Recipe

# ---------------------------------------------------------------------------------
# NHWC preprocessing (no TensorFlow)


def test_nhwc_preprocessing_is_the_nchw_one_transposed():
    raw = DIGITS.raw("test")[0][:5]
    nchw = Preprocessing(size=16, channels=3, mean=0.5, std=0.5)
    nhwc = Preprocessing(size=16, channels=3, mean=0.5, std=0.5, layout="NHWC")
    assert nchw.input_shape == (1, 3, 16, 16) and nhwc.input_shape == (1, 16, 16, 3)
    x = nhwc.apply(raw)
    assert x.shape == (5, 16, 16, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, np.transpose(nchw.apply(raw), (0, 2, 3, 1)))
    assert nhwc.summary().endswith("NHWC") and "NHWC" not in nchw.summary()


def test_layout_round_trips_and_old_dicts_stay_nchw():
    nhwc = Preprocessing(size=8, channels=1, layout="NHWC")
    assert nhwc.to_dict()["layout"] == "NHWC"
    assert Preprocessing.from_dict(nhwc.to_dict()) == nhwc
    old = {k: v for k, v in Preprocessing().to_dict().items() if k != "layout"}
    assert Preprocessing.from_dict(old).layout == "NCHW"
    assert Preprocessing.for_input_shape((1, 16, 16, 3), "NHWC") == Preprocessing(
        size=16, channels=3, layout="NHWC"
    )
    with pytest.raises(WorkbenchError, match="layout 'HWC' is not supported"):
        Preprocessing(layout="HWC")


# ---------------------------------------------------------------------------------
# The Keras sample


@pytest.fixture(scope="module")
def keras_cnn():
    return load_model("digits-cnn-keras")


def test_the_keras_sample_is_in_the_registry():
    assert "digits-cnn-keras" in list_models("digits-*")


def test_the_keras_sample_loads_with_its_task_nhwc_preprocessing_and_accuracy(keras_cnn):
    m = keras_cnn
    assert m.source == "keras" and m.module is None and m.keras_model is not None
    assert m.input_shape == (1, 8, 8, 1) and m.task is DIGITS
    assert m.preprocessing == Preprocessing(size=8, channels=1, mean=0.5, std=0.5, layout="NHWC")
    assert m.meta["output_shape"] == [1, 10] and m.class_names == DIGITS.class_names
    x, y = DIGITS.arrays("test", m.preprocessing)
    accuracy = float((np.argmax(np.asarray(m.keras_model(x, training=False)), 1) == y).mean())
    assert abs(accuracy - m.meta["test_accuracy"]) <= 1 / len(y) + 1e-9
    assert accuracy >= 0.97


def test_the_keras_fingerprint_is_over_the_weights(keras_cnn, tmp_path):
    again = load_model("digits-cnn-keras")
    assert again.fingerprint == keras_cnn.fingerprint
    assert keras_cnn.fingerprint == keras_weights_fingerprint(keras_cnn.keras_model)
    # The same weights saved again (a new save date in the file) keep the fingerprint ...
    path = tmp_path / "copy.keras"
    keras_cnn.keras_model.save(path)
    assert load_model(path).fingerprint == keras_cnn.fingerprint
    # ... and one changed weight changes it.
    weights = again.keras_model.get_weights()
    weights[0] = weights[0] + 1.0
    again.keras_model.set_weights(weights)
    assert keras_weights_fingerprint(again.keras_model) != keras_cnn.fingerprint


def test_keras_files_load_by_content_in_every_format(keras_cnn, tmp_path):
    keras_path, h5_path, saved = tmp_path / "m.keras", tmp_path / "m.h5", tmp_path / "saved"
    keras_cnn.keras_model.save(keras_path)
    keras_cnn.keras_model.save(h5_path)
    keras_cnn.keras_model.export(saved, verbose=False)
    x = DIGITS.arrays("test", keras_cnn.preprocessing)[0][:8]
    expected = np.asarray(keras_cnn.keras_model(x, training=False))
    for path, fmt in ((keras_path, "keras"), (h5_path, "h5"), (saved, "savedmodel")):
        m = load_model(path, task="digits", preprocessing={"mean": 0.5, "std": 0.5})
        assert m.source == "keras" and m.meta["format"] == fmt, fmt
        assert m.input_shape == (1, 8, 8, 1) and m.preprocessing == keras_cnn.preprocessing, fmt
        got = np.asarray(m.keras_model(x, training=False))
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=fmt)


def test_a_tflite_file_is_measured_as_it_is(keras_cnn, tmp_path):
    from workbench.pipeline import check_applicable
    from workbench.runtimes.litert import export_tflite

    path = export_tflite(keras_cnn.keras_model, tmp_path / "m.tflite", "float")
    m = load_model(path, task="digits", preprocessing={"mean": 0.5, "std": 0.5})
    assert m.source == "tflite" and m.tflite_path == path and m.module is None
    assert m.keras_model is None and m.input_shape == (1, 8, 8, 1)
    assert m.preprocessing.layout == "NHWC" and m.meta["output_shape"] == [1, 10]
    with pytest.raises(WorkbenchError, match=r"\.tflite file, measured as it is; prune needs"):
        check_applicable(m, Recipe.of(PruneConfig(sparsity=0.5)), "litert")
    with pytest.raises(WorkbenchError, match=r"\.tflite file, measured as it is; quantize needs"):
        check_applicable(m, Recipe.of(quantize=QuantizeConfig(scheme="fp16")), "litert")
    with pytest.raises(WorkbenchError, match="a .tflite file, which ONNX Runtime does not run"):
        check_applicable(m, Recipe(), "onnxruntime")
    check_applicable(m, Recipe(), "litert")


def test_training_steps_on_a_keras_model_are_refused(keras_cnn):
    from workbench.pipeline import check_applicable

    recipe = Recipe.of(PruneConfig(sparsity=0.5), finetune=FineTuneConfig(epochs=1))
    with pytest.raises(WorkbenchError, match="fine-tuning is not supported for Keras models"):
        check_applicable(keras_cnn, recipe, "onnxruntime")


def test_bad_keras_and_tflite_files_get_one_clear_error(keras_cnn, tmp_path):
    good = tmp_path / "good.tflite"
    from workbench.runtimes.litert import export_tflite

    export_tflite(keras_cnn.keras_model, good, "float")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(WorkbenchError, match="truncated or corrupt TFLite"):
        load_model(cut)
    not_zip = tmp_path / "bad.keras"
    not_zip.write_bytes(b"not a zip archive at all")
    with pytest.raises(WorkbenchError, match=r"bad\.keras is a damaged or truncated \.keras"):
        load_model(not_zip)
    weights_only = tmp_path / "w.weights.h5"
    keras_cnn.keras_model.save_weights(weights_only)
    with pytest.raises(WorkbenchError, match="holds weights only"):
        load_model(weights_only)


def test_loading_a_pytorch_or_onnx_model_does_not_import_tensorflow(tmp_path):
    code = (
        "import sys; from workbench.models import load_model; "
        "load_model('digits-cnn'); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
