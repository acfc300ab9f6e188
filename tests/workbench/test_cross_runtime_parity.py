"""Cross-runtime parity as part of the data model: a sweep over two runtimes records, on
each variant, how its file agrees with the same recipe's file in the other runtime; the
records are cached with the variants, and shown in the study JSON/CSV, the card, the
report and the CLI.

The second runtime is ONNX Runtime registered under another name (the `fake_runtimes`
fixture): the same recipe builds the same file, so the parity is exact, and the tests
hold whichever runtimes a branch registers. The real pair (ONNX Runtime and LiteRT) is
tested at the end (slow).
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import QUICK
from workbench.cache import Cache
from workbench.recipe import QuantizeConfig, Recipe
from workbench.results import RuntimeParity
from workbench.study import PARITY_COLUMNS, Study, sweep

FAKE_RUNTIME = "onnxruntime-twin"  # as tests/conftest.py's fake_runtimes names it
DYNAMIC = Recipe.of(None, QuantizeConfig(scheme="dynamic"))


@pytest.fixture(scope="module")
def twin():
    """ONNX Runtime under another name, registered for this module's tests."""
    from workbench import runtimes
    from workbench.runtimes import get_runtime, register_runtime

    register_runtime(
        type("OnnxRuntimeTwin", (type(get_runtime("onnxruntime")),), {"name": FAKE_RUNTIME})
    )
    yield FAKE_RUNTIME
    runtimes._REGISTRY.pop(FAKE_RUNTIME, None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    return Cache(tmp_path_factory.mktemp("parity-cache"))


@pytest.fixture(scope="module")
def twin_study(cnn, cache, twin) -> Study:
    return sweep(
        cnn,
        [Recipe(), DYNAMIC],
        settings=QUICK,
        cache=cache,
        progress=False,
        runtimes=["onnxruntime", FAKE_RUNTIME],
    )


def test_a_two_runtime_sweep_records_parity_on_every_variant(twin_study, cache):
    assert len(twin_study.results) == 4
    for r in twin_study.results:
        other = FAKE_RUNTIME if r.runtime == "onnxruntime" else "onnxruntime"
        (p,) = r.metrics.cross_runtime
        partner = next(x for x in twin_study.results if x.recipe == r.recipe and x.runtime == other)
        assert (p.runtime, p.key, p.artifact) == (other, partner.key, str(partner.artifact))
        # Measured on the two real files, on the test split: the same ONNX file twice.
        assert p.samples == 540 and "test images" in p.basis
        assert p.top1_agreement == 1.0 and p.disagreements == 0 and p.max_abs_diff == 0.0
        assert p.text() == f"matches {other}: 100% top-1, max |\u0394| 0"
        # Cached with the variant: the entry holds the same record.
        assert cache.get(r.key).metrics.cross_runtime == (p,)


def test_a_rerun_reads_the_records_from_the_cache(twin_study, cnn, cache, monkeypatch):
    from workbench.runtimes import parity

    def refuse(*args, **kwargs):
        raise AssertionError("parity measured again although both entries hold it")

    monkeypatch.setattr(parity, "measure_parity", refuse)
    again = sweep(
        cnn,
        [Recipe(), DYNAMIC],
        settings=QUICK,
        cache=cache,
        progress=False,
        runtimes=["onnxruntime", FAKE_RUNTIME],
    )
    assert [r.metrics.cross_runtime for r in again.results] == [
        r.metrics.cross_runtime for r in twin_study.results
    ]


def test_a_variant_measured_in_one_runtime_leaves_the_parity_columns_empty(twin_study):
    import dataclasses

    alone = [
        dataclasses.replace(r, metrics=dataclasses.replace(r.metrics, cross_runtime=()))
        for r in twin_study.results
        if r.runtime == "onnxruntime"
    ]
    df = Study("digits-cnn", alone).to_dataframe()
    assert all(df[c].isna().all() for c in PARITY_COLUMNS)
    assert not twin_study.to_dataframe()[list(PARITY_COLUMNS)].isna().any().any()


def test_the_study_json_and_csv_carry_parity(twin_study, tmp_path):
    path = twin_study.save(tmp_path / "study.json")
    data = json.loads(path.read_text())
    record = data["results"][0]["metrics"]["cross_runtime"][0]
    assert record["runtime"] == FAKE_RUNTIME and record["top1_agreement"] == 1.0
    loaded = Study.load(path)
    assert [r.metrics.cross_runtime for r in loaded.results] == [
        r.metrics.cross_runtime for r in twin_study.results
    ]
    rows = list(csv.DictReader(twin_study.to_csv(tmp_path / "study.csv").open()))
    assert {r["cross_runtime"] for r in rows} == {FAKE_RUNTIME, "onnxruntime"}
    assert {float(r["cross_runtime_top1_agreement"]) for r in rows} == {1.0}
    assert {float(r["cross_runtime_max_abs_diff"]) for r in rows} == {0.0}


def test_the_card_and_the_report_show_parity(twin_study):
    from widgets.metrics_card import card_html
    from workbench.report import report_html

    result = next(r for r in twin_study.results if r.runtime == FAKE_RUNTIME)
    card = card_html(result, twin_study.baseline_in(FAKE_RUNTIME))
    assert "matches onnxruntime: 100% top-1, max |\u0394| 0" in card
    page = report_html(twin_study)
    assert f"matches {FAKE_RUNTIME}: 100% top-1" in page
    assert "matches onnxruntime: 100% top-1" in page


def test_a_runtime_that_added_a_step_is_not_compared_as_the_same_variant():
    from workbench.runtimes.parity import _comparable

    a = type("R", (), {"steps": ()})()
    b = type("R", (), {"steps": ({"kind": "quantize", "required_by": "tflite-micro"},)})()
    assert _comparable([a, a]) and not _comparable([a, b])


def test_a_record_round_trips():
    p = RuntimeParity("litert", "k" * 64, "/x/model.tflite", 540, "540 digits test images",
                      0.998, 1, 0.29, 0.01)  # fmt: skip
    assert RuntimeParity.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert p.text() == "matches litert: 99.80% top-1, max |\u0394| 0.29"


def test_the_app_records_parity_after_a_runtime_switch(cnn, twin, tmp_path):
    from widgets import Workbench

    # A cache of its own: both variants are measured by the app, not found.
    app = Workbench("digits-cnn", cache=Cache(tmp_path / "cache"), settings=QUICK)
    assert app.wait_idle(120) and app.error == ""
    app.quantization.scheme_w.value = "dynamic"
    assert app.wait_idle(120) and app.error == ""
    app.runtime_panel.runtime_w.value = FAKE_RUNTIME
    assert app.wait_idle(120) and app.error == ""
    assert app.current.runtime == FAKE_RUNTIME and app.current.recipe == DYNAMIC
    (p,) = app.current.metrics.cross_runtime
    assert p.runtime == "onnxruntime" and p.top1_agreement == 1.0
    assert "matches onnxruntime: 100% top-1" in app.card.value
    in_ort = next(
        r for r in app.study.results if r.recipe == DYNAMIC and r.runtime == "onnxruntime"
    )
    assert in_ort.metrics.parity_with(FAKE_RUNTIME).key == app.current.key


def test_the_sweep_panel_gives_the_shared_study_the_parity_figures(cnn, twin, tmp_path):
    from widgets.sweep_panel import SweepPanel

    study = Study(cnn.name)
    # A cache of its own: the figures come from this sweep, not from earlier entries.
    panel = SweepPanel(study, cnn, cache=Cache(tmp_path / "cache"), settings=QUICK)
    panel.schemes, panel.sparsities = ("none",), ()
    panel.runtimes = ("onnxruntime", FAKE_RUNTIME)
    assert panel.run() is True and panel.wait(120) and panel.error == ""
    assert [(r.recipe, r.runtime) for r in study.results] == [
        (Recipe(), "onnxruntime"),
        (Recipe(), FAKE_RUNTIME),
    ]
    assert [r.metrics.cross_runtime[0].runtime for r in study.results] == [
        FAKE_RUNTIME,
        "onnxruntime",
    ]


def test_a_hand_edited_parity_figure_is_refused_on_load(twin_study, tmp_path):
    from workbench.errors import WorkbenchError

    path = twin_study.save(tmp_path / "study.json")
    data = json.loads(path.read_text())
    data["results"][1]["metrics"]["cross_runtime"][0]["max_abs_diff"] = "tiny"
    path.write_text(json.dumps(data))
    with pytest.raises(WorkbenchError, match=r"cross_runtime\[onnxruntime\]\.max_abs_diff"):
        Study.load(path)
