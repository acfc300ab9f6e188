"""The shipped Keras sample: loads safely, reaches its recorded accuracy, and retrains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sample_models.train import _file_sha256
from sample_models.train_keras import KERAS_SAMPLE_DIR, KERAS_SPEC, MODEL_FILE, evaluate_keras

FOLDER = KERAS_SAMPLE_DIR / KERAS_SPEC.name


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FOLDER / "meta.json").read_text(encoding="utf-8"))


def test_meta_describes_the_committed_file(meta):
    path = FOLDER / MODEL_FILE
    assert meta["model_bytes"] == path.stat().st_size
    assert meta["model_sha256"] == _file_sha256(path)
    assert meta["input_shape"] == [1, 8, 8, 1] and meta["preprocessing"]["layout"] == "NHWC"
    assert meta["test_samples"] == 540 and meta["accuracy_floor"] >= 0.97
    # Trained without the recipe search's validation images, and says so.
    assert meta["validation_samples"] == 252 and meta["training"]["train_images"] == 1005
    assert "without the 252 validation images" in meta["training"]["data"]


@pytest.mark.slow
def test_the_committed_model_loads_in_safe_mode_and_reaches_its_recorded_accuracy(meta):
    from workbench._tf import keras

    model = keras().models.load_model(FOLDER / MODEL_FILE, safe_mode=True)
    accuracy, correct, total = evaluate_keras(model, KERAS_SPEC.preprocessing)
    assert total == 540
    assert accuracy >= meta["accuracy_floor"]
    # Same file, same split: the recorded count is reproduced (allowing one image for
    # float round-off between TensorFlow builds).
    assert abs(correct - meta["test_correct"]) <= 1
    _, correct, total = evaluate_keras(model, KERAS_SPEC.preprocessing, "validation")
    assert total == 252 and abs(correct - meta["validation_correct"]) <= 1
    assert meta["params"] == model.count_params()


@pytest.mark.slow
def test_training_one_epoch_writes_a_loadable_model_and_meta(tmp_path, training_reads):
    from sample_models.train_keras import train_keras_sample
    from workbench._tf import keras

    meta = train_keras_sample(epochs=1, out_dir=tmp_path, log=lambda line: None)
    assert training_reads and all(training_reads)
    folder = tmp_path / KERAS_SPEC.name
    model = keras().models.load_model(folder / MODEL_FILE)
    assert meta["training"]["epochs"] == 1
    assert json.loads((folder / "meta.json").read_text())["model_sha256"] == _file_sha256(
        folder / MODEL_FILE
    )
    # The saved file holds the trained weights, not a fresh initialisation.
    assert np.isclose(evaluate_keras(model, KERAS_SPEC.preprocessing)[0], meta["test_accuracy"])
    validation = evaluate_keras(model, KERAS_SPEC.preprocessing, "validation")[0]
    assert np.isclose(validation, meta["validation_accuracy"])
    assert getattr(model, "optimizer", None) is None  # saved without the optimizer state
