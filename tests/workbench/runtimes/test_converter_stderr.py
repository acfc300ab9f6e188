"""The TFLite converter's C-level stderr lines are held during a conversion and shown only
when the conversion fails."""

from __future__ import annotations

import os

import pytest

from workbench.runtimes.litert.export import c_stderr_held


def test_c_level_writes_are_held_and_fd_2_is_restored(capfd):
    with c_stderr_held():
        os.write(2, b"fully_quantize: 0, inference_type: 6\n")
    os.write(2, b"after the block\n")
    err = capfd.readouterr().err
    assert "fully_quantize" not in err and "after the block" in err


def test_what_was_held_is_shown_when_the_block_fails(capfd):
    with pytest.raises(RuntimeError, match="conversion failed"), c_stderr_held():
        os.write(2, b"error: 'tf.Erf' op is neither a custom op nor a flex op\n")
        raise RuntimeError("conversion failed")
    err = capfd.readouterr().err
    assert "tf.Erf' op is neither a custom op" in err
    os.write(2, b"still the real stderr\n")
    assert "still the real stderr" in capfd.readouterr().err


def test_a_full_int8_conversion_prints_no_converter_lines(capfd, keras_sample, calibration_nhwc):
    from workbench.runtimes.litert.export import convert_keras

    capfd.readouterr()
    data = convert_keras(keras_sample, "int8", calibration=calibration_nhwc[:8], io="int8")
    assert data[4:8] == b"TFL3"
    err = capfd.readouterr().err
    assert "fully_quantize" not in err and "inference_type" not in err, err
