"""Importing device-runner results: checked, recorded per artifact and device, then used."""

from __future__ import annotations

import json

import pytest

import workbench.devices.runner as runner
from workbench.cache import Cache
from workbench.cli import main
from workbench.devices import device_latency, fit
from workbench.devices.gate import GateThresholds, run_gate
from workbench.devices.imported import find_measurement, import_results
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def results_json(tmp_path_factory, cnn_baseline):
    """Results of the baseline artifact, written by the runner as a device would."""
    out = tmp_path_factory.mktemp("device") / "results.json"
    code = runner.main(
        [
            str(cnn_baseline.artifact),
            "-o",
            str(out),
            "--device-name",
            "raspberry-pi-4",
            "--min-runs",
            "20",
            "--min-seconds",
            "0.02",
            "--warmup",
            "2",
        ]
    )
    assert code == 0
    return out


def _recorded(cache: Cache) -> list:
    return list((cache.root / "device-results").rglob("*.json"))


def test_imported_figures_replace_the_estimate_labelled_with_the_device(
    tmp_path, results_json, cnn_baseline
):
    cache = Cache(tmp_path / "cache")
    data = json.loads(results_json.read_text())
    m = import_results(results_json, artifact=cnn_baseline.artifact, cache=cache)
    assert m.device == "raspberry-pi-4" and m.latency.p99 == data["latency_ms"]["p99"]
    assert find_measurement(cnn_baseline.artifact, "raspberry-pi-4", cache) == m

    lat = device_latency(cnn_baseline, "raspberry-pi-4", cache=cache)
    assert lat.kind == "measured" and lat.p99_ms == data["latency_ms"]["p99"]
    assert "measured on raspberry-pi-4" in lat.label() and "workbench-runner" in lat.method
    f = fit(cnn_baseline, "raspberry-pi-4", cache=cache)
    assert f.memory_bytes == data["memory"]["peak_bytes"] and "raspberry-pi-4" in f.memory_basis
    # Without the cache (or on another device) it is still the estimate.
    assert device_latency(cnn_baseline, "raspberry-pi-4").kind == "estimate"
    assert device_latency(cnn_baseline, "raspberry-pi-zero-2w", cache=cache).kind == "estimate"

    # The gate now decides the Pi's latency on the device's own p99: no "unverified".
    report = run_gate(
        [cnn_baseline], ["raspberry-pi-4"], GateThresholds(max_latency_p99_ms=1e4), cache=cache
    )
    (check,) = [c for c in report.checks if c.threshold == "latency_p99"]
    assert check.status == "pass" and "measured on raspberry-pi-4" in check.figure


def test_results_match_a_cached_variant_by_sha256(tmp_path, results_json, session_cache):
    # The baseline is in the session cache. Recorded for a device no other test reads
    # from that cache, so the record changes no other test's figures.
    m = import_results(results_json, device="raspberry-pi-zero-2w", cache=session_cache)
    assert m.device == "raspberry-pi-zero-2w" and m.runner_device_name == "raspberry-pi-4"
    with pytest.raises(WorkbenchError, match="no variant in the cache"):
        import_results(results_json, cache=Cache(tmp_path / "empty"))


def test_results_of_another_model_are_refused_and_nothing_recorded(
    tmp_path, results_json, cnn_int8
):
    cache = Cache(tmp_path / "cache")
    with pytest.raises(WorkbenchError, match="another model"):
        import_results(results_json, artifact=cnn_int8.artifact, cache=cache)
    assert _recorded(cache) == []


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda text: text[: len(text) // 2], "not JSON"),
        (
            lambda text: text.replace('"edge-workbench-runner-results"', '"something-else"'),
            "format",
        ),
        (
            lambda text: json.dumps(
                {**json.loads(text), "latency_ms": {**json.loads(text)["latency_ms"], "p99": -1}}
            ),
            "p99",
        ),
        (
            lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "memory"}),
            "memory",
        ),
        (lambda text: json.dumps({**json.loads(text), "artifact": {"sha256": "abc"}}), "sha256"),
    ],
)
def test_a_damaged_results_file_is_one_clear_error(
    tmp_path, results_json, cnn_baseline, damage, words
):
    bad = tmp_path / "results.json"
    bad.write_text(damage(results_json.read_text()))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(WorkbenchError, match=words):
        import_results(bad, artifact=cnn_baseline.artifact, cache=cache)
    assert _recorded(cache) == []


def test_the_device_must_be_known_and_not_host(tmp_path, results_json, cnn_baseline):
    cache = Cache(tmp_path / "cache")
    with pytest.raises(WorkbenchError) as e:
        import_results(
            results_json, device="pi-in-the-lab", artifact=cnn_baseline.artifact, cache=cache
        )
    assert "pi-in-the-lab" in e.value.problem and "raspberry-pi-4" in e.value.fix
    with pytest.raises(WorkbenchError, match="host"):
        import_results(results_json, device="host", artifact=cnn_baseline.artifact, cache=cache)
    assert _recorded(cache) == []


def test_cli_import_records_and_bad_input_exits_2(
    capsys, tmp_path, results_json, cnn_baseline, cnn_int8
):
    cache = tmp_path / "cache"
    code = main(
        [
            "import",
            str(results_json),
            "--artifact",
            str(cnn_baseline.artifact),
            "--cache-dir",
            str(cache),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "recorded for raspberry-pi-4" in out
    code = main(
        [
            "import",
            str(results_json),
            "--artifact",
            str(cnn_int8.artifact),
            "--cache-dir",
            str(tmp_path / "c2"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "another model" in err
    assert not (tmp_path / "c2").exists()
