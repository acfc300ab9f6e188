"""The registry: every sample model it lists, torchvision archs, and name errors.

The sample tests are parametrized over ``list_models()`` itself: a new sample model
in sample_models/ is tested here without touching this file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from workbench.data import DIGITS, Preprocessing
from workbench.errors import WorkbenchError
from workbench.models import Model, list_models, load_model, weights_fingerprint
from workbench.models._keras import keras_sample_names

TORCHVISION = "torchvision:"
# The PyTorch samples (the Keras ones are tested in test_keras_models.py).
KERAS_SAMPLES = keras_sample_names()
SAMPLES = [n for n in list_models() if not n.startswith(TORCHVISION) and n not in KERAS_SAMPLES]
# Small enough to build and run in well under a second each.
SMALL_ARCHS = ["mobilenet_v3_small", "squeezenet1_0"]


def _logits(model: Model | torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    module = model.module if isinstance(model, Model) else model
    with torch.no_grad():
        return module(x).numpy()


def _no_download(*args, **kwargs):
    raise AssertionError("the registry tried to download")


def test_registry_lists_samples_then_torchvision():
    names = list_models()
    assert SAMPLES, "sample_models/ ships no sample model"
    assert "digits-cnn-keras" in KERAS_SAMPLES
    assert names[: len(SAMPLES) + len(KERAS_SAMPLES)] == SAMPLES + KERAS_SAMPLES
    rest = names[len(SAMPLES) + len(KERAS_SAMPLES) :]
    assert rest and all(n.startswith(TORCHVISION) for n in rest)
    assert "torchvision:resnet18" in rest
    assert "torchvision:fasterrcnn_resnet50_fpn" not in rest  # classification only
    assert list_models("torchvision:squeezenet*") == [
        "torchvision:squeezenet1_0",
        "torchvision:squeezenet1_1",
    ]
    assert list_models("no-such-model*") == []
    assert list_models(SAMPLES[0]) == [SAMPLES[0]]


# ---------------------------------------------------------------------------------
# Sample models


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_loads_with_its_metadata(name):
    from sample_models import read_meta

    meta = read_meta(name)
    model = load_model(name)
    assert model.name == name and model.source == "sample"
    assert model.onnx_path is None
    assert model.input_shape == tuple(meta["input_shape"])
    assert model.task is DIGITS
    assert model.preprocessing == Preprocessing.from_dict(meta["preprocessing"])
    assert model.preprocessing.input_shape == model.input_shape
    assert model.class_names == tuple(meta["class_names"]) and len(model.class_names) == 10
    assert not model.module.training
    assert all(
        t.dtype == torch.float32 and t.device.type == "cpu" for t in model.module.parameters()
    )
    assert model.meta["output_shape"] == [1, 10]
    assert model.meta["test_accuracy"] == meta["test_accuracy"]
    assert len(model.fingerprint) == 64 and int(model.fingerprint, 16) >= 0
    described = json.loads(json.dumps(model.describe()))
    assert described["name"] == name and described["task"] == "digits"
    assert described["input_shape"] == list(model.input_shape)
    assert "module" not in described


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_accuracy_matches_its_metadata(name):
    # The registry must hand out the trained weights with the preprocessing they were
    # trained with: anything else shows up as a different test accuracy.
    model = load_model(name)
    x, y = DIGITS.arrays("test", model.preprocessing)
    with torch.no_grad():
        predictions = model.module(torch.from_numpy(x)).argmax(1).numpy()
    accuracy = float((predictions == y).mean())
    assert abs(accuracy - model.meta["test_accuracy"]) <= 1 / len(y) + 1e-9


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_loads_are_fresh_and_fingerprints_stable(name):
    first, second = load_model(name), load_model(name)
    assert first.module is not second.module
    assert first.fingerprint == second.fingerprint == weights_fingerprint(second.module)
    with torch.no_grad():
        next(first.module.parameters()).add_(1.0)  # a caller mutating its copy...
    assert weights_fingerprint(first.module) != second.fingerprint
    assert load_model(name).fingerprint == second.fingerprint  # ...does not touch the next


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_state_dict_round_trip(name, tmp_path):
    original = load_model(name)
    path = tmp_path / f"{name}.pt"
    torch.save(original.module.state_dict(), path)
    loaded = load_model(path, arch=name)
    assert loaded.source == "state_dict" and loaded.name == str(path)
    assert loaded.fingerprint == original.fingerprint
    assert loaded.task is DIGITS and loaded.preprocessing == original.preprocessing
    assert loaded.input_shape == original.input_shape
    x = original.example_input(batch=4)
    np.testing.assert_array_equal(_logits(loaded, x), _logits(original, x))


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_random_init_is_seeded(name):
    state = torch.random.get_rng_state()
    random_a = load_model(name, pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    random_b = load_model(name, pretrained=False)
    assert random_a.fingerprint == random_b.fingerprint
    assert random_a.fingerprint != load_model(name).fingerprint
    assert random_a.meta["init"].startswith("random")


def test_sample_refuses_another_shape_or_task_mismatch():
    name = SAMPLES[0]
    shape = load_model(name).input_shape
    other = (1, shape[1], shape[2] * 2, shape[3] * 2)
    expected = rf"sample {re.escape(name)} takes input shape .*not {re.escape(str(other))}"
    with pytest.raises(WorkbenchError, match=expected):
        load_model(name, input_shape=other)
    with pytest.raises(WorkbenchError, match=r"arch= applies to state_dict files only"):
        load_model(name, arch=name)


# ---------------------------------------------------------------------------------
# torchvision


@pytest.mark.parametrize("arch", SMALL_ARCHS)
def test_torchvision_random_init(arch):
    state = torch.random.get_rng_state()
    model = load_model(TORCHVISION + arch, pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert model.name == TORCHVISION + arch and model.source == "torchvision"
    assert model.input_shape == (1, 3, 224, 224)  # the weights' transforms crop size
    assert model.meta["output_shape"] == [1, 1000]
    assert model.task is None and model.class_names is None
    assert model.meta["init"] == "random (torch.manual_seed(0))"
    assert model.meta["transforms"]["crop_size"] == [224]
    assert not model.module.training
    json.dumps(model.describe())
    # Seeded: the same weights again, whatever the input shape.
    again = load_model(TORCHVISION + arch, pretrained=False, input_shape=(1, 3, 64, 64))
    assert again.fingerprint == model.fingerprint
    assert again.input_shape == (1, 3, 64, 64)


def _checkpoint(torch_home: Path, arch: str) -> tuple[Path, object]:
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch).DEFAULT
    return torch_home / "hub" / "checkpoints" / Path(urlparse(weights.url).path).name, weights


def test_torchvision_pretrained_from_a_local_checkpoint(tmp_path, monkeypatch):
    from torchvision.models import get_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    path, weights = _checkpoint(tmp_path, "squeezenet1_0")
    torch.manual_seed(5)
    reference = get_model("squeezenet1_0").eval()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)

    model = load_model("torchvision:squeezenet1_0", input_shape=(1, 3, 64, 64))
    assert model.fingerprint == weights_fingerprint(reference)
    x = torch.randn(2, 3, 64, 64)
    np.testing.assert_array_equal(_logits(model, x), _logits(reference, x))
    assert model.class_names == tuple(weights.meta["categories"]) and len(model.class_names) == 1000
    assert model.meta["init"] == "pretrained"
    assert model.meta["checkpoint"] == str(path)
    assert model.meta["weights"] == "SqueezeNet1_0_Weights.IMAGENET1K_V1"
    assert model.meta["checkpoint_is_official"] is False  # random weights, not the real file
    assert (
        model.fingerprint
        != load_model(
            "torchvision:squeezenet1_0", pretrained=False, input_shape=(1, 3, 64, 64)
        ).fingerprint
    )


def test_missing_pretrained_weights_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    with pytest.raises(WorkbenchError) as err:
        load_model("torchvision:mobilenet_v3_small")
    message = str(err.value)
    assert "pretrained weights for mobilenet_v3_small are not on this machine" in message
    expected, _ = _checkpoint(tmp_path, "mobilenet_v3_small")
    assert str(expected) in message
    assert "torchvision.models.get_model('mobilenet_v3_small', weights='DEFAULT')" in message
    assert "pretrained=False" in message and "--random-init" in message
    assert not expected.exists()


def test_pickled_checkpoint_is_refused(tmp_path, monkeypatch):
    from torchvision.models import get_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, _ = _checkpoint(tmp_path, "squeezenet1_0")
    path.parent.mkdir(parents=True)
    torch.save(get_model("squeezenet1_0"), path)  # a whole module, not a state_dict
    with pytest.raises(WorkbenchError, match=r"refusing to unpickle"):
        load_model("torchvision:squeezenet1_0")


def test_digits_task_needs_ten_outputs():
    with pytest.raises(WorkbenchError, match=r"outputs shape \(1, 1000\).*\(batch, 10\)"):
        load_model(
            "torchvision:squeezenet1_0", pretrained=False, input_shape=(1, 3, 64, 64), task="digits"
        )


# ---------------------------------------------------------------------------------
# Names


def test_unknown_names_suggest_close_matches():
    with pytest.raises(
        WorkbenchError,
        match=r"unknown model 'resnet18'.*torchvision:resnet18.*"
        r"run `workbench models`",
    ):
        load_model("resnet18")
    with pytest.raises(
        WorkbenchError,
        match=r"unknown torchvision architecture 'resnet19'.*"
        r"did you mean torchvision:resnet18",
    ):
        load_model("torchvision:resnet19")
    close = SAMPLES[0][:-1]  # a sample name with its last letter dropped
    with pytest.raises(WorkbenchError, match=rf"unknown model '{close}'.*{re.escape(SAMPLES[0])}"):
        load_model(close)
    with pytest.raises(WorkbenchError, match=r"does not exist"):
        load_model("models/missing.onnx")  # looks like a path: a file error, not a name error
