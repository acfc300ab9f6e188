"""The on-disk cache: damaged entries are rebuilt, abandoned builds are cleared, trained
modules are kept for every runtime."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np

from workbench import pipeline
from workbench.cache import Cache, sha256_file
from workbench.pipeline import evaluate
from workbench.recipe import FineTuneConfig, PruneConfig, QuantizeConfig, Recipe


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


# --------------------------------------------------------------- trained modules
PRUNED_TUNED = (PruneConfig(sparsity=0.5), FineTuneConfig(epochs=1))


def _count_training(monkeypatch) -> list[int]:
    """Counts the calls of the fine-tuning step."""
    calls: list[int] = []
    real = pipeline.TORCH_STEPS[FineTuneConfig]
    monkeypatch.setitem(
        pipeline.TORCH_STEPS, FineTuneConfig, lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    return calls


def test_one_training_serves_the_float_reference_and_every_runtime(
    cnn, tmp_path, quick, fake_runtimes, monkeypatch
):
    cache = Cache(tmp_path)
    calls = _count_training(monkeypatch)
    int8 = evaluate(cnn, Recipe((*PRUNED_TUNED, QuantizeConfig())), settings=quick, cache=cache)
    # The int8 variant and its float reference (the pruned, fine-tuned module) both
    # exported one trained module.
    assert len(calls) == 1
    float_ref = cache.get(pipeline.variant_key(cnn, Recipe(PRUNED_TUNED), quick))
    assert float_ref is not None
    twin = evaluate(
        cnn,
        Recipe(PRUNED_TUNED),
        settings=dataclasses.replace(quick, runtime=fake_runtimes[0]),
        cache=cache,
    )
    assert len(calls) == 1, "another runtime trained the same steps again"
    # The same file, byte for byte, whether the module was trained now or loaded.
    assert sha256_file(twin.artifact) == sha256_file(float_ref.artifact)
    np.testing.assert_array_equal(
        np.load(cache.predictions_path(twin.key)), np.load(cache.predictions_path(float_ref.key))
    )
    # The steps' reports come with the stored module.
    assert [s["kind"] for s in twin.steps] == ["prune", "finetune"]
    assert twin.steps[1]["final_loss"] == float_ref.steps[1]["final_loss"]
    assert int8.metrics.accuracy > 0.9


def test_a_structured_or_untrained_module_is_not_kept(cnn, tmp_path, quick):
    # A state_dict loads only into a module of its shapes: a module whose channels were
    # removed is trained again, never loaded into the wrong shapes. One only pruned is
    # redone in seconds, so it takes no disk.
    cache = Cache(tmp_path)
    structured = (PruneConfig(method="structured", sparsity=0.25), FineTuneConfig(epochs=1))
    for steps in (structured, (PruneConfig(sparsity=0.5),)):
        evaluate(cnn, Recipe(steps), settings=quick, cache=cache)
        assert cache.get_trained(pipeline.trained_key(cnn, Recipe(steps))) is None
    assert not (tmp_path / "trained").exists()


def test_a_stored_module_never_runs_code_and_damage_means_training_again(
    cnn, tmp_path, quick, monkeypatch, caplog
):
    cache = Cache(tmp_path)
    calls = _count_training(monkeypatch)
    evaluate(cnn, Recipe(PRUNED_TUNED), settings=quick, cache=cache)
    key = pipeline.trained_key(cnn, Recipe(PRUNED_TUNED))
    entry = cache.trained_dir(key)
    # A pickle that would run code when loaded, with a record that matches it: it is
    # refused by weights_only loading, not executed.
    marker = tmp_path / "ran"
    (entry / "state.pt").write_bytes(pickle.dumps(_RunsCode(str(marker)), protocol=2))
    record = json.loads((entry / "record.json").read_text())
    record["state.pt"] = sha256_file(entry / "state.pt")
    (entry / "record.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="workbench.cache"):
        assert cache.get_trained(key) is None
    assert not marker.exists()
    assert "ignoring damaged trained module" in caplog.text
    assert not entry.exists()
    # With the entry gone, the next variant trains again and stores a good one.
    evaluate(cnn, Recipe((*PRUNED_TUNED, QuantizeConfig())), settings=quick, cache=cache)
    assert len(calls) == 2
    assert cache.get_trained(key) is not None


class _RunsCode:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
