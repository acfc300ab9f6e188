"""ModelPicker: samples, names, and uploaded files, good and bad."""

from __future__ import annotations

import datetime as dt

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from widgets import ModelPicker


def tiny_onnx_bytes() -> bytes:
    """A valid one-Gemm ONNX model: 4 inputs -> 3 outputs."""
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "W")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def upload(picker: ModelPicker, name: str, content: bytes) -> None:
    """What the browser's FileUpload sends for one chosen file."""
    picker.upload_w.value = (
        {
            "name": name,
            "type": "",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        },
    )


def test_picker_loads_the_initial_sample():
    picker = ModelPicker("digits-cnn")
    assert "digits-cnn" in picker.sample_w.options
    assert not any(":" in n for n in picker.sample_w.options)  # torchvision names: the combobox
    assert any(n.startswith("torchvision:") for n in picker.path_w.options)
    assert picker.model.name == "digits-cnn"
    assert picker.model.task is not None and picker.error == ""
    assert "digits-cnn" in picker._status_w.value


def test_a_bad_upload_shows_the_engine_error_and_keeps_the_model():
    picker = ModelPicker(None)
    upload(picker, "good.onnx", tiny_onnx_bytes())
    good = picker.model
    assert good is not None and good.source == "onnx" and good.input_shape == (1, 4)
    assert picker.error == ""
    assert picker.upload_w.value == ()  # the bytes are not kept in the widget

    upload(picker, "broken.onnx", b"this is not a model")
    assert picker.model is good  # nothing broke
    assert "broken.onnx is a damaged or truncated ONNX file" in picker.error
    assert "damaged or truncated" in picker._status_w.value

    upload(picker, "notes.txt", b"hello")
    assert "notes.txt is not a model file" in picker.error
    assert picker.model is good


def test_uploaded_files_stay_until_the_picker_closes():
    picker = ModelPicker(None)
    upload(picker, "../../evil/name.onnx", tiny_onnx_bytes())
    path = picker.model.onnx_path
    assert path.name == "name.onnx" and path.is_file()  # the browser's path is dropped
    assert picker._upload_root in path.parents
    picker.close()
    assert not path.exists()


def test_an_unknown_name_shows_an_error_with_the_fix():
    picker = ModelPicker(None)
    picker.path_w.value = "no-such-model"
    picker.load_w.click()
    assert picker.model is None
    assert "unknown model 'no-such-model'" in picker.error
    assert "workbench models" in picker.error
