"""The sensitivity-guided recipe search: its path, its choice, its file, chart and CLI."""

from __future__ import annotations

import dataclasses
import html
import json

import pytest

from tests.conftest import QUICK
from workbench import cli
from workbench.cli import build_parser, main
from workbench.errors import WorkbenchError
from workbench.pipeline import evaluate
from workbench.recipe import Recipe
from workbench.search import SearchResult, evaluate_flags, measure_sensitivity, search
from workbench.study import Study

# A small search: one-shot unstructured pruning only, four candidates besides the
# baseline (int8, two sparsities of the bisection, int8 stacked on the one kept), so it
# takes seconds.
SMALL = {
    "max_accuracy_drop": 1.0,
    "target": "size",
    "max_candidates": 4,
    "recovery": "none",
    "methods": ("unstructured",),
}


@pytest.fixture(scope="module")
def searched(cnn, session_cache) -> SearchResult:
    return search(cnn, settings=QUICK, cache=session_cache, **SMALL)


def test_the_chosen_recipe_keeps_the_floor_and_is_the_smallest_accepted(
    searched, cnn, session_cache
):
    chosen = searched.chosen_result
    assert chosen is not None and searched.chosen_recipe == chosen.recipe
    floor = searched.floor["accuracy"]
    baseline = searched.steps[0]
    assert searched.floor["kind"] == "drop"
    # The floor is read against the float model on the validation images.
    assert floor == pytest.approx(baseline.validation_accuracy - 0.01)
    assert searched.chosen_step.validation_accuracy >= floor
    # Measured, not predicted: the figures are the cached Result's, built from the task
    # without its validation images.
    fitting = dataclasses.replace(cnn, task=cnn.task.fitting())
    again = evaluate(fitting, chosen.recipe, settings=QUICK, cache=session_cache)
    assert again.key == chosen.key
    assert searched.chosen_step.figures["accuracy"] == again.metrics.accuracy
    accepted = [s for s in searched.steps if s.accepted]
    assert all(chosen.metrics.compressed_bytes <= s.figures["compressed_bytes"] for s in accepted)
    assert chosen.metrics.compressed_bytes < baseline.figures["compressed_bytes"]
    assert "chosen" in searched.outcome


def test_the_path_is_recorded_and_rejected_candidates_say_why(searched):
    steps = searched.steps
    assert steps[0].phase == "baseline" and steps[0].recipe.is_baseline
    assert steps[1].phase == "quantize"  # int8 first
    assert 1 < len(steps) <= SMALL["max_candidates"] + 1
    assert [s.index for s in steps] == list(range(len(steps)))
    assert all(s.key and s.why_tried and s.reason for s in steps)
    rejected = [s for s in steps if not s.accepted]
    assert rejected, "the bisection must have stepped past the floor"
    for s in rejected:
        assert s.reason.startswith("rejected: ") and "is below the floor" in s.reason
    # Bisected in float, then int8 stacked on the sparsest kept.
    pruned = [s for s in steps if s.phase == "prune-unstructured"]
    assert pruned and all(s.recipe.get("quantize") is None for s in pruned)
    stacked = [s for s in steps if s.phase == "stack-unstructured"]
    assert len(stacked) == 1 and stacked[0].recipe.get("quantize") is not None
    sparsest_kept = max(
        s.recipe.get("prune").sparsity for s in pruned if "bisection: kept" in s.reason
    )
    assert stacked[0].recipe.get("prune").sparsity == sparsest_kept
    assert searched.candidates_evaluated == len(steps)


def test_the_sensitivity_profile_reads_the_validation_images_only(cnn, monkeypatch):
    task_type = type(cnn.task)
    arrays = task_type.arrays

    def no_test_split(self, split, *args, **kwargs):
        assert split == "validation", f"the sensitivity profile read the {split} split"
        return arrays(self, split, *args, **kwargs)

    monkeypatch.setattr(task_type, "arrays", no_test_split)
    profile = measure_sensitivity(cnn, ("unstructured",), 1.0)
    entry = profile["methods"]["unstructured"]
    assert "never the test split" in profile["validation_source"]
    assert profile["validation_images"] == 252
    assert {r["layer"] for r in entry["layers"]} >= {"features.3", "classifier.1"}
    drops = [c["drop_points"] for c in entry["curve"]]
    assert drops[-1] > drops[0]  # 90% one-shot costs more than 30%


