"""The engine's table of variants and its comparison of two variants (no UI)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from workbench.errors import WorkbenchError
from workbench.recipe import FineTuneConfig, PruneConfig, QuantizeConfig, Recipe
from workbench.results import LatencyStats, MemoryStats, Metrics, Result
from workbench.study import (
    DEFAULT_OBJECTIVES,
    FIGURES,
    METRICS,
    OBJECTIVE_COLUMNS,
    VARIANT_COLUMNS,
    Study,
    compare_results,
    result_row,
    variant_table,
)


def result(recipe: Recipe, *, accuracy, p50, size, key, macs=1_500_000) -> Result:
    metrics = Metrics(
        accuracy=accuracy,
        agreement=1.0 if recipe.is_baseline else 0.99,
        agreement_basis="540 digits test images",
        size_bytes=size,
        compressed_bytes=size // 2,
        params=30_000,
        nonzero_params=30_000,
        macs=macs,
        latency=LatencyStats(
            p50=p50, p90=p50, p99=p50, mean=p50, min=p50, max=p50, n=50, warmup=5, threads=1
        ),
        memory=MemoryStats(peak_bytes=2_000_000, process_peak_bytes=9, baseline_bytes=8),
        environment={},
    )
    return Result("digits-cnn", recipe, Path("m.onnx"), metrics, (), key)


BASE = result(Recipe(), accuracy=0.98, p50=0.30, size=120_000, key="b")
PRUNED = result(
    Recipe.of(PruneConfig(method="structured", sparsity=0.5)),
    accuracy=0.95,
    p50=0.15,
    size=60_000,
    key="p",
    macs=700_000,
)
INT8 = result(
    Recipe.of(quantize=QuantizeConfig(scheme="int8")), accuracy=None, p50=0.2, size=32_000, key="q"
)


def study() -> Study:
    return Study("digits-cnn", [BASE, PRUNED, INT8])


def test_the_table_has_every_variant_every_figure_and_sorts_either_way():
    df = variant_table(study(), "size_bytes")
    assert list(df["recipe"]) == ["int8-minmax-pc", "prune-structured-0.5", "baseline"]
    assert {f.column for f in FIGURES} <= set(df.columns)
    assert list(variant_table(study(), "size_bytes", ascending=False)["key"]) == ["b", "p", "q"]
    # A missing figure sorts last whichever the direction.
    assert list(variant_table(study(), "accuracy")["key"])[-1] == "q"
    assert list(variant_table(study(), "accuracy", ascending=False)["key"])[-1] == "q"
    assert variant_table(study())["on_frontier"].dtype == bool
    with pytest.raises(WorkbenchError, match="cannot sort by 'bogus'"):
        variant_table(study(), "bogus")
    assert variant_table(Study("x")).empty


def test_two_variants_are_compared_figure_by_figure():
    rows = {r["figure"].column: r for r in compare_results(PRUNED, BASE)}
    assert rows["accuracy"]["a"] == 0.95 and rows["accuracy"]["b"] == 0.98
    assert rows["accuracy"]["difference"] == pytest.approx(0.03)
    assert rows["accuracy"]["better"] == "b"  # higher accuracy wins
    assert rows["latency_p50_ms"]["ratio"] == pytest.approx(2.0)
    assert rows["latency_p50_ms"]["better"] == "a"  # lower latency wins
    assert rows["params"]["better"] == "same"
    # A figure one side lacks is shown, with no verdict.
    rows = {r["figure"].column: r for r in compare_results(BASE, INT8)}
    assert rows["accuracy"]["b"] is None and rows["accuracy"]["better"] is None
    assert rows["accuracy"]["difference"] is None and rows["accuracy"]["ratio"] is None


# Issue 7 §1: structured columns, the one table of figures, the recorded frontier.
PRUNED_TUNED = result(
    Recipe.of(
        PruneConfig(method="unstructured", sparsity=0.7),
        finetune=FineTuneConfig(epochs=2, teacher="digits-resnet18"),
    ),
    accuracy=0.97,
    p50=0.31,
    size=120_000,
    key="pt",
)
TUNED = result(
    Recipe.of(finetune=FineTuneConfig(epochs=4)), accuracy=0.985, p50=0.3, size=1, key="t"
)


def test_rows_say_what_a_variant_is_in_columns():
    row = result_row(PRUNED_TUNED)
    assert {c: row[c] for c in VARIANT_COLUMNS} == {
        "model": "digits-cnn",
        "runtime": "onnxruntime",
        "prune_method": "unstructured",
        "sparsity": 0.7,
        "quant_scheme": None,
        "finetune_epochs": 2,
        "teacher": "digits-resnet18",
    }
    tuned = result_row(TUNED)
    assert (tuned["prune_method"], tuned["quant_scheme"], tuned["finetune_epochs"]) == (
        None,
        None,
        4,
    )
    assert result_row(INT8)["quant_scheme"] == "int8"
    base = result_row(BASE)
    assert all(base[c] is None for c in VARIANT_COLUMNS if c not in ("model", "runtime"))


def test_one_table_of_figures_feeds_rows_objectives_and_compact_views():
    row = result_row(PRUNED)
    for fig in METRICS:
        assert row[fig.column] == fig.read(PRUNED)
        assert fig.text(fig.read(PRUNED)) not in ("", "n/a")
        assert fig.better in ("min", "max") and fig.title
    assert OBJECTIVE_COLUMNS == {f.column: f.better for f in METRICS}
    assert set(FIGURES) <= set(METRICS) and "latency_p99_ms" not in {f.column for f in FIGURES}


def test_the_study_file_and_csv_record_the_frontier_and_its_objectives(tmp_path):
    study = Study("digits-cnn", [BASE, PRUNED, INT8, PRUNED_TUNED])
    objectives = {"accuracy": "max", "latency_p50_ms": "min"}
    saved = json.loads(study.save(tmp_path / "s.json", objectives).read_text())
    assert saved["frontier"]["objectives"] == objectives
    assert saved["frontier"]["keys"] == [r.key for r in study.frontier(objectives)]
    assert Study.load(tmp_path / "s.json").results == study.results  # read back unchanged
    default = json.loads(study.save(tmp_path / "d.json").read_text())["frontier"]
    assert default["objectives"] == DEFAULT_OBJECTIVES
    df = pd.read_csv(study.to_csv(tmp_path / "s.csv", objectives))
    on = dict(zip(df["key"], df["on_frontier"], strict=True))
    assert on == {r.key: r.key in saved["frontier"]["keys"] for r in study.results}
    assert set(df["frontier_objectives"]) == {"accuracy:max;latency_p50_ms:min"}
    assert list(df["prune_method"].fillna("")) == ["", "structured", "", "unstructured"]
