"""The on-disk cache: damaged entries are rebuilt, abandoned builds are cleared."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys

import numpy as np

from workbench.cache import Cache
from workbench.pipeline import evaluate
from workbench.recipe import PruneConfig, Recipe


def test_damaged_predictions_are_rebuilt_not_read(cnn, tmp_path, quick):
    cache = Cache(tmp_path)
    base = evaluate(cnn, settings=quick, cache=cache)
    preds = cache.predictions_path(base.key)
    good = np.load(preds)
    preds.write_bytes(preds.read_bytes()[:50])  # truncated
    assert cache.get(base.key) is None
    # A new variant needs the baseline's predictions for agreement: it rebuilds them.
    r = evaluate(cnn, Recipe.of(PruneConfig(sparsity=0.3)), settings=quick, cache=cache)
    np.testing.assert_array_equal(np.load(cache.predictions_path(base.key)), good)
    assert 0 < r.metrics.agreement <= 1


def test_builds_abandoned_by_a_dead_process_are_cleared(tmp_path):
    cache = Cache(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # that process has exited
    abandoned = tmp_path / f".build-0123456789ab-{dead_pid}-x1"
    running = tmp_path / f".build-0123456789ab-{os.getpid()}-x2"
    for d in (abandoned, running):
        d.mkdir()
        (d / "float.onnx").write_bytes(b"half")
    with cache.building("ab" * 32) as work:
        (work / "model.onnx").write_bytes(b"x")
        assert not abandoned.exists()
        assert running.exists(), "a build of a live process was removed"


def test_an_edited_result_json_is_caught_and_rebuilt(cnn, tmp_path, quick, caplog):
    cache = Cache(tmp_path)
    base = evaluate(cnn, settings=quick, cache=cache)
    result_file = cache.entry_dir(base.key) / "result.json"
    record = json.loads(result_file.read_text())
    # One edited digit, in a file that still parses: the figure must not be reported.
    record["result"]["metrics"]["accuracy"] = base.metrics.accuracy - 0.5
    result_file.write_text(json.dumps(record, indent=1))
    with caplog.at_level(logging.WARNING, logger="workbench.cache"):
        assert cache.get(base.key) is None
    assert "result.json does not match" in caplog.text
    rebuilt = evaluate(cnn, settings=quick, cache=cache)
    assert rebuilt.metrics.accuracy == base.metrics.accuracy


def test_a_cached_result_is_named_after_the_caller(cnn, session_cache, quick):
    first = evaluate(cnn, settings=quick, cache=session_cache)
    # Same weights, task and preprocessing under another name: one cache entry.
    same = dataclasses.replace(cnn, name="/home/me/my-digits.pt2")
    again = evaluate(same, settings=quick, cache=session_cache)
    assert again.key == first.key
    assert again.model == "/home/me/my-digits.pt2" and first.model == "digits-cnn"
    assert evaluate(cnn, settings=quick, cache=session_cache).model == "digits-cnn"