def test_the_profile_is_kept_in_the_cache(searched, cnn, session_cache, monkeypatch):
    import workbench.search as search_module

    def measure_again(*args, **kwargs):
        raise AssertionError("the profile was measured again")

    monkeypatch.setattr(search_module, "measure_sensitivity", measure_again)
    allowance = (searched.steps[0].validation_accuracy - searched.floor["accuracy"]) * 100
    kept = search_module._cached_sensitivity(cnn, SMALL["methods"], allowance, session_cache)
    assert kept["methods"] == searched.sensitivity["methods"]


def test_a_candidate_that_fails_is_rejected_with_its_error_and_the_search_goes_on(
    searched, cnn, session_cache, monkeypatch
):
    import workbench.search as search_module

    real = search_module.evaluate
    lost = next(s.recipe for s in searched.steps if "bisection: lost" in s.reason)

    def evaluate_or_fail(model, recipe, **kwargs):
        if recipe == lost:
            raise RuntimeError("the graph cannot be traced\nsecond line")
        return real(model, recipe, **kwargs)

    monkeypatch.setattr(search_module, "evaluate", evaluate_or_fail)
    again = search(cnn, settings=QUICK, cache=session_cache, **SMALL)
    failed = next(s for s in again.steps if s.recipe == lost)
    assert failed.key is None and not failed.accepted
    assert failed.reason.startswith("rejected: failed: RuntimeError: the graph cannot be traced;")
    assert again.chosen_recipe == searched.chosen_recipe  # the rest went on as before


def test_retraining_that_loses_what_one_shot_kept_is_dropped_for_one_shot(
    searched, cnn, session_cache, monkeypatch
):
    import workbench.search as search_module

    real = search_module.evaluate

    def retraining_hurts(model, recipe, **kwargs):
        # A stand-in for a retraining that costs accuracy: the one-shot variant's figures
        # with its accuracy at 50% (on the test split here, on validation below).
        if recipe.get("finetune") is None:
            return real(model, recipe, **kwargs)
        one_shot = Recipe(tuple(s for s in recipe.steps if s.kind != "finetune"))
        result = real(model, one_shot, **kwargs)
        metrics = dataclasses.replace(result.metrics, accuracy=0.5)
        return dataclasses.replace(
            result, recipe=recipe, metrics=metrics, key="retrained-" + recipe.digest()
        )

    real_accuracy = search_module._artifact_accuracy

    def validation_hurts(runtime, result, x, y):
        if result.key.startswith("retrained-"):
            return 0.5
        return real_accuracy(runtime, result, x, y)

    monkeypatch.setattr(search_module, "evaluate", retraining_hurts)
    monkeypatch.setattr(search_module, "_artifact_accuracy", validation_hurts)
    result = search(
        cnn,
        settings=QUICK,
        cache=session_cache,
        students=False,  # the pruning's own logic, with its whole budget
        **{**SMALL, "recovery": "finetune", "max_candidates": 5, "finetune_epochs": 1},
    )
    pruned = [s for s in result.steps if s.phase == "prune-unstructured"]
    retried = next(s for s in pruned if "one-shot pruning instead" in s.why_tried)
    before = pruned[pruned.index(retried) - 1]
    assert before.recipe.get("finetune") is not None and not before.accepted
    assert "lost with retraining where the one-shot profile kept it" in before.reason
    assert retried.recipe.get("finetune") is None
    assert retried.recipe.get("prune") == before.recipe.get("prune") and retried.accepted
    stacked = [s for s in result.steps if s.phase == "stack-unstructured"]
    assert stacked and stacked[0].recipe.get("finetune") is None  # the one-shot that held


