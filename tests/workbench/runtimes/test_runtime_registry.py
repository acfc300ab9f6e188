"""The runtime seam: the registry, and the ONNX Runtime runtime behind it (issue 7 §1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.cache import RESULT_FILE, Cache
from workbench.errors import WorkbenchError
from workbench.export import export_variant
from workbench.pipeline import MeasureSettings, evaluate, variant_key
from workbench.recipe import QuantizeConfig, Recipe
from workbench.results import Result
from workbench.runtimes import Runtime, get_runtime, list_runtimes


def test_onnxruntime_is_registered_and_the_default():
    assert "onnxruntime" in list_runtimes()
    runtime = get_runtime("onnxruntime")
    assert isinstance(runtime, Runtime)
    assert (runtime.name, runtime.artifact_format, runtime.artifact_file) == (
        "onnxruntime",
        "onnx",
        "model.onnx",
    )
    assert MeasureSettings().runtime == "onnxruntime"
    assert "onnxruntime" in runtime.versions()


@pytest.mark.parametrize("name", ["tensorrt", "", None])
def test_an_unknown_runtime_is_refused_with_the_known_ones(name):
    with pytest.raises(WorkbenchError) as err:
        get_runtime(name)
    assert "onnxruntime" in err.value.fix
    with pytest.raises(WorkbenchError, match="unknown runtime"):
        MeasureSettings(runtime="tensorrt")


@pytest.mark.parametrize("name", list_runtimes())
def test_every_runtime_measures_the_baseline_it_builds(name, cnn, tmp_path, quick):
    """Each registered runtime, through the one evaluate(): its artifact, its name on the
    Result, and figures read from the artifact by the runtime itself."""
    import dataclasses

    runtime = get_runtime(name)
    settings = dataclasses.replace(quick, runtime=name)
    result = evaluate(cnn, Recipe(), settings=settings, cache=Cache(tmp_path))
    assert result.runtime == name
    assert result.artifact.name == runtime.artifact_file
    assert result.metrics.environment["runtime"] == name
    assert result.metrics.environment["runtime_versions"] == runtime.versions()
    stats = runtime.graph_stats(result.artifact)
    assert result.metrics.params == stats.params > 0
    roles = [row["role"] for row in runtime.io_signature(result.artifact)]
    assert roles[0] == "input" and "output" in roles
    x, _ = cnn.task.arrays("test", cnn.preprocessing)
    logits = runtime.predict(result.artifact, x[:4], batch_size=1)
    assert logits.shape[0] == 4


def test_the_runtime_is_in_the_cache_key(cnn, quick, monkeypatch):
    key = variant_key(cnn, Recipe(), quick)
    runtime = get_runtime("onnxruntime")
    monkeypatch.setattr(runtime, "versions", lambda: {"onnxruntime": "0.0.0"})
    assert variant_key(cnn, Recipe(), quick) != key


def test_results_from_before_runtimes_read_as_onnxruntime(cnn, session_cache, quick):
    result = evaluate(cnn, Recipe(), settings=quick, cache=session_cache)
    d = result.to_dict()
    assert d["runtime"] == "onnxruntime"
    del d["runtime"]
    assert Result.from_dict(d).runtime == "onnxruntime"


def test_a_cache_entry_finds_the_artifact_its_result_names(cnn, tmp_path, quick):
    """The entry's artifact is the file its Result names (model.onnx for ONNX Runtime, as
    in every entry written before runtimes had names); a name reaching out is refused."""
    from workbench.cache import _result_digest

    cache = Cache(tmp_path)
    result = evaluate(cnn, Recipe(), settings=quick, cache=cache)
    entry = cache.entry_dir(result.key)
    assert cache.get(result.key).artifact == entry / "model.onnx"
    record = json.loads((entry / RESULT_FILE).read_text())
    record["result"]["artifact"] = str(entry / RESULT_FILE)
    record["result_sha256"] = _result_digest(record["result"])
    (entry / RESULT_FILE).write_text(json.dumps(record))
    assert cache.get(result.key) is None


def test_the_manifest_names_the_runtime_and_format(cnn, session_cache, quick, tmp_path):
    result = evaluate(cnn, QuantizeConfig(), settings=quick, cache=session_cache)
    manifest = json.loads(
        export_variant(
            result, cnn, tmp_path / "out", settings=quick, cache=session_cache
        ).read_text()
    )
    assert manifest["runtime"] == "onnxruntime"
    assert manifest["artifact_format"] == "onnx"
    assert manifest["artifact"]["file"] == "model.onnx"
    assert manifest["signature"]["inputs"][0]["name"] == "input"
    assert np.prod(manifest["signature"]["inputs"][0]["shape"][1:]) > 0


def test_a_step_the_runtime_has_no_handler_for_is_refused_before_measuring(cnn, monkeypatch):
    from workbench.pipeline import check_applicable

    runtime = get_runtime("onnxruntime")
    monkeypatch.setattr(type(runtime), "artifact_steps", {})
    with pytest.raises(WorkbenchError, match="no onnxruntime implementation"):
        check_applicable(cnn, Recipe.of(QuantizeConfig()), runtime)


def test_the_cli_measures_in_the_runtime_it_is_given(tmp_path, capsys):
    from workbench.cli import main

    args = ["evaluate", "digits-cnn", "--cache-dir", str(tmp_path), "--json", "--no-profile"]
    assert main([*args, "--runtime", "onnxruntime"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runtime"] == "onnxruntime"
    assert main([*args, "--runtime", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "unknown runtime 'tensorrt'" in err and "onnxruntime" in err
