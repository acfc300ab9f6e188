"""ModelPicker: samples, names, and uploaded files, good and bad."""

from __future__ import annotations

import datetime as dt

import pytest

from widgets import ModelPicker


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


def test_a_bad_upload_shows_the_engine_error_and_keeps_the_model(tiny_onnx):
    picker = ModelPicker(None)
    upload(picker, "good.onnx", tiny_onnx)
    good = picker.model
    assert good is not None and good.source == "onnx" and good.input_shape == (1, 4)
    assert "loaded <b>good.onnx (onnx" in picker._status_w.value
    assert picker.error == ""
    assert picker.upload_w.value == ()  # the bytes are not kept in the widget

    upload(picker, "broken.onnx", b"this is not a model")
    assert picker.model is good  # nothing broke
    assert picker.error.startswith("broken.onnx is a damaged or truncated ONNX file")
    assert "damaged or truncated" in picker._status_w.value
    assert "workbench-upload" not in picker.error  # the user's file name, not the server's path

    upload(picker, "notes.txt", b"hello")
    assert "notes.txt is not a model file" in picker.error
    assert picker.model is good


def test_uploaded_files_stay_until_the_picker_closes(tiny_onnx):
    picker = ModelPicker(None)
    upload(picker, "../../evil/name.onnx", tiny_onnx)
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


def test_a_torchvision_name_without_weights_points_at_random_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no pretrained weights on disk here
    picker = ModelPicker(None)
    assert not picker.load("torchvision:mobilenet_v3_small")
    assert picker.model is None
    assert "tick 'random weights'" in picker.error

    picker.random_w.value = True
    assert picker.load("torchvision:mobilenet_v3_small"), picker.error
    assert picker.model.source == "torchvision" and picker.model.input_shape == (1, 3, 224, 224)
    assert "random" in picker.model.meta["init"]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_torchscript_upload_takes_its_input_shape_from_the_panel():
    import io

    import torch

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), buffer)
    picker = ModelPicker(None)
    upload(picker, "linear.pt", buffer.getvalue())
    assert picker.model is None and "fill in 'input'" in picker.error

    picker.shape_w.value = "1 x four"
    upload(picker, "linear.pt", buffer.getvalue())
    assert picker.model is None and "'1 x four' is not a list of whole numbers" in picker.error

    picker.shape_w.value = "1x4"
    upload(picker, "linear.pt", buffer.getvalue())
    assert picker.error == "" and picker.model.source == "torchscript"
    assert picker.model.input_shape == (1, 4)


def test_the_sample_box_clears_when_another_model_is_loaded(tiny_onnx):
    picker = ModelPicker("digits-cnn")
    upload(picker, "good.onnx", tiny_onnx)
    assert picker.sample_w.value is None and picker.model.source == "onnx"
    picker.sample_w.value = "digits-cnn"  # picking the first sample again loads it again
    assert picker.model.name == "digits-cnn"


def test_a_page_on_a_sample_does_not_import_torchvision(tmp_path):
    """torchvision costs each viewer's kernel ~190 MB: its names come from the cache."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from widgets import ModelPicker\n"
        "from workbench.models import list_models\n"
        "p = ModelPicker('digits-cnn')\n"
        "assert p.model.name == 'digits-cnn'\n"
        "names = list(p.path_w.options)\n"
        "print('torchvision' in sys.modules, len(names), names == list_models('torchvision:*'))\n"
    )
    env = {**os.environ, "WORKBENCH_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, second = (run.stdout.split() for run in runs)
    # The first kernel lists torchvision's architectures and keeps the list ...
    assert first[0] == "True" and int(first[1]) > 50 and first[2] == "True"
    assert list((tmp_path / "cache").glob("torchvision-names-*.json"))
    # ... the next ones offer the same names without importing torchvision.
    assert second[0] == "False" and second[1] == first[1]
