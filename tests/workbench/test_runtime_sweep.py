"""Sweeps that span runtimes: every variant in each runtime, rows carrying it, a frontier
per runtime on request (API and `workbench sweep --runtime a,b --frontier-per-runtime`).

The second runtime is ONNX Runtime registered under another name (the `fake_runtimes`
fixture), so these tests hold whichever runtimes a branch registers.
"""

from __future__ import annotations

import csv
import json

import pytest

from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.recipe import QuantizeConfig, Recipe
from workbench.results import Result
from workbench.study import Study, pareto_mask, sweep, variant_table

# The names tests/conftest.py's fake_runtimes fixture registers.
FAKE_RUNTIME, FAKE_FLOAT_RUNTIME = "onnxruntime-twin", "onnxruntime-float-only"
INT8 = Recipe.of(None, QuantizeConfig(scheme="int8"))
OBJECTIVES = {"accuracy": "max", "latency_p50_ms": "min", "size_bytes": "min"}


@pytest.fixture
def two_runtime_study(cnn, quick, session_cache, fake_runtimes) -> Study:
    seen = []
    study = sweep(
        cnn,
        [Recipe(), INT8],
        settings=quick,
        cache=session_cache,
        progress=False,
        runtimes=["onnxruntime", FAKE_RUNTIME],
        on_result=seen.append,
    )
    # Both baselines first (each variant is compared with its own runtime's).
    assert [(r.recipe.is_baseline, r.runtime) for r in seen[:2]] == [
        (True, "onnxruntime"),
        (True, FAKE_RUNTIME),
    ]
    return study


def test_a_sweep_measures_every_variant_in_each_runtime(two_runtime_study):
    study = two_runtime_study
    assert sorted((r.recipe.name, r.runtime) for r in study.results) == sorted(
        (recipe.name, rt) for recipe in (Recipe(), INT8) for rt in ("onnxruntime", FAKE_RUNTIME)
    )
    assert study.runtimes() == ["onnxruntime", FAKE_RUNTIME]
    df = study.to_dataframe()
    assert sorted(df["runtime"]) == sorted(["onnxruntime", FAKE_RUNTIME] * 2)
    # Each runtime's figures are its own measurement, with its own cache key and artifact.
    assert len(set(df["key"])) == 4
    for rt in study.runtimes():
        assert study.baseline_in(rt).runtime == rt
        assert study.baseline_in(rt).metrics.environment["runtime"] == rt


def test_the_variant_table_says_which_runtime_measured_each_row(two_runtime_study):
    table = variant_table(two_runtime_study)
    assert list(table.columns[:2]) == ["recipe", "runtime"]
    assert sorted(table["runtime"]) == sorted(["onnxruntime", FAKE_RUNTIME] * 2)
    one = Study(
        two_runtime_study.model, [r for r in two_runtime_study.results if r.runtime == FAKE_RUNTIME]
    )
    assert "runtime" not in variant_table(one).columns  # one runtime: as before


def test_adding_a_recipe_in_another_runtime_keeps_both(two_runtime_study):
    study = Study(two_runtime_study.model)
    for r in two_runtime_study.results:
        study.add(r)
    assert len(study.results) == 4
    again = next(r for r in two_runtime_study.results if r.runtime == FAKE_RUNTIME)
    study.add(again)  # the same recipe in the same runtime replaces
    assert len(study.results) == 4 and study.results[-1] is again


def _slowed(result: Result, factor: float) -> Result:
    d = result.to_dict()
    for k in ("p50", "p90", "p99", "mean", "min", "max"):
        if d["metrics"]["latency"].get(k) is not None:
            d["metrics"]["latency"][k] *= factor
    return Result.from_dict(d)


