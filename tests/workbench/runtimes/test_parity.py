"""Parity across runtimes: one variant's ONNX and TFLite files compared on the test split."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.recipe import QuantizeConfig, Recipe
from workbench.runtimes.parity import cross_runtime_parity


@pytest.fixture(scope="module")
def keras_cnn():
    from workbench.models import load_model

    return load_model("digits-cnn-keras")


def test_the_float_keras_sample_agrees_across_runtimes(keras_cnn, quick, session_cache):
    p = cross_runtime_parity(keras_cnn, Recipe(), quick, cache=session_cache)
    assert p.runtimes == ("onnxruntime", "litert") and p.samples == 540
    assert p.artifacts[0].endswith("model.onnx") and p.artifacts[1].endswith("model.tflite")
    assert p.top1_agreement == 1.0 and p.disagreements == 0
    assert 0 <= p.mean_abs_diff <= p.max_abs_diff < 1e-4  # float files: rounding only
    assert p.accuracy[0] == p.accuracy[1] >= 0.97
    assert json.loads(json.dumps(p.to_dict()))["runtimes"] == ["onnxruntime", "litert"]
    # Recorded with both variants in the cache, as a sweep over both runtimes records it.
    for key, other in zip(p.keys, reversed(p.runtimes), strict=True):
        record = session_cache.get(key).metrics.parity_with(other)
        assert record.top1_agreement == 1.0 and record.max_abs_diff == p.max_abs_diff


def test_a_sweep_over_onnx_runtime_and_litert_records_their_parity(keras_cnn, quick, tmp_path):
    from workbench.cache import Cache
    from workbench.study import sweep

    study = sweep(
        keras_cnn,
        [Recipe()],
        settings=quick,
        cache=Cache(tmp_path / "cache"),
        progress=False,
        runtimes=["onnxruntime", "litert"],
    )
    ort, tfl = study.results
    p = tfl.metrics.parity_with("onnxruntime")
    assert p.key == ort.key and p.samples == 540 and p.top1_agreement == 1.0
    assert 0 < p.max_abs_diff < 1e-4  # two float files: rounding only
    assert ort.metrics.parity_with("litert").max_abs_diff == p.max_abs_diff
    assert p.text().startswith("matches onnxruntime: 100% top-1, max |\u0394| ")


@pytest.mark.slow
def test_dynamic_int8_files_differ_and_say_by_how_much(cnn, quick, session_cache):
    recipe = Recipe.of(quantize=QuantizeConfig(scheme="dynamic"))
    p = cross_runtime_parity(cnn, recipe, quick, cache=session_cache)
    # Two different int8 schemes (ONNX Runtime's and the TFLite converter's): their
    # outputs differ measurably, their predictions almost never.
    assert p.max_abs_diff > 1e-3 and p.top1_agreement >= 0.98
    assert p.disagreements == round((1 - p.top1_agreement) * p.samples)


def test_what_either_runtime_cannot_build_fails_before_anything_is_built(keras_cnn, tmp_path):
    from workbench.cache import Cache

    cache = Cache(tmp_path / "cache")
    with pytest.raises(WorkbenchError, match="ONNX Runtime's int8 models take and give float"):
        cross_runtime_parity(keras_cnn, QuantizeConfig(scheme="int8", io_type="int8"), cache=cache)
    with pytest.raises(WorkbenchError, match="parity compares two different runtimes"):
        cross_runtime_parity(keras_cnn, cache=cache, runtimes=("litert", "litert"))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_the_parity_command(capsys, session_cache):
    code = main(
        [
            "parity",
            "digits-cnn-keras",
            "--json",
            "--no-profile",
            "--cache-dir",
            str(session_cache.root),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    assert d["model"] == "digits-cnn-keras" and d["recipe"] == "baseline"
    assert d["top1_agreement"] == 1.0 and d["max_abs_diff"] < 1e-4