def test_the_search_file_is_a_study_and_round_trips(searched, tmp_path):
    path = searched.save(tmp_path / "search.json")
    loaded = SearchResult.load(path)
    assert loaded.search_dict() == searched.search_dict()
    assert [r.key for r in loaded.results] == [r.key for r in searched.results]
    study = Study.load(path)  # what `workbench report` and the charts read
    assert study.baseline is not None and len(study.results) == len(searched.results)


def test_the_chart_draws_the_path_in_order_with_the_chosen_one(searched):
    from workbench.charts import search_path_chart

    df = searched.to_study().to_dataframe()
    spec = search_path_chart(df, searched.path_rows(), floor=searched.floor["accuracy"]).to_dict()
    path = next(
        v
        for v in spec["datasets"].values()
        if v and "verdict" in v[0] and "step" in v[0] and "reason" in v[0]
    )
    assert [row["step"] for row in path] == [s.index for s in searched.steps]
    verdicts = [row["verdict"] for row in path]
    assert verdicts.count("chosen") == 1 and verdicts[searched.chosen] == "chosen"
    assert "rejected" in verdicts
    assert any(v.get("mark", {}).get("type") == "rule" for v in spec["layer"])  # the floor


def _mislabel_validation(monkeypatch) -> None:
    """Shift the validation labels: the float model then scores near 0% on them (the
    samples score 100% on their own training images, so no floor is above them)."""
    import workbench.search as search_module

    real = search_module._validation

    def mislabelled(model):
        x, y = real(model)
        return x, (y + 1) % 10

    monkeypatch.setattr(search_module, "_validation", mislabelled)


def test_a_floor_above_the_float_accuracy_is_an_answer_not_an_error(
    cnn, session_cache, monkeypatch
):
    _mislabel_validation(monkeypatch)
    result = search(cnn, accuracy_floor=97, target="size", settings=QUICK, cache=session_cache)
    assert result.chosen is None and result.chosen_recipe is None
    assert "no recipe meets the floor" in result.outcome and "below the floor" in result.outcome
    assert len(result.steps) == 1 and not result.steps[0].accepted  # nothing else measured


def test_a_device_budget_rejects_what_does_not_fit(cnn, session_cache):
    from workbench.devices.registry import get_device

    # Room for the int8 file (54 kB), not for the float one (164 kB).
    board = dataclasses.replace(
        get_device("raspberry-pi-4"), name="tiny-board", storage_bytes=100_000
    )
    result = search(
        cnn,
        max_accuracy_drop=1.0,
        target="device",
        device=board,
        max_candidates=1,
        settings=QUICK,
        cache=session_cache,
    )
    base, int8 = result.steps
    assert not base.accepted and "does not fit" in base.reason and "storage" in base.reason
    assert int8.accepted and result.chosen == 1 and result.device == "tiny-board"
    assert int8.fit is not None and int8.fit["fits"]


def test_evaluate_flags_build_the_same_recipe():
    from workbench.recipe import FineTuneConfig, PruneConfig, QuantizeConfig

    recipe = Recipe(
        (
            PruneConfig(
                method="structured",
                sparsity=0.45,
                exclude=("features.3",),
                max_layer_sparsity=0.6,
            ),
            FineTuneConfig(epochs=2, teacher="digits-cnn"),
            QuantizeConfig(scheme="int8", max_accuracy_drop=0.5),
        )
    )
    args = build_parser().parse_args(["evaluate", "digits-cnn", *evaluate_flags(recipe)])
    prune = cli._prune_config(args, args.prune, args.sparsity)
    rebuilt = Recipe(
        (prune, cli._finetune_config(args, False), cli._quant_config(args, args.quantize))
    )
    assert rebuilt == recipe
    with pytest.raises(WorkbenchError, match="round_to"):
        evaluate_flags(Recipe((PruneConfig(method="structured", round_to=4),)))


