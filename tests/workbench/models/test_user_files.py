"""load_model on the user's own files: every format round-trips, bad files fail clearly.

The models are built here (a few thousand parameters), saved to tmp_path in each
format, loaded back, and their outputs compared with the original module's.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from workbench.data import DIGITS, Preprocessing
from workbench.errors import WorkbenchError
from workbench.models import Model, load_model, weights_fingerprint

SHAPE = (1, 1, 8, 8)


class Tiny(nn.Module):
    """Conv -> BatchNorm -> ReLU -> pool -> Linear: 10 digit classes from 1x8x8."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.max_pool2d(x, 2), 1))


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Tiny()

    def forward(self, x: torch.Tensor):  # returns (logits, input): not one tensor
        return self.inner(x), x


def make_tiny(classes: int = 10, seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny(classes)
    # Non-trivial BatchNorm statistics, so a train-mode or mis-loaded BN shows up.
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def tiny() -> Tiny:
    return make_tiny()


def _x(batch: int = 1) -> torch.Tensor:
    return torch.randn((batch, *SHAPE[1:]), generator=torch.Generator().manual_seed(7))


def _run(model: Model, x: torch.Tensor) -> np.ndarray:
    if model.module is not None:
        with torch.no_grad():
            return model.module(x).numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _reference(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x).numpy()


def save_onnx(module: nn.Module, path: Path, dynamic: dict | None = None) -> Path:
    dynamic = {"input": {0: "batch"}} if dynamic is None else dynamic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(SHAPE),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=dynamic or None,
        )
    return path