def test_the_frontier_can_be_taken_per_runtime(two_runtime_study, tmp_path):
    # The twin's variants made 10x slower: across runtimes every one is dominated by the
    # same recipe in ONNX Runtime; within its own runtime some are on its frontier.
    study = Study(two_runtime_study.model)
    for r in two_runtime_study.results:
        study.add(_slowed(r, 10.0) if r.runtime == FAKE_RUNTIME else r)

    across = study.frontier(OBJECTIVES)
    assert across and all(r.runtime == "onnxruntime" for r in across)
    per = study.frontier(OBJECTIVES, per_runtime=True)
    for rt in ("onnxruntime", FAKE_RUNTIME):
        mine = [r for r in study.results if r.runtime == rt]
        mask = pareto_mask(study.__class__(study.model, mine).to_dataframe(), OBJECTIVES)
        assert {r.key for r in per if r.runtime == rt} == {
            r.key for r, m in zip(mine, mask, strict=True) if m
        }
    assert any(r.runtime == FAKE_RUNTIME for r in per)

    record = study.save(tmp_path / "s.json", OBJECTIVES, per_runtime=True)
    saved = json.loads(record.read_text())["frontier"]
    assert saved["per_runtime"] is True
    assert set(saved["keys"]) == {r.key for r in per}
    assert set(saved["by_runtime"][FAKE_RUNTIME]) == {
        r.key for r in per if r.runtime == FAKE_RUNTIME
    }
    rows = list(
        csv.DictReader(study.to_csv(tmp_path / "s.csv", OBJECTIVES, per_runtime=True).open())
    )
    assert {r["key"] for r in rows if r["on_frontier"] == "True"} == {r.key for r in per}
    assert {r["frontier_per_runtime"] for r in rows} == {"True"}
    # Without it, one frontier across runtimes, as before.
    assert (
        json.loads(study.save(tmp_path / "t.json", OBJECTIVES).read_text())["frontier"][
            "per_runtime"
        ]
        is False
    )


def test_a_runtime_that_cannot_honour_a_step_refuses_the_whole_sweep(
    cnn, quick, tmp_path, fake_runtimes
):
    from workbench.cache import Cache

    cache = Cache(tmp_path / "cache")
    with pytest.raises(WorkbenchError, match=f"no {FAKE_FLOAT_RUNTIME} implementation"):
        sweep(
            cnn,
            [Recipe(), INT8],
            settings=quick,
            cache=cache,
            progress=False,
            runtimes=["onnxruntime", FAKE_FLOAT_RUNTIME],
        )
    assert not list(cache.root.glob("*/*"))  # refused before measuring anything


def _unlabelled(result: Result) -> Result:
    d = result.to_dict()
    d["metrics"]["accuracy"] = None
    return Result.from_dict(d)


def test_each_runtime_frontier_is_over_the_figures_its_variants_have(two_runtime_study):
    # A runtime whose variants have no accuracy (as for a model without labels):
    # its frontier falls back to agreement, the other runtime's keeps accuracy.
    study = Study(two_runtime_study.model)
    for r in two_runtime_study.results:
        study.add(_unlabelled(r) if r.runtime == FAKE_RUNTIME else r)
    record = study.frontier_record(OBJECTIVES, per_runtime=True)
    by_runtime = record["objectives_by_runtime"]
    assert "accuracy" in by_runtime["onnxruntime"] and "agreement" not in by_runtime["onnxruntime"]
    assert "agreement" in by_runtime[FAKE_RUNTIME] and "accuracy" not in by_runtime[FAKE_RUNTIME]
    assert record["by_runtime"][FAKE_RUNTIME]  # not emptied by the missing accuracy


