"""The Keras sample converted to .tflite once per session, in every scheme the tests use."""

from __future__ import annotations

import numpy as np
import pytest

from sample_models.train_keras import KERAS_SAMPLE_DIR, KERAS_SPEC, MODEL_FILE, nhwc
from workbench.data.digits import DIGITS

CALIBRATION_SAMPLES = 200


@pytest.fixture(scope="session")
def keras_sample():
    from workbench._tf import keras

    return keras().models.load_model(KERAS_SAMPLE_DIR / KERAS_SPEC.name / MODEL_FILE)


@pytest.fixture(scope="session")
def digits_nhwc() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split in the Keras sample's layout, and its labels."""
    x, y = DIGITS.arrays("test", KERAS_SPEC.preprocessing)
    return nhwc(x), y


@pytest.fixture(scope="session")
def calibration_nhwc() -> np.ndarray:
    """Representative images from the training part only."""
    return nhwc(DIGITS.calibration(KERAS_SPEC.preprocessing, CALIBRATION_SAMPLES))


@pytest.fixture(scope="session")
def tflite_files(tmp_path_factory, keras_sample, calibration_nhwc) -> dict[str, object]:
    """scheme key -> path: float, fp16, dynamic, int8 (int8 I/O) and int8-float-io."""
    from workbench.runtimes.litert import export_tflite

    out = tmp_path_factory.mktemp("tflite")
    files = {}
    for key, scheme, io in [
        ("float", "float", "int8"),
        ("fp16", "fp16", "int8"),
        ("dynamic", "dynamic", "int8"),
        ("int8", "int8", "int8"),
        ("int8-float-io", "int8", "float"),
    ]:
        files[key] = export_tflite(
            keras_sample, out / f"{key}.tflite", scheme, calibration=calibration_nhwc, io=io
        )
    return files