def save_torchscript(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated but still widely used
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def save_pt2(module: nn.Module, path: Path, batch: int = 1, dynamic_batch: bool = False) -> Path:
    shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic_batch else None
    example = torch.zeros((batch, *SHAPE[1:]))
    program = torch.export.export(module, (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def _rewrite_zip(src: Path, dst: Path, edit) -> Path:
    """Copy a zip archive, passing each (inner name, bytes) through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))
    return dst


class WritesMarker:
    """A pickle payload that creates ``marker`` when unpickled: stands for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------------------------
# Round trips


def test_onnx_round_trip(tiny, tmp_path):
    path = save_onnx(tiny, tmp_path / "tiny.onnx")
    model = load_model(path)
    assert model.source == "onnx"
    assert model.module is None and model.onnx_path == path
    assert model.input_shape == SHAPE  # the symbolic batch dim becomes 1
    assert model.task is None and model.preprocessing is None and model.class_names is None
    assert model.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.meta["output_shape"] == [1, 10]
    initializers = onnx.load(str(path)).graph.initializer
    assert model.meta["parameters"] == sum(numpy_helper.to_array(i).size for i in initializers)
    np.testing.assert_allclose(_run(model, _x(3)), _reference(tiny, _x(3)), atol=1e-5)


def test_onnx_static_and_symbolic_shapes(tiny, tmp_path):
    static = load_model(save_onnx(tiny, tmp_path / "static.onnx", dynamic={}))
    assert static.input_shape == SHAPE
    with pytest.raises(
        WorkbenchError, match=r"takes input shape \(1, 1, 8, 8\).*not \(1, 1, 16, 16\)"
    ):
        load_model(tmp_path / "static.onnx", input_shape=(1, 1, 16, 16))

    symbolic = save_onnx(
        tiny, tmp_path / "hw.onnx", dynamic={"input": {0: "batch", 2: "height", 3: "width"}}
    )
    with pytest.raises(WorkbenchError, match=r"symbolic sizes.*input_shape=\(1, C, H, W\)"):
        load_model(symbolic)
    assert load_model(symbolic, input_shape=SHAPE).input_shape == SHAPE


def test_torchscript_round_trip(tiny, tmp_path):
    path = save_torchscript(tiny, tmp_path / "tiny.pt")  # .pt: recognised by content
    with pytest.raises(WorkbenchError, match=r"TorchScript archive.*input_shape=\(1, C, H, W\)"):
        load_model(path)
    model = load_model(path, input_shape=SHAPE)
    assert model.source == "torchscript" and not model.module.training
    np.testing.assert_array_equal(_run(model, _x(3)), _reference(tiny, _x(3)))
    # preprocessing fixes the input shape too
    prepared = load_model(path, preprocessing=Preprocessing(size=8, channels=1))
    assert prepared.input_shape == SHAPE and prepared.preprocessing.size == 8
    # Same program under another name: same fingerprint (the archive's top folder differs).
    copy = save_torchscript(tiny, tmp_path / "renamed.ts")
    assert load_model(copy, input_shape=SHAPE).fingerprint == model.fingerprint
    other = save_torchscript(make_tiny(seed=1), tmp_path / "other.pt")
    assert load_model(other, input_shape=SHAPE).fingerprint != model.fingerprint


def test_pt2_round_trip(tiny, tmp_path):
    path = save_pt2(tiny, tmp_path / "tiny.pt2", batch=2, dynamic_batch=True)
    model = load_model(path)
    assert model.source == "pt2"
    assert model.input_shape == SHAPE  # dynamic batch -> 1; the rest from the program
    assert model.meta["dynamic_batch"] is True
    assert not model.module.training
    assert model.module.eval() is model.module  # torch raises here; the registry allows it
    np.testing.assert_allclose(_run(model, _x(5)), _reference(tiny, _x(5)), atol=1e-6)

    static = load_model(save_pt2(tiny, tmp_path / "static.pt2"))
    assert static.input_shape == SHAPE and static.meta["dynamic_batch"] is False
    assert static.fingerprint != model.fingerprint

    batch2 = save_pt2(tiny, tmp_path / "batch2.pt2", batch=2)
    with pytest.raises(WorkbenchError, match=r"fixed batch of 2.*dynamic batch"):
        load_model(batch2)


def test_pt2_exported_in_training_mode_is_refused(tiny, tmp_path):
    path = save_pt2(tiny.train(), tmp_path / "train.pt2")
    with pytest.raises(WorkbenchError, match=r"exported in training mode.*model\.eval\(\)"):
        load_model(path)


def test_state_dict_round_trip(tmp_path):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(3)
    reference = mobilenet_v3_small().eval()
    path = tmp_path / "weights.bin"
    torch.save(reference.state_dict(), path)
    with pytest.raises(WorkbenchError, match=r"weights only.*pass arch=.*--arch"):
        load_model(path)
    shape = (1, 3, 64, 64)
    model = load_model(path, arch="torchvision:mobilenet_v3_small", input_shape=shape)
    assert model.source == "state_dict" and model.input_shape == shape
    assert model.fingerprint == weights_fingerprint(reference)
    x = torch.randn(shape)
    np.testing.assert_array_equal(_run(model, x), _reference(reference, x))
    # The legacy (non-zip) torch.save format loads the same way.
    legacy = tmp_path / "legacy.pth"
    torch.save(reference.state_dict(), legacy, _use_new_zipfile_serialization=False)
    again = load_model(legacy, arch="torchvision:mobilenet_v3_small", input_shape=shape)
    assert again.fingerprint == model.fingerprint


def test_task_digits_is_attached_only_on_request(tiny, tmp_path):
    path = save_onnx(tiny, tmp_path / "tiny.onnx")
    assert load_model(path).task is None  # no silent detection
    model = load_model(path, task="digits")
    assert model.task is DIGITS
    assert model.preprocessing == Preprocessing(size=8, channels=1)
    assert model.class_names == DIGITS.class_names
    json.dumps(model.describe())
    assert model.describe()["task"] == "digits"

    five = save_onnx(make_tiny(classes=5), tmp_path / "five.onnx")
    with pytest.raises(WorkbenchError, match=r"outputs shape \(1, 5\).*needs \(batch, 10\)"):
        load_model(five, task="digits")


def test_example_input_is_seeded(tiny, tmp_path):
    model = load_model(save_onnx(tiny, tmp_path / "tiny.onnx"))
    assert torch.equal(model.example_input(seed=3), model.example_input(seed=3))
    assert not torch.equal(model.example_input(seed=3), model.example_input(seed=4))
    assert model.example_input(batch=4).shape == (4, 1, 8, 8)


# ---------------------------------------------------------------------------------
# Files that would run code


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(WritesMarker(marker))
    # Control: the payload really runs when unpickled the ordinary way.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(WritesMarker(control)))
    assert control.exists()

    for name, data in [("weights.pt", payload), ("weights.pth", _torch_save_bytes(marker))]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WorkbenchError, match=r"refusing to unpickle.*would run code") as err:
            load_model(path, arch="torchvision:mobilenet_v3_small")
        assert "state_dict()" in str(err.value) and "--arch" in str(err.value)
        assert not marker.exists()


def _torch_save_bytes(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(1), "x": WritesMarker(marker)}, buffer)
    return buffer.getvalue()


def test_pickled_module_is_refused(tiny, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny, path)  # the whole module: unpickling it imports and runs code
    with pytest.raises(WorkbenchError, match=r"refusing to unpickle.*Tiny") as err:
        load_model(path)
    message = str(err.value)
    assert "torch.save(model.state_dict(), path)" in message
    assert "ONNX" in message and "TorchScript" in message and ".pt2" in message


def _malicious_pt2(source: Path, dst: Path, marker: Path) -> Path:
    """A .pt2 whose first weight is stored as a pickle that writes ``marker``."""
    with zipfile.ZipFile(source) as z:
        config_name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(z.read(config_name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True

    def edit(name: str, data: bytes) -> bytes:
        if name == config_name:
            return json.dumps(config).encode()
        if name.endswith("data/weights/" + first["path_name"]):
            return pickle.dumps(WritesMarker(marker))
        return data

    return _rewrite_zip(source, dst, edit)


def test_malicious_pt2_does_not_run(tiny, tmp_path):
    clean = save_pt2(tiny, tmp_path / "clean.pt2")
    marker = tmp_path / "pwned"
    evil = _malicious_pt2(clean, tmp_path / "evil.pt2", marker)
    with pytest.raises(WorkbenchError, match=r"refusing to load this \.pt2.*weight_0.*pickle"):
        load_model(evil)
    assert not marker.exists()
    # Control: torch.export.load itself unpickles that payload with weights_only=False.
    control_marker = tmp_path / "control"
    control = _malicious_pt2(clean, tmp_path / "control.pt2", control_marker)
    with pytest.raises(Exception):  # noqa: B017 - the payload's return value breaks the load
        torch.export.load(str(control))
    assert control_marker.exists()


def test_pt2_with_foreign_graph_call_is_refused(tiny, tmp_path):
    clean = save_pt2(tiny, tmp_path / "clean.pt2")

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            # Resolvable by torch's deserializer through attribute lookups under torch.
            program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.os.system"
            return json.dumps(program).encode()
        return data

    path = _rewrite_zip(clean, tmp_path / "calls.pt2", edit)
    with pytest.raises(WorkbenchError, match=r"graph calls torch\.serialization\.os\.system"):
        load_model(path)


# ---------------------------------------------------------------------------------
# Bad input


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(
        WorkbenchError, match=r"model file .*nope\.onnx does not exist.*check the path"
    ):
        load_model(str(tmp_path / "nope.onnx"))
    with pytest.raises(WorkbenchError, match=r"does not exist"):
        load_model(tmp_path / "nope")  # a Path is always a file, never a registry name
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(WorkbenchError, match=r"empty\.pt is empty \(0 bytes\).*save or copy"):
        load_model(empty)
    with pytest.raises(WorkbenchError, match=r"is a directory, not a model file.*ONNX"):
        load_model(tmp_path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2", "state_dict", "legacy_state_dict"])
def test_truncated_files(tiny, tmp_path, fmt):
    full = tmp_path / f"full.{fmt}"
    if fmt == "onnx":
        save_onnx(tiny, full)
        expected = r"damaged or truncated ONNX file"
    elif fmt == "torchscript":
        save_torchscript(tiny, full)
        expected = r"damaged or truncated PyTorch, TorchScript or \.pt2 archive"
    elif fmt == "pt2":
        save_pt2(tiny, full)
        expected = r"damaged or truncated PyTorch, TorchScript or \.pt2 archive"
    elif fmt == "state_dict":
        torch.save(tiny.state_dict(), full)
        expected = r"damaged or truncated PyTorch, TorchScript or \.pt2 archive"
    else:
        torch.save(tiny.state_dict(), full, _use_new_zipfile_serialization=False)
        expected = r"damaged or truncated PyTorch file"
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match=expected + r".*copy or export the file again"):
        load_model(cut, input_shape=SHAPE, arch="x" if "state_dict" in fmt else None)


def test_flipped_bytes_in_an_archive_are_caught(tiny, tmp_path):
    # torch's own zip reader does not check CRCs and would load the damaged weights.
    path = save_torchscript(tiny, tmp_path / "tiny.pt")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 64)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 8
    data[start : start + 16] = bytes(16)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(WorkbenchError, match=r"fails its CRC check"):
        load_model(damaged, input_shape=SHAPE)


def test_unknown_formats(tmp_path):
    text = tmp_path / "notes.bin"
    text.write_text("hello, not a model")
    with pytest.raises(WorkbenchError, match=r"not a model file the workbench recognises.*ONNX"):
        load_model(text)
    # A .tflite is loaded now (tests/workbench/models/test_keras_models.py); a file with
    # the identifier and nothing behind it is a damaged one.
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    with pytest.raises(WorkbenchError, match=r"model\.tflite is a truncated or corrupt TFLite"):
        load_model(tflite)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(WorkbenchError, match=r"zip archive but not a PyTorch"):
        load_model(archive)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(WorkbenchError, match=r"pickle but not a file written by torch\.save"):
        load_model(plain, arch="torchvision:mobilenet_v3_small")


def test_state_dict_errors_name_keys_and_fix(tiny, tmp_path):
    from torchvision.models import mobilenet_v3_small

    arch = "torchvision:mobilenet_v3_small"
    wrong = tmp_path / "tiny_weights.pt"
    torch.save(tiny.state_dict(), wrong)
    with pytest.raises(
        WorkbenchError,
        match=r"does not fit arch torchvision:mobilenet_v3_small: missing keys "
        r"features\.0\.0\.weight.*unexpected keys conv\.weight.*pass the arch",
    ):
        load_model(wrong, arch=arch)

    state = mobilenet_v3_small().state_dict()
    wrapped = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, wrapped)
    with pytest.raises(WorkbenchError, match=r"start with 'module\.'.*inner model's state_dict"):
        load_model(wrapped, arch=arch)

    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": state, "epoch": 3}, checkpoint)
    with pytest.raises(
        WorkbenchError, match=r"keys 'state_dict', 'epoch'.*checkpoint\['state_dict'\]"
    ):
        load_model(checkpoint, arch=arch)

    with pytest.raises(
        WorkbenchError, match=r"unknown architecture 'mobilenet_v3_smal'.*mobilenet_v3_small"
    ):
        load_model(wrong, arch="mobilenet_v3_smal")


def test_shape_and_output_errors(tiny, tmp_path):
    path = save_torchscript(tiny, tmp_path / "tiny.pt")
    with pytest.raises(
        WorkbenchError, match=r"does not run on input shape \(1, 1, 12, 12\).*input_shape="
    ):
        load_model(path, input_shape=(1, 1, 12, 12))
    with pytest.raises(WorkbenchError, match=r"not a batch-1 shape"):
        load_model(path, input_shape=(4, 1, 8, 8))
    # Tiny also runs on 9x9 (pooling floors 9 to 4), which no digits preprocessing makes.
    assert load_model(path, input_shape=(1, 1, 9, 9)).input_shape == (1, 1, 9, 9)
    with pytest.raises(WorkbenchError, match=r"\(1, 1, 9, 9\) cannot take the digits task"):
        load_model(path, input_shape=(1, 1, 9, 9), task="digits")
    tuple_out = save_torchscript(TupleOut().eval(), tmp_path / "tuple.pt")
    with pytest.raises(WorkbenchError, match=r"returns a tuple, not one tensor of logits"):
        load_model(tuple_out, input_shape=SHAPE)
    with pytest.raises(
        WorkbenchError, match=r"arch= applies to state_dict files only.*TorchScript"
    ):
        load_model(path, input_shape=SHAPE, arch="torchvision:resnet18")


def _relu_onnx(path: Path, opset: int) -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def test_a_too_new_opset_is_named_with_the_opset_to_use(tmp_path):
    import onnxruntime as ort

    from workbench.measure import runtime

    path = _relu_onnx(tmp_path / "new.onnx", 99)
    with pytest.raises(WorkbenchError) as exc:
        load_model(path)
    text = str(exc.value)
    assert "uses opset 99, newer than ONNX Runtime" in text and ort.__version__ in text
    most = int(text.split("(max ")[1].split(")")[0])
    assert f"re-export the model with opset <= {most}" in text
    assert "\n" not in text and "std::" not in text  # not ORT's C++ signature
    # The measuring side says the same for an artifact it cannot open.
    with pytest.raises(WorkbenchError, match="uses opset 99, newer than"):
        runtime.make_session(path)