@pytest.mark.parametrize("runtimes", [[], "onnxruntime", ["onnxruntime", "no-such-runtime"]])
def test_bad_runtime_lists_are_one_clear_error(cnn, quick, tmp_path, runtimes):
    with pytest.raises(WorkbenchError):
        sweep(cnn, [Recipe()], settings=quick, progress=False, runtimes=runtimes)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_sweep_spans_runtimes_with_a_frontier_each(
    capsys, tmp_path, session_cache, fake_runtimes
):
    out_file, csv_file = tmp_path / "s.json", tmp_path / "s.csv"
    code, out, err = run(
        capsys, "sweep", "digits-cnn", "--quantize", "none,int8",
        "--runtime", f"onnxruntime,{FAKE_RUNTIME}", "--frontier-per-runtime",
        "--out", str(out_file), "--csv", str(csv_file),
        "--cache-dir", str(session_cache.root), "--no-profile",
    )  # fmt: skip
    assert code == 0, err
    assert "runtime" in out.splitlines()[0] and FAKE_RUNTIME in out
    assert "one frontier per runtime" in out
    assert "runtimes were timed in separate runs" in out
    saved = json.loads(out_file.read_text())
    assert sorted(r["runtime"] for r in saved["results"]) == sorted(
        ["onnxruntime", FAKE_RUNTIME] * 2
    )
    assert saved["frontier"]["per_runtime"] is True
    assert set(saved["frontier"]["by_runtime"]) == {"onnxruntime", FAKE_RUNTIME}
    assert all(saved["frontier"]["by_runtime"].values())  # each runtime has a frontier
    rows = list(csv.DictReader(csv_file.open()))
    assert {r["runtime"] for r in rows} == {"onnxruntime", FAKE_RUNTIME}
    # The report of that study: a frontier per runtime when asked.
    report = tmp_path / "r.html"
    code, out, err = run(
        capsys, "report", str(out_file), "-o", str(report), "--frontier-per-runtime"
    )
    assert code == 0, err
    assert "within each runtime" in report.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--runtime", "onnxruntime,nope"], "unknown runtime 'nope'"),
        (["sweep", "--runtime", ","], "names no runtime"),
        (["evaluate", "--runtime", "onnxruntime,onnxruntime-twin"], "use `workbench sweep`"),
    ],
)
def test_cli_bad_runtime_lists_exit_2_with_one_line(capsys, tmp_path, fake_runtimes, argv, message):
    argv = [argv[0], "digits-cnn", *argv[1:], "--cache-dir", str(tmp_path / "c")]
    if argv[0] == "sweep":
        argv += ["--out", str(tmp_path / "s.json")]
    code, out, err = run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "c").exists() and not (tmp_path / "s.json").exists()


def test_a_ray_sweep_spans_runtimes_one_cluster_sweep_each(
    cnn, quick, session_cache, fake_runtimes, monkeypatch
):
    """The Ray path (cluster stood in for by this process): one cluster sweep per
    runtime, gathered in one study; a failure the cluster records gets its runtime."""
    from workbench import cluster
    from workbench.pipeline import evaluate

    calls = []

    def on_this_machine(model, todo, *, settings, cache, on_result, cancel, **_):
        calls.append(settings.runtime)
        part = Study(model.name)
        for recipe in todo:
            if not recipe.is_baseline and settings.runtime == FAKE_RUNTIME:
                part.add_failure(recipe, RuntimeError("node lost"))  # as the cluster records it
                continue
            result = evaluate(model, recipe, settings=settings, cache=cache)
            part.add(result)
            on_result(result)
        return part

    monkeypatch.setattr(cluster, "sweep_on_ray", on_this_machine)
    seen = []
    study = sweep(
        cnn,
        [Recipe(), INT8],
        settings=quick,
        cache=session_cache,
        progress=False,
        executor="ray",
        runtimes=["onnxruntime", FAKE_RUNTIME],
        on_result=seen.append,
    )
    assert calls == ["onnxruntime", FAKE_RUNTIME]
    assert sorted((r.recipe.name, r.runtime) for r in study.results) == sorted(
        [(Recipe().name, "onnxruntime"), (INT8.name, "onnxruntime"), (Recipe().name, FAKE_RUNTIME)]
    )
    assert len(seen) == 3
    assert [(f["recipe_name"], f["runtime"]) for f in study.failures] == [(INT8.name, FAKE_RUNTIME)]
