"""TensorFlow Lite Micro: accuracy of the int8 Keras sample in TFLM, the exact tensor arena,
the C array export, and clear errors for float models and operators TFLM lacks."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.runtimes import litert
from workbench.runtimes import tflite_micro as tflm

pytestmark = pytest.mark.slow  # converts the sample; each TFLM call is a worker process


@pytest.fixture(scope="module")
def arena(tflite_files) -> tflm.ArenaReport:
    return tflm.tensor_arena(tflite_files["int8"])


def test_int8_sample_in_tflm_matches_litert(tflite_files, digits_nhwc):
    x, y = digits_nhwc
    for key in ("int8", "int8-float-io"):
        micro = tflm.predict(tflite_files[key], x)
        lite = litert.predict(tflite_files[key], x)
        assert micro.shape == (540, 10) and micro.dtype == np.float32
        # Reference kernels and XNNPACK may round a borderline logit differently.
        assert (micro.argmax(1) == lite.argmax(1)).mean() >= 0.99, key
        assert abs((micro.argmax(1) == y).mean() - (lite.argmax(1) == y).mean()) <= 0.01, key


def test_raw_outputs_are_int8(tflite_files, digits_nhwc):
    raw = tflm.predict(tflite_files["int8"], digits_nhwc[0][:3], raw=True)
    assert raw.dtype == np.int8 and raw.shape == (3, 10)


def test_arena_is_exact_runs_with_it_and_fails_with_1_kib_less(tflite_files, arena, digits_nhwc):
    x = digits_nhwc[0][:2]
    path = tflite_files["int8"]
    assert arena.verified
    assert arena.flash_bytes == path.stat().st_size
    assert arena.activations_bytes + arena.persistent_bytes == arena.recorded_bytes
    assert arena.activations_bytes > 0 and arena.persistent_bytes > 0
    # Checked again here through the public API, independently of the search.
    tflm.predict(path, x, arena_size=arena.arena_bytes)
    with pytest.raises(WorkbenchError, match="could not run"):
        tflm.predict(path, x, arena_size=arena.arena_bytes - 1024)
    assert arena.firmware_bytes % 16 == 0
    assert arena.firmware_bytes >= max(arena.arena_bytes, arena.recorded_bytes)
    assert arena.to_dict()["firmware_bytes"] == arena.firmware_bytes


def test_c_array_is_byte_identical_aligned_and_carries_the_constants(tmp_path, tflite_files, arena):
    path = tflite_files["int8"]
    header, source = tflm.export_c_array(
        path, tmp_path, name="digits_model", arena_size=arena.firmware_bytes
    )
    assert (header.name, source.name) == ("digits_model.h", "digits_model.cc")
    text_h, text_cc = header.read_text(), source.read_text()
    assert tflm.read_c_array(text_cc) == path.read_bytes()
    assert "alignas(16) const unsigned char digits_model[]" in text_cc
    size = path.stat().st_size
    assert re.search(rf"constexpr unsigned int digits_model_len = {size};", text_h)
    assert f"digits_model_arena_size = {arena.firmware_bytes};" in text_h
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_model.cc", "digits_model.h"]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler (g++)")
def test_c_array_compiles_and_holds_the_model_bytes(tmp_path, tflite_files, arena):
    path = tflite_files["int8"]
    tflm.export_c_array(path, tmp_path, name="model", arena_size=arena.firmware_bytes)
    (tmp_path / "main.cc").write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(model) % 16) return 3;\n"
        "  std::fwrite(model, 1, model_len, stdout);\n"
        "  return model_arena_size > 0 ? 0 : 4;\n}\n"
    )
    exe = tmp_path / "dump"
    subprocess.run(
        ["g++", "-std=c++17", "-O0", "-o", str(exe), "main.cc", "model.cc"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert subprocess.run([str(exe)], capture_output=True, check=True).stdout == path.read_bytes()


@pytest.mark.parametrize("key", ["float", "fp16", "dynamic"])
def test_float_models_are_refused_with_the_fix(tflite_files, digits_nhwc, tmp_path, key):
    for call in (
        lambda: tflm.predict(tflite_files[key], digits_nhwc[0][:1]),
        lambda: tflm.tensor_arena(tflite_files[key]),
        lambda: tflm.export_c_array(tflite_files[key], tmp_path),
    ):
        with pytest.raises(WorkbenchError, match="computes in floating point.*full-integer int8"):
            call()
    assert not list(tmp_path.iterdir())


def test_an_operator_tflm_lacks_is_named(tmp_path):
    from workbench._tf import keras

    k = keras()
    inp = k.Input((8, 8, 1))
    x = k.layers.Dense(8)(k.layers.Flatten()(inp))
    out = k.layers.Dense(2)(k.layers.Activation("gelu")(x))  # GELU: in LiteRT, not in TFLM
    calibration = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
    path = litert.export_tflite(
        k.Model(inp, out), tmp_path / "gelu.tflite", "int8", calibration=calibration
    )
    assert litert.graph_stats(path).op_counts["GELU"] == 1
    with pytest.raises(WorkbenchError, match="no kernel for the operator GELU"):
        tflm.predict(path, np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(WorkbenchError, match="GELU"):
        tflm.tensor_arena(path)


def test_inputs_in_the_wrong_layout_are_refused(tflite_files):
    with pytest.raises(WorkbenchError, match="NHWC"):
        tflm.predict(tflite_files["int8"], np.zeros((1, 1, 8, 8), np.float32))


def test_bad_c_names_are_refused(tmp_path, tflite_files):
    with pytest.raises(WorkbenchError, match="not a valid C identifier"):
        tflm.export_c_array(tflite_files["int8"], tmp_path, name="9 lives", arena_size=100)
    assert not list(tmp_path.iterdir())
