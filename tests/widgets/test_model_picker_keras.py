"""ModelPicker: uploaded Keras and TFLite files load like any other model file."""

from __future__ import annotations

from test_model_picker import upload  # what the browser's FileUpload sends

from widgets import ModelPicker
from widgets.model_picker import UPLOAD_SUFFIXES
from workbench.models._keras import KERAS_SAMPLE_ROOT


def test_keras_and_tflite_uploads_are_accepted(tmp_path):
    assert {".keras", ".h5", ".tflite"} <= set(UPLOAD_SUFFIXES)
    sample = (KERAS_SAMPLE_ROOT / "digits-cnn-keras" / "model.keras").read_bytes()
    picker = ModelPicker(None)
    upload(picker, "mine.keras", sample)
    assert picker.error == "", picker.error
    assert picker.model.source == "keras" and picker.model.input_shape == (1, 8, 8, 1)
    assert "loaded <b>mine.keras (keras" in picker._status_w.value

    upload(picker, "cut.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(64))
    assert picker.error.startswith("cut.tflite is a truncated or corrupt TFLite model")
    assert picker.model.source == "keras"  # the good model stays
