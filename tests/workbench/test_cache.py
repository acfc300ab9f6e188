"""The on-disk cache: damaged entries are rebuilt, abandoned builds are cleared."""

from __future__ import annotations

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
