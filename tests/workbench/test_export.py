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