@pytest.mark.parametrize("teacher", [None, "digits-cnn"])
def test_evaluate_flags_build_a_distilled_student(teacher):
    from workbench.recipe import DistillConfig, FineTuneConfig, PruneConfig, QuantizeConfig

    recipe = Recipe(
        (
            DistillConfig(width=0.5, teacher=teacher, epochs=7),
            PruneConfig(method="structured", sparsity=0.3),
            FineTuneConfig(epochs=2, teacher=teacher),
            QuantizeConfig(scheme="int8"),
        )
    )
    args = build_parser().parse_args(["evaluate", "digits-cnn", *evaluate_flags(recipe)])
    assert cli._evaluate_recipe(args) == recipe
    mixed = Recipe(
        (DistillConfig(student="digits-cnn"), PruneConfig(), FineTuneConfig(teacher="x"))
    )
    with pytest.raises(WorkbenchError, match="different teachers"):
        evaluate_flags(mixed)


def test_cli_search_prints_the_path_and_the_evaluate_flags(
    searched, session_cache, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(cli, "_settings", lambda args: QUICK)
    out_file = tmp_path / "search.json"
    code = main(
        [
            "search",
            "digits-cnn",
            "--max-accuracy-drop",
            "1",
            "--max-candidates",
            "4",
            "--recovery",
            "none",
            "--methods",
            "unstructured",
            "--out",
            str(out_file),
            "--cache-dir",
            str(session_cache.root),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    flags = " ".join(evaluate_flags(searched.chosen_recipe))
    command = f"workbench evaluate digits-cnn {flags} --hold-out-validation"
    assert f"the same variant: {command}" in out
    assert "rejected" in out and "accepted" in out
    assert "on 252 validation images" in out and "test split" in out
    # digits-cnn is trained without the validation images (Task.fitting()): it scores
    # 100.00% there and 99.07% on the test split, within a point, so no warning.
    assert "(float: 100.00%)" in out
    assert "warning: the float model scores" not in out
    # The printed command builds the very variant the search chose (same cache key).
    from workbench.pipeline import variant_key

    args = build_parser().parse_args(command.split()[1:])
    assert variant_key(cli._load(args), searched.chosen_recipe, QUICK) == searched.chosen_result.key
    assert SearchResult.load(out_file).chosen_recipe == searched.chosen_recipe


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accuracy-floor", "101"], "out of range"),
        (["--accuracy-floor", "0.97"], "looks like a fraction"),
        (["--max-accuracy-drop", "-1"], "out of range"),
        (["--accuracy-floor", "97", "--target", "speed"], "unknown search target 'speed'"),
        (["--accuracy-floor", "97", "--recovery", "hope"], "unknown recovery 'hope'"),
        (["--accuracy-floor", "97", "--target", "device"], "needs a device"),
        (["--accuracy-floor", "97", "--device", "nowhere"], "unknown device"),
        (["--accuracy-floor", "97", "--device", "cortex-m4"], "does not run onnxruntime"),
        (["--accuracy-floor", "97", "--max-candidates", "0"], "max_candidates"),
        (["--accuracy-floor", "97", "--methods", "random"], "unknown pruning method"),
        (["--accuracy-floor", "97", "--max-accuracy-drop", "1"], "not allowed with"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, argv, message):
    out_file = tmp_path / "search.json"
    try:
        code = main(["search", "digits-cnn", *argv, "--out", str(out_file)])
    except SystemExit as exc:  # argparse's own refusals (a bad choice, exclusive flags)
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out_file.exists()


def test_cli_a_model_without_a_labelled_task_exits_2(capsys, tmp_path, session_cache):
    onnx_file = evaluate("digits-cnn", settings=QUICK, cache=session_cache).artifact
    out_file = tmp_path / "search.json"
    code = main(["search", str(onnx_file), "--max-accuracy-drop", "1", "--out", str(out_file)])
    _, err = capsys.readouterr()
    assert code == 2 and "no labelled task" in err and len(err.strip().splitlines()) == 1
    assert not out_file.exists()


def test_search_json_names_the_chosen_result(
    searched, session_cache, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(cli, "_settings", lambda args: QUICK)
    _mislabel_validation(monkeypatch)
    code = main(
        [
            "search",
            "digits-cnn",
            "--accuracy-floor",
            "99.9",
            "--out",
            str(tmp_path / "s.json"),
            "--cache-dir",
            str(session_cache.root),
            "--json",
        ]
    )
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert code == 1  # searched, and nothing keeps the floor: not bad input
    assert data["chosen"] is None and data["evaluate_command"] is None
    assert "no recipe meets the floor" in data["outcome"]


def test_the_search_command_adds_nothing_to_the_cli_start():
    import subprocess
    import sys

    code = (
        "import sys; from workbench.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'pandas', 'workbench.search') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_candidates_never_train_or_calibrate_on_the_validation_images(
    cnn, tmp_path, monkeypatch
):
    from workbench.cache import Cache

    task_type = type(cnn.task)
    raw = task_type.raw
    reads = []

    def recording(self, part):
        reads.append((part, self.excludes_validation))
        return raw(self, part)

    monkeypatch.setattr(task_type, "raw", recording)
    result = search(
        cnn,
        settings=QUICK,
        cache=Cache(tmp_path / "cache"),  # nothing cached: every candidate is built here
        **{**SMALL, "recovery": "finetune", "max_candidates": 2, "finetune_epochs": 1},
    )
    tuned = [s for s in result.steps if s.recipe.get("finetune") is not None]
    assert tuned and result.steps[1].recipe.get("quantize") is not None  # calibrated
    finetune = next(r for r in tuned[0].result.steps if r["kind"] == "finetune")
    assert finetune["samples"] == 1257 - 252
    assert ("train", True) in reads and ("train", False) not in reads
    assert all(s.validation_accuracy is not None for s in result.steps)
    assert result.floor["validation_images"] == 252 and "validation" in result.floor["basis"]


def test_a_variant_built_without_the_validation_images_has_its_own_cache_key(cnn):
    from workbench.pipeline import subject_model, variant_key
    from workbench.recipe import DistillConfig, QuantizeConfig

    fitting = dataclasses.replace(cnn, task=cnn.task.fitting())
    int8 = Recipe((QuantizeConfig(),))
    # The baseline reads no training data: one entry serves both.
    assert variant_key(fitting, Recipe(), QUICK) == variant_key(cnn, Recipe(), QUICK)
    assert variant_key(fitting, int8, QUICK) != variant_key(cnn, int8, QUICK)
    # A student sample trains on the part its teacher's caller allows.
    distil = Recipe((DistillConfig(student="digits-cnn", epochs=1),))
    assert subject_model(fitting, distil).task.excludes_validation
    assert not subject_model(cnn, distil).task.excludes_validation


@pytest.mark.slow
def test_students_are_distilled_from_the_model_then_stacked(searched, cnn, session_cache):
    from workbench.recipe import DistillConfig

    result = search(
        cnn,
        settings=QUICK,
        cache=session_cache,
        **{**SMALL, "recovery": "finetune", "max_candidates": 6, "finetune_epochs": 1},
    )
    distilled = [s for s in result.steps if s.phase == "distill"]
    assert distilled, [s.phase for s in result.steps]
    first = distilled[0].recipe.steps[0]
    assert isinstance(first, DistillConfig) and first.width == 0.5 and first.init == "scratch"
    assert "distilled from it" in distilled[0].why_tried
    assert distilled[0].validation_accuracy is not None and distilled[0].key
    # Tried after the pruning, within its share of the budget.
    assert result.steps.index(distilled[0]) > max(
        i for i, s in enumerate(result.steps) if s.phase == "prune-unstructured"
    )
    assert len(result.steps) <= 6 + 1
    if "student kept" in distilled[-1].reason:
        stacked = next(s for s in result.steps if s.phase == "stack-distill")
        assert stacked.recipe.steps[0] == distilled[-1].recipe.steps[0]
        assert stacked.recipe.get("quantize") is not None
    else:
        assert "student lost" in distilled[-1].reason
    assert result.sensitivity["students"][0] == first.label()
    # None with recovery "none" (no training asked for), nor when switched off.
    assert not [s for s in searched.steps if s.phase.endswith("distill")]
    again = search(
        cnn,
        settings=QUICK,
        cache=session_cache,
        students=False,  # a budget of 3 would keep one candidate for a student
        **{**SMALL, "recovery": "finetune", "max_candidates": 3, "finetune_epochs": 1},
    )
    assert not [s for s in again.steps if s.phase.endswith("distill")]


@pytest.mark.slow  # a dozen trained candidates: ~1.5 min of CPU
def test_a_student_bisects_its_own_sparsity_within_the_students_budget(
    cnn, session_cache, monkeypatch
):
    import workbench.search as search_module
    from workbench.recipe import DistillConfig

    student = DistillConfig(width=0.5, epochs=3)  # one student, briefly distilled
    monkeypatch.setattr(
        search_module, "student_options", lambda model, teacher=None: [(student, "a student")]
    )
    real_accuracy = search_module._artifact_accuracy

    def student_loses_above_half(runtime, result, x, y):
        # A stand-in for a student more fragile than its teacher: pruned above 0.5 it
        # scores nothing, so its bisection must go below the sparsest the model kept.
        prune = result.recipe.get("prune")
        if result.recipe.get("distill") is not None and prune and prune.sparsity > 0.5:
            return 0.0
        return real_accuracy(runtime, result, x, y)

    monkeypatch.setattr(search_module, "_artifact_accuracy", student_loses_above_half)
    # A third of 15 is reserved for the students: the student kept, int8 stacked on it,
    # then at least two candidates of its bisection and int8 stacked on the one it keeps.
    budget = 15
    result = search(
        cnn,
        settings=QUICK,
        cache=session_cache,
        **{
            **SMALL,
            "max_accuracy_drop": 20.0,  # a floor the briefly distilled student keeps
            "recovery": "finetune",
            "max_candidates": budget,
            "finetune_epochs": 1,
        },
    )
    phases = [s.phase for s in result.steps]
    assert len(result.steps) - 1 <= budget, phases
    distilled = next(s for s in result.steps if s.phase == "distill")
    assert "student kept" in distilled.reason, distilled.reason
    model_kept = max(
        s.recipe.get("prune").sparsity
        for s in result.steps
        if s.phase == "prune-unstructured" and "bisection: kept" in s.reason
    )
    tried = [s for s in result.steps if s.phase == "student-unstructured"]
    assert len(tried) > 1, phases
    # Within the candidates left for the students after the model's own bisection.
    students = [s for s in result.steps if s.phase.startswith(("student-", "stack-student-"))]
    assert 0 < len(students) <= result.sensitivity["student_pruning_budget"]
    assert all(s.recipe.steps[0] == student for s in students)
    # It starts where the model's bisection ended and bisects from there, each with why.
    assert tried[0].recipe.get("prune").sparsity == model_kept
    assert tried[0].why_tried.startswith("start of the student's bisection")
    assert all(s.why_tried.startswith("the student's bisection between") for s in tried[1:])
    assert "bisection: lost" in tried[0].reason
    assert all("bisection: kept" in s.reason or "bisection: lost" in s.reason for s in tried)
    kept = [s for s in tried if "bisection: kept" in s.reason]
    assert kept and all(s.recipe.get("prune").sparsity <= 0.5 for s in kept)
    assert all(s.validation_accuracy >= result.floor["accuracy"] for s in kept)
    sparsest = max(s.recipe.get("prune").sparsity for s in kept)
    assert result.sensitivity["student_sparsest"] == {"unstructured": sparsest}
    stacked = [s for s in result.steps if s.phase == "stack-student-unstructured"]
    assert stacked[0].recipe.get("prune").sparsity == sparsest
    assert stacked[0].recipe.get("quantize") is not None


def test_the_students_of_a_model(cnn):
    from workbench.models import load_model
    from workbench.search import student_options

    widths = [c.width for c, _ in student_options(cnn)]
    assert widths == [0.5, 0.25]  # digits-cnn is the smallest sample: no smaller one
    resnet = [c for c, _ in student_options(load_model("digits-resnet18"), "digits-resnet18")]
    assert [c.student for c in resnet] == ["digits-mobilenetv2", "digits-cnn"]
    assert all(c.init == "scratch" and c.teacher == "digits-resnet18" for c in resnet)


def test_the_report_of_a_search_file_draws_its_path_and_lists_the_reasons(searched, tmp_path):
    import re

    from tests.workbench.test_report import embedded_specs
    from workbench.search import validation_caveat

    search_file = searched.save(tmp_path / "search.json")
    code = main(["report", str(search_file), "-o", str(tmp_path / "report.html")])
    assert code == 0
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)  # offline, as the others
    specs = embedded_specs(text)
    assert '<div id="search-path"></div>' in text
    path = next(
        v
        for v in specs["search-path"]["datasets"].values()
        if v and "verdict" in v[0] and "step" in v[0]
    )
    assert [row["step"] for row in path] == [s.index for s in searched.steps]
    section = text.split("<h2>Search path</h2>", 1)[1].split("<h2>", 1)[0]
    for step in searched.steps:
        assert f'data-step="{step.index}"' in section
        assert html.escape(step.reason) in section and html.escape(step.why_tried) in section
    assert "validation images" in section and html.escape(searched.outcome) in section
    # digits-cnn never saw the validation images: its report has no lenient-verdict warning,
    assert "caveat" not in searched.floor and "Warning:" not in section
    # and a model that did learn them gets one.
    lenient_floor = {**searched.floor, "caveat": validation_caveat(1.0, 0.9852)}
    dataclasses.replace(searched, floor=lenient_floor).save(tmp_path / "lenient.json")
    code = main(["report", str(tmp_path / "lenient.json"), "-o", str(tmp_path / "lenient.html")])
    assert code == 0
    lenient = (tmp_path / "lenient.html").read_text(encoding="utf-8")
    section = lenient.split("<h2>Search path</h2>", 1)[1].split("<h2>", 1)[0]
    assert "Warning: the float model scores 100.00%" in section and "Task.fitting()" in section
    # A study without a search has no such section.
    Study(searched.model, searched.results, searched.model_info).save(tmp_path / "plain.json")
    assert main(["report", str(tmp_path / "plain.json"), "-o", str(tmp_path / "p.html")]) == 0
    assert "Search path" not in (tmp_path / "p.html").read_text(encoding="utf-8")


def test_cli_hold_out_validation_needs_a_labelled_task(capsys, session_cache):
    onnx_file = evaluate("digits-cnn", settings=QUICK, cache=session_cache).artifact
    code = main(["evaluate", str(onnx_file), "--hold-out-validation", "--no-cache"])
    _, err = capsys.readouterr()
    assert code == 2 and "no labelled task" in err and len(err.strip().splitlines()) == 1


def test_only_a_model_that_learned_the_validation_images_gets_a_caveat(searched):
    from workbench.search import validation_caveat

    # The sample is trained without them (Task.fitting()): 100% there and 99.07% on the
    # test split are within a point, so the search does not call its verdicts lenient.
    baseline = searched.steps[0]
    assert baseline.validation_accuracy == 1.0
    assert baseline.validation_accuracy - baseline.figures["accuracy"] <= 0.01
    assert "caveat" not in searched.floor
    # Trained on them (the samples before, 98.52% on the test split): warned.
    assert "most likely trained on them" in validation_caveat(1.0, 0.9852)
    assert validation_caveat(0.99, 0.985) == ""  # within a point: no warning
    assert validation_caveat(1.0, None) == ""  # nothing to compare with
    assert "1.5 points apart" in validation_caveat(1.0, 0.9852)
    # A model whose record says it trained without them is not warned about chance gaps.
    assert validation_caveat(1.0, 0.9852, held_out=True) == ""


def test_the_samples_record_that_they_trained_without_the_validation_images():
    from workbench.models import load_model
    from workbench.search import holds_validation_out

    # digits-cnn-keras: 99.60% on the validation images, 98.52% on the test split, 1.1
    # points apart by chance; its record says it never saw them.
    for name in ("digits-cnn", "digits-cnn-keras"):
        assert holds_validation_out(load_model(name)), name
    model = load_model("digits-cnn")
    meta = {**model.meta, "training": {**model.meta["training"], "train_images": 1257}}
    assert not holds_validation_out(dataclasses.replace(model, meta=meta))
