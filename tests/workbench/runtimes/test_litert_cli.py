"""`workbench evaluate ... --runtime litert|onnxruntime` on the Keras sample, end to end,
and the flags LiteRT refuses (one line, exit 2)."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main

FAST = ["--no-profile"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("runtime", ["litert", "onnxruntime"])
def test_evaluate_the_keras_sample_int8_in_each_runtime(capsys, session_cache, runtime):
    argv = ["evaluate", "digits-cnn-keras", "--runtime", runtime, "--quantize", "int8"]
    code, out, err = run(capsys, *argv, "--json", "--cache-dir", str(session_cache.root), *FAST)
    assert code == 0, err
    d = json.loads(out)
    assert d["runtime"] == runtime and d["model"] == "digits-cnn-keras"
    assert d["artifact"].endswith("model.tflite" if runtime == "litert" else "model.onnx")
    assert d["accuracy"] >= 0.97 and d["preprocessing"]["layout"] == "NHWC"
    assert d["environment"]["runtime"] == runtime


def test_io_type_int8_reaches_the_file_and_text_names_litert(capsys, session_cache):
    argv = ["evaluate", "digits-cnn-keras", "--runtime", "litert", "--quantize", "int8"]
    code, out, err = run(capsys, *argv, "--io-type", "int8", "--cache-dir", str(session_cache.root))
    assert code == 0, err
    assert "[int8-full-ioint8]" in out  # the TFLite converter's words, not ONNX Runtime's
    line = next(x for x in out.splitlines() if x.strip().startswith("environment"))
    assert "litert (ai-edge-litert " in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quantize", "int8", "--calibration", "entropy"], "LiteRT cannot honour .*calibration"),
        (["--quantize", "int8", "--bias-correction"], "LiteRT cannot honour .*bias_correction"),
        (["--quantize", "fp16", "--io-type", "int8"], "--io-type applies to static int8"),
        (["--finetune-epochs", "1", "--prune", "unstructured"], "not supported for Keras models"),
    ],
)
def test_what_litert_cannot_do_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    import re

    code, out, err = run(
        capsys,
        "evaluate",
        "digits-cnn-keras",
        "--runtime",
        "litert",
        *argv,
        "--cache-dir",
        str(tmp_path),
    )
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not any(tmp_path.iterdir())  # nothing built, nothing cached
