"""export_variant(): the files a deployment gets, written quietly and completely."""

from __future__ import annotations

import json
import warnings

import torch

from workbench.export import export_variant
from workbench.pipeline import evaluate


def test_a_torchscript_model_exports_without_library_warnings(tmp_path, session_cache, quick):
    from sample_models.architectures import DigitsCNN
    from workbench.models import load_model

    path = tmp_path / "cnn.ts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch.jit's own deprecation notices while saving the input
        torch.jit.save(torch.jit.trace(DigitsCNN().eval(), torch.randn(1, 1, 8, 8)), str(path))
    model = load_model(path, input_shape=(1, 1, 8, 8))
    result = evaluate(model, settings=quick, cache=session_cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = export_variant(
            result, model, tmp_path / "out", settings=quick, cache=session_cache
        )
    # They would be printed under the CLI's one-object JSON output on stderr.
    assert [str(w.message)[:80] for w in caught] == []
    files = [a["file"] for a in json.loads(manifest.read_text())["other_artifacts"]]
    assert files == ["model.torchscript.pt"]


def test_reusing_a_folder_replaces_the_previous_export_whole(tmp_path, session_cache, quick, cnn):
    from workbench.recipe import QuantizeConfig, Recipe

    out = tmp_path / "out"
    base = evaluate(cnn, settings=quick, cache=session_cache)
    export_variant(base, cnn, out, settings=quick, cache=session_cache)
    assert (out / "model.pt2").exists()  # a float variant gets its PyTorch program
    int8 = evaluate(cnn, Recipe.of(quantize=QuantizeConfig()), settings=quick, cache=session_cache)
    manifest = json.loads(
        export_variant(int8, cnn, out, settings=quick, cache=session_cache).read_text()
    )
    listed = {manifest["artifact"]["file"], manifest["baseline"]["file"]}
    listed |= {a["file"] for a in manifest["other_artifacts"]}
    listed |= {
        e["file"]
        for e in (manifest["device_runner"]["runner"], manifest["device_runner"]["instructions"])
    }
    # No model.pt2 of the previous export left beside the int8 one, and no scratch.
    assert {p.name for p in out.iterdir()} == listed | {"manifest.json"}
    assert {p.name for p in tmp_path.iterdir()} == {"out"}


def test_a_folder_of_other_files_is_refused_and_left_alone(tmp_path, session_cache, quick, cnn):
    import pytest

    from workbench.cli import main
    from workbench.errors import WorkbenchError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    base = evaluate(cnn, settings=quick, cache=session_cache)
    with pytest.raises(WorkbenchError, match="not a workbench export"):
        export_variant(base, cnn, out, settings=quick, cache=session_cache)
    code = main(["evaluate", "digits-cnn", "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "c").exists(), "measured before refusing"
