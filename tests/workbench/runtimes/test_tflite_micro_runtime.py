"""The tflite-micro runtime behind the seam: digits-cnn evaluated in TensorFlow Lite Micro
(int8 given by the runtime, accuracy in TFLM, exact arena, no latency), its fit on a
Cortex-M4, the C-array export, and every view of a variant that has no latency."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.pipeline import MeasureSettings, check_applicable, evaluate
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.results import NO_LATENCY, Result
from workbench.runtimes import get_runtime, list_runtimes

TFLM = "tflite-micro"


def test_tflite_micro_is_registered_with_its_artifact():
    assert TFLM in list_runtimes()
    rt = get_runtime(TFLM)
    assert (rt.artifact_format, rt.artifact_file) == ("tflite", "model.tflite")
    assert rt.measures_latency is False
    v = rt.versions()
    assert v["tflite-micro"] != "absent" and v["tensorflow"] != "absent"


def test_a_recipe_without_int8_is_given_it_and_other_schemes_are_refused(cnn):
    rt = get_runtime(TFLM)
    (step,) = rt.required_steps(())
    assert isinstance(step, QuantizeConfig) and step.scheme == "int8"
    own = QuantizeConfig(scheme="int8", calibration_samples=64)
    assert rt.required_steps((own,)) == (own,)
    for bad, what in [
        (QuantizeConfig(scheme="fp16"), "'fp16'"),
        (QuantizeConfig(scheme="dynamic"), "'dynamic'"),
        (QuantizeConfig(scheme="int8", keep_float=("Gemm",)), "float"),
    ]:
        with pytest.raises(WorkbenchError, match="TensorFlow Lite Micro") as e:
            check_applicable(cnn, Recipe((bad,)), TFLM)
        assert what in e.value.problem and "int8" in e.value.fix
    # ONNX Runtime is unchanged: nothing is added.
    assert get_runtime("onnxruntime").required_steps(()) == ()


def test_the_cli_refuses_fp16_for_tflite_micro_with_one_line(tmp_path, capsys):
    from workbench.cli import main

    code = main(
        [
            "evaluate",
            "digits-cnn",
            "--runtime",
            TFLM,
            "--quantize",
            "fp16",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "full-integer int8" in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / "cache").rglob("model.tflite"))


# --- measured in TFLM (slow: TensorFlow's converter, and every TFLM call is a process) ---


@pytest.fixture(scope="module")
def tflm_settings() -> MeasureSettings:
    from tests.conftest import QUICK

    return MeasureSettings(**{**QUICK.to_dict(), "runtime": TFLM})


@pytest.fixture(scope="module")
def tflm_baseline(cnn, session_cache, tflm_settings) -> Result:
    return evaluate(cnn, Recipe(), settings=tflm_settings, cache=session_cache)


@pytest.fixture(scope="module")
def onnx_baseline(cnn, session_cache) -> Result:
    from tests.conftest import QUICK

    return evaluate(cnn, Recipe(), settings=QUICK, cache=session_cache)


@pytest.mark.slow
def test_digits_cnn_runs_as_full_int8_in_tflm_with_its_exact_arena(
    tflm_baseline, onnx_baseline, cnn
):
    from workbench.data.digits import DIGITS
    from workbench.runtimes import tflite_micro as tflm
    from workbench.runtimes.litert import io_signature

    r, m = tflm_baseline, tflm_baseline.metrics
    assert r.runtime == TFLM and r.artifact.name == "model.tflite"
    # The int8 step the runtime added shows in the steps, and the file is int8 in and out.
    (step,) = r.steps
    assert step["kind"] == "quantize" and step["scheme"] == "int8" and step["required_by"] == TFLM
    (inp,), (out,) = io_signature(r.artifact)
    assert inp.dtype == "int8" and out.dtype == "int8" and inp.shape == (1, 1, 8, 8)
    tflm.check_integer_model(r.artifact)
    # Accuracy is TFLM's: the same figure from the runner, independently of the pipeline.
    x, y = DIGITS.arrays("test", cnn.preprocessing)
    preds = tflm.predict(r.artifact, x).argmax(1)
    assert m.accuracy == pytest.approx((preds == y).mean())
    # Full int8 loses at most 1 point against float ONNX Runtime on digits-cnn.
    assert m.accuracy >= onnx_baseline.metrics.accuracy - 0.01
    assert m.parity_max_abs_diff is not None and m.parity_max_abs_diff < 1e-3
    # No latency, no speed comparison, no noise check: nothing is timed.
    assert m.latency is None and m.comparisons == () and m.noise is None and not r.noisy
    # Memory is the arena the interpreter found, flash the model's bytes.
    a = m.arena
    assert a["verified"] and a["flash_bytes"] == m.size_bytes == r.artifact.stat().st_size
    assert a["activations_bytes"] + a["persistent_bytes"] == a["recorded_bytes"]
    assert a["activations_bytes"] > 0 and a["persistent_bytes"] > 0
    assert m.memory.peak_bytes == a["firmware_bytes"] >= a["arena_bytes"]
    tflm.predict(r.artifact, x[:1], arena_size=a["arena_bytes"])
    with pytest.raises(WorkbenchError, match="could not run"):
        tflm.predict(r.artifact, x[:1], arena_size=a["arena_bytes"] - 1024)
    assert m.environment["runtime"] == TFLM
    assert "tflite-micro" in m.environment["runtime_versions"]


@pytest.mark.slow
def test_a_cached_tflm_result_reads_back_with_no_latency(tflm_baseline, session_cache):
    again = session_cache.get(tflm_baseline.key)
    assert again is not None and again.metrics == tflm_baseline.metrics
    assert Result.from_dict(json.loads(json.dumps(tflm_baseline.to_dict()))).metrics.latency is None


@pytest.mark.slow
def test_fit_on_a_cortex_m4_uses_the_arena_and_the_flash(tflm_baseline, onnx_baseline):
    from workbench.devices import fit
    from workbench.devices.registry import get_device

    m4 = get_device("cortex-m4")
    f = fit(tflm_baseline, m4)
    a = tflm_baseline.metrics.arena
    assert f.fits and f.memory_bytes == a["firmware_bytes"]
    assert f.budget_bytes == int(256 * 1024 * m4.memory_budget_fraction)
    assert f.file_bytes == a["flash_bytes"] and f.storage_bytes == 1024 * 1024
    assert f.decided_by in ("memory", "storage") and f.runtime_note == ""
    assert "tensor arena" in f.memory_basis and "activations" in f.memory_basis
    # The tighter share decides: here the model's flash share is larger than its SRAM share.
    flash_share = f.file_bytes / f.storage_bytes
    sram_share = f.memory_bytes / f.budget_bytes
    assert f.decided_by == ("storage" if flash_share > sram_share else "memory")
    # A device too small for the arena: memory decides, by the arena.
    tiny = get_device("cortex-m4").__class__(
        **{**m4.to_dict(), "name": "tiny-m0", "ram_bytes": a["firmware_bytes"]}
    )
    g = fit(tflm_baseline, tiny)
    assert not g.fits and g.decided_by == "memory"
    # ONNX Runtime's figures still do not fit a microcontroller: the runtime decides.
    assert fit(onnx_baseline, m4).decided_by == "runtime"


@pytest.mark.slow
def test_check_on_a_cortex_m4_passes_with_the_arena(tflm_baseline, session_cache, capsys):
    from workbench.cli import main

    code = main(
        [
            "check",
            "digits-cnn",
            "--runtime",
            TFLM,
            "--device",
            "cortex-m4",
            "--max-latency-p99",
            "1000",
            "--accept-estimates",
            "--json",
            "--cache-dir",
            str(session_cache.root),
        ]
    )
    report = json.loads(capsys.readouterr().out)
    mem = next(c for c in report["checks"] if c["threshold"] == "memory")
    lat = next(c for c in report["checks"] if c["threshold"] == "latency_p99")
    assert code == 0 and mem["status"] == "pass"
    assert mem["value"] == tflm_baseline.metrics.arena["firmware_bytes"]
    assert "tensor arena" in mem["basis"]
    # The latency on the device is the labelled roofline estimate, never "measured".
    assert "roofline lower bound" in lat["basis"] and "estimate" in lat["figure"]


@pytest.mark.slow
def test_the_export_holds_the_c_array_byte_identical_with_the_arena(
    tflm_baseline, cnn, session_cache, tflm_settings, tmp_path
):
    from workbench.export import export_variant
    from workbench.runtimes.tflite_micro import read_c_array

    manifest_path = export_variant(
        tflm_baseline, cnn, tmp_path / "out", settings=tflm_settings, cache=session_cache
    )
    out = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "model.tflite", "model_tflite.cc", "model_tflite.h"]
    data = (out / "model.tflite").read_bytes()
    assert data == tflm_baseline.artifact.read_bytes()
    source = (out / "model_tflite.cc").read_text()
    assert read_c_array(source) == data
    assert re.search(r"alignas\(16\) const unsigned char model_tflite\[\]", source)
    header = (out / "model_tflite.h").read_text()
    arena = tflm_baseline.metrics.arena
    assert f"model_tflite_len = {len(data)};" in header
    assert f"model_tflite_arena_size = {arena['firmware_bytes']};" in header
    assert manifest["runtime"] == TFLM and manifest["artifact_format"] == "tflite"
    assert manifest["tensor_arena"] == arena
    c_files = {e["file"]: e for e in manifest["other_artifacts"]}
    assert c_files["model_tflite.cc"]["arena_size_bytes"] == arena["firmware_bytes"]
    assert c_files["model_tflite.cc"]["length_bytes"] == len(data)
    (inp,) = manifest["signature"]["inputs"]
    assert inp["dtype"] == "int8" and inp["scale"] > 0


@pytest.mark.slow
def test_every_view_copes_with_a_variant_without_latency(tflm_baseline, cnn):
    from widgets.metrics_card import card_html
    from workbench.charts import tradeoff_chart
    from workbench.cli import _text, result_json
    from workbench.report import report_html
    from workbench.study import Study, result_row

    row = result_row(tflm_baseline)
    assert row["latency_p50_ms"] is None and row["threads"] is None
    assert row["quant_scheme"] == "int8" and row["runtime"] == TFLM
    assert row["peak_memory_bytes"] == tflm_baseline.metrics.arena["firmware_bytes"]
    study = Study(cnn.name, [tflm_baseline])
    # Nothing was timed: the frontier is taken without latency, so it is not empty.
    assert "latency_p50_ms" not in study.objectives_used()
    assert study.frontier() == [tflm_baseline]
    assert np.isnan(study.to_dataframe()["latency_p50_ms"].astype(float)).all()
    assert NO_LATENCY in _text(tflm_baseline) and "tensor arena" in _text(tflm_baseline)
    j = result_json(tflm_baseline)
    assert j["latency_ms"] is None and j["latency_note"] == NO_LATENCY
    assert j["tensor_arena"] == tflm_baseline.metrics.arena
    card = card_html(tflm_baseline, tflm_baseline)
    assert NO_LATENCY.split(":")[0] in card and "tensor arena" in card
    chart = tradeoff_chart(study.to_dataframe(), x="latency_p50_ms").to_dict()
    assert "not shown" in json.dumps(chart["title"])
    html = report_html(study)
    assert "no latency measured" in html


@pytest.mark.slow
def test_a_pruned_variant_in_tflm_needs_no_float_reference(cnn, session_cache, tflm_settings):
    r = evaluate(
        cnn,
        Recipe((PruneConfig(sparsity=0.5),)),
        settings=tflm_settings,
        cache=session_cache,
    )
    assert r.metrics.latency is None and r.metrics.nonzero_params < r.metrics.params
    assert [s["kind"] for s in r.steps] == ["prune", "quantize"]
    assert r.metrics.arena["verified"] and r.metrics.agreement is not None


def test_timing_settings_do_not_split_the_cache_of_a_runtime_that_times_nothing(cnn):
    from workbench.pipeline import variant_key

    a = MeasureSettings(runtime=TFLM)
    b = MeasureSettings(runtime=TFLM, min_runs=7, warmup=1, rounds=2, profile=False)
    assert variant_key(cnn, Recipe(), a) == variant_key(cnn, Recipe(), b)
    # ONNX Runtime's latency depends on them: its keys differ.
    assert variant_key(cnn, Recipe(), MeasureSettings()) != variant_key(
        cnn, Recipe(), MeasureSettings(min_runs=7)
    )


@pytest.mark.slow
def test_a_float_tflite_file_is_refused_and_an_int8_one_is_measured_as_it_is(
    tflite_files, session_cache, tflm_settings, tmp_path
):
    from workbench.models import load_model
    from workbench.runtimes import tflite_micro as tflm

    cache_entries = set(session_cache.root.rglob("result.json"))
    with pytest.raises(WorkbenchError, match="floating point") as e:
        evaluate(load_model(tflite_files["float"]), settings=tflm_settings, cache=session_cache)
    assert "full-integer int8" in e.value.fix
    assert set(session_cache.root.rglob("result.json")) == cache_entries  # nothing cached
    r = evaluate(
        load_model(tflite_files["int8"], task="digits"), settings=tflm_settings, cache=session_cache
    )
    assert r.artifact.read_bytes() == tflite_files["int8"].read_bytes()
    assert r.metrics.arena == tflm.tensor_arena(tflite_files["int8"]).to_dict()
    assert r.metrics.latency is None and r.steps[0]["required_by"] == TFLM
