"""The shipped sample models: metadata complete and true, weights load safely, accuracy holds."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch

from sample_models import SAMPLE_DIR, build_module, read_meta, sample_names
from sample_models.architectures import ARCHITECTURES, DigitsCNN, build_architecture
from workbench.data.digits import DIGITS, Preprocessing

# Independent of meta.json, so a retrain cannot quietly lower the bar by editing it.
FLOORS = {"digits-cnn": 0.97, "digits-mobilenetv2": 0.95, "digits-resnet18": 0.97}

REQUIRED_META = {
    "name": str,
    "description": str,
    "arch": str,
    "arch_kwargs": dict,
    "task": str,
    "class_names": list,
    "input_shape": list,
    "preprocessing": dict,
    "test_accuracy": float,
    "test_correct": int,
    "test_samples": int,
    "validation_accuracy": float,
    "validation_correct": int,
    "validation_samples": int,
    "accuracy_floor": float,
    "params": int,
    "seed": int,
    "training": dict,
    "train_seconds": float,
    "versions": dict,
    "weights_file": str,
    "weights_bytes": int,
    "weights_sha256": str,
    "command": str,
}

NAMES = sample_names()


def test_the_three_samples_are_shipped():
    assert NAMES == sorted(FLOORS)


def test_unknown_sample_raises_key_error_naming_the_known_ones():
    with pytest.raises(KeyError, match="digits-cnn"):
        read_meta("no-such-model")
    with pytest.raises(KeyError, match="digits-resnet18"):
        build_module("no-such-model")


def test_unknown_architecture_raises_key_error_naming_the_registered_ones():
    with pytest.raises(KeyError, match="torchvision:resnet18"):
        build_architecture("os:system")


def test_sample_models_does_not_import_workbench():
    # sample_models is the lowest layer; checked in a fresh interpreter, because this
    # test module itself imports workbench.
    import subprocess
    import sys

    code = (
        "import sys, sample_models, sample_models.architectures; "
        "sample_models.build_module('digits-cnn'); "
        "print(any(m == 'workbench' or m.startswith('workbench.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=SAMPLE_DIR.parent,
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_meta_is_complete_and_consistent(name):
    meta = read_meta(name)
    for key, kind in REQUIRED_META.items():
        assert isinstance(meta.get(key), kind), f"{name}: meta[{key!r}] missing or not {kind}"
    assert meta["name"] == name
    assert meta["task"] == DIGITS.name
    assert meta["arch"] in ARCHITECTURES
    assert meta["arch_kwargs"] == {"num_classes": 10}
    assert meta["class_names"] == list(DIGITS.class_names)
    prep = Preprocessing.from_dict(meta["preprocessing"])
    assert list(prep.input_shape) == meta["input_shape"]
    assert "description" in meta["preprocessing"]
    assert meta["accuracy_floor"] == FLOORS[name]
    assert meta["command"] == f"python -m sample_models.train --model {name}"
    for key in ("epochs", "optimizer", "lr", "batch_size", "schedule", "augmentation"):
        assert key in meta["training"], f"{name}: training settings lack {key!r}"
    # Trained without the recipe search's validation images, and says so.
    assert meta["training"]["train_images"] == len(DIGITS.fitting().raw("train")[1]) == 1005
    assert "without the 252 validation images" in meta["training"]["data"]
    assert {"torch", "torchvision"} <= set(meta["versions"])


@pytest.mark.parametrize("name", NAMES)
def test_weights_file_matches_meta_and_loads_with_weights_only(name):
    meta = read_meta(name)
    path = SAMPLE_DIR / name / meta["weights_file"]
    data = path.read_bytes()
    assert len(data) == meta["weights_bytes"]
    assert hashlib.sha256(data).hexdigest() == meta["weights_sha256"]
    # A real torch zip archive (not an LFS pointer or a legacy pickle).
    assert zipfile.is_zipfile(path)

    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    module = build_module(name)
    assert not module.training
    assert sum(p.numel() for p in module.parameters()) == meta["params"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), f"{name}: {key} not loaded"


@pytest.mark.parametrize("name", NAMES)
def test_reproduced_test_accuracy_equals_meta_and_clears_floor(name):
    meta = read_meta(name)
    x, y = DIGITS.arrays("test", Preprocessing.from_dict(meta["preprocessing"]))
    assert x.shape[1:] == tuple(meta["input_shape"][1:])
    module = build_module(name)
    with torch.no_grad():
        pred = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    accuracy = float((pred == y).mean())
    assert len(y) == meta["test_samples"] == 540
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-9)
    assert accuracy >= FLOORS[name]


@pytest.mark.parametrize("name", NAMES)
def test_reproduced_validation_accuracy_equals_meta(name):
    meta = read_meta(name)
    x, y = DIGITS.arrays("validation", Preprocessing.from_dict(meta["preprocessing"]))
    module = build_module(name)
    with torch.no_grad():
        pred = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    assert len(y) == meta["validation_samples"] == 252
    assert int((pred == y).sum()) == meta["validation_correct"]
    assert float((pred == y).mean()) == pytest.approx(meta["validation_accuracy"], abs=1e-9)


def test_untrained_module_is_far_below_floor():
    # The accuracy test can fail: the same check on random weights does not pass.
    meta = read_meta("digits-cnn")
    x, y = DIGITS.arrays("test", Preprocessing.from_dict(meta["preprocessing"]))
    torch.manual_seed(0)
    module = build_module("digits-cnn", load_weights=False)
    with torch.no_grad():
        accuracy = float((module(torch.from_numpy(x)).argmax(dim=1).numpy() == y).mean())
    assert accuracy < 0.5


def test_digits_cnn_is_microcontroller_sized():
    module = build_module("digits-cnn")
    assert isinstance(module, DigitsCNN)
    assert sum(p.numel() for p in module.parameters()) < 60_000
    assert read_meta("digits-cnn")["input_shape"] == [1, 1, 8, 8]


def test_torchvision_samples_are_unmodified():
    import torchvision

    for name, factory in (
        ("digits-mobilenetv2", torchvision.models.mobilenet_v2),
        ("digits-resnet18", torchvision.models.resnet18),
    ):
        reference = factory(num_classes=10).state_dict()
        shipped = build_module(name).state_dict()
        assert {k: v.shape for k, v in shipped.items()} == {
            k: v.shape for k, v in reference.items()
        }
        assert read_meta(name)["input_shape"] == [1, 3, 32, 32]


def test_train_writes_consistent_weights_and_meta(tmp_path, training_reads):
    # One short epoch of the small CNN into a temp folder: exercises the script's
    # writing path without touching the shipped samples.
    from sample_models.train import train_sample

    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    meta = train_sample("digits-cnn", epochs=1, out_dir=tmp_path, log=lambda line: None)
    assert training_reads and all(training_reads)
    # Training in-process must not leak its global torch settings into the caller.
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    folder = tmp_path / "digits-cnn"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "weights.pt"]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in folder.iterdir())  # readable
    assert json.loads((folder / "meta.json").read_text()) == meta
    assert meta["training"]["epochs"] == 1
    data = (folder / "weights.pt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["weights_sha256"]
    state = torch.load(folder / "weights.pt", weights_only=True)
    module = DigitsCNN(num_classes=10)
    module.load_state_dict(state)
    module.eval()
    x, y = DIGITS.arrays("test", Preprocessing.from_dict(meta["preprocessing"]))
    with torch.no_grad():
        pred = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    assert float(np.mean(pred == y)) == pytest.approx(meta["test_accuracy"], abs=1e-9)
    x, y = DIGITS.arrays("validation", Preprocessing.from_dict(meta["preprocessing"]))
    with torch.no_grad():
        pred = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    assert float(np.mean(pred == y)) == pytest.approx(meta["validation_accuracy"], abs=1e-9)


def test_train_refuses_bad_requests(tmp_path):
    from sample_models.train import train_sample
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="unknown sample model"):
        train_sample("digits-vit", out_dir=tmp_path)
    with pytest.raises(WorkbenchError, match="epochs"):
        train_sample("digits-cnn", epochs=0, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
