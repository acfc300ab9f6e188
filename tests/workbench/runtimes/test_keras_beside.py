"""The Keras model kept beside a float .tflite (``float.keras``) reloads from disk for the
quantize step: a PyTorch sample's rebuild, and a rebuild holding the ONNX route's own
layers in a process that did not build it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch


class _Scaled(torch.nn.Module):
    """``x * 0.5 + 0.25`` before a convolution: the rebuild keeps both as OnnxConstantOp
    layers (workbench.runtimes.onnx_keras.custom_objects), not Keras built-ins."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x * 0.5 + 0.25), 1))


def test_a_pytorch_sample_rebuild_reloads_from_disk(cnn, tmp_path):
    from workbench.runtimes.litert.runtime import _BESIDE, keras_beside
    from workbench.runtimes.onnx_keras import keras_for

    rebuilt = keras_for(cnn, cnn.module, tmp_path)
    rebuilt.save(tmp_path / "float.keras")
    _BESIDE.pop(str(tmp_path / "float.tflite"), None)  # from disk, not this process' copy
    back = keras_beside(tmp_path / "float.tflite")
    x = np.random.default_rng(0).random((4, *cnn.input_shape[1:]), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(rebuilt(x)))


@pytest.mark.slow  # a fresh Python process imports TensorFlow (~10 s)
def test_a_rebuild_with_the_routes_own_layers_reloads_in_a_fresh_process(tmp_path):
    from workbench.onnx_export import export_onnx
    from workbench.runtimes.onnx_keras import onnx_to_keras

    rebuilt = onnx_to_keras(export_onnx(_Scaled().eval(), (1, 1, 8, 8), tmp_path / "s.onnx").path)
    assert "OnnxConstantOp" in {type(layer).__name__ for layer in rebuilt.layers}
    rebuilt.save(tmp_path / "float.keras")
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", np.asarray(rebuilt(x)))
    script = textwrap.dedent(
        f"""
        import numpy as np
        from workbench.runtimes.litert.runtime import keras_beside
        model = keras_beside({str(tmp_path / "float.tflite")!r})
        got = np.asarray(model(np.load({str(tmp_path / "x.npy")!r})))
        np.testing.assert_allclose(got, np.load({str(tmp_path / "want.npy")!r}), atol=1e-6)
        print("reloaded")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and "reloaded" in done.stdout, done.stderr[-2000:]
