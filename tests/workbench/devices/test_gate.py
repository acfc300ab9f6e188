"""The CI gate: thresholds per device, the matrix, JSON, JUnit XML, the exit status, bad input."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest

from workbench.cli import main
from workbench.devices.gate import GateThresholds, load_gate_config, run_gate
from workbench.errors import WorkbenchError

FAST = ["--no-profile"]


def _with_accuracy(result, accuracy):
    return dataclasses.replace(
        result, metrics=dataclasses.replace(result.metrics, accuracy=accuracy)
    )


def test_everything_within_the_thresholds_passes_on_host(cnn_baseline, cnn_int8):
    t = GateThresholds(max_latency_p99_ms=1e4, max_memory_fraction=0.7, max_accuracy_drop=100)
    report = run_gate([cnn_baseline, cnn_int8], ["host"], t)
    assert report.passed and report.exit_code == 0
    assert len(report.checks) == 2 * 1 * 3
    assert report.variants == ("baseline", cnn_int8.recipe.name)
    assert "PASSED" in report.table() and "(measured)" in report.table()


def test_a_missed_latency_on_host_fails_with_the_measured_figure(cnn_baseline):
    report = run_gate([cnn_baseline], ["host"], GateThresholds(max_latency_p99_ms=1e-6))
    (lat,) = [c for c in report.checks if c.threshold == "latency_p99"]
    assert lat.status == "fail" and lat.value == cnn_baseline.metrics.latency.p99
    assert "measured" in lat.figure and report.exit_code == 1
    assert "FAIL latency_p99" in report.cell("baseline", "host")


def test_memory_over_the_fraction_fails(cnn_baseline):
    report = run_gate([cnn_baseline], ["raspberry-pi-4"], GateThresholds(max_memory_fraction=1e-6))
    (mem,) = report.checks
    assert mem.status == "fail" and mem.value == cnn_baseline.metrics.memory.peak_bytes
    assert "budget" in mem.figure


def test_accuracy_drop_is_measured_from_the_baseline(cnn_baseline):
    worse = _with_accuracy(cnn_baseline, cnn_baseline.metrics.accuracy - 0.05)
    report = run_gate([cnn_baseline, worse], ["host"], GateThresholds(max_accuracy_drop=1.0))
    drops = [c for c in report.checks if c.threshold == "accuracy_drop"]
    assert [c.status for c in drops] == ["pass", "fail"]
    assert drops[1].value == pytest.approx(5.0)


def test_a_latency_estimate_is_never_taken_as_a_pass_unless_accepted(cnn_baseline):
    # The Pi's lower bound for digits-cnn is far below 1 s: it cannot prove the p99.
    t = GateThresholds(max_latency_p99_ms=1000)
    (lat,) = [
        c
        for c in run_gate([cnn_baseline], ["raspberry-pi-4"], t).checks
        if c.threshold == "latency_p99"
    ]
    assert lat.status == "unverified" and "estimate" in lat.figure and "roofline" in lat.basis
    accepted = GateThresholds(max_latency_p99_ms=1000, accept_estimates=True)
    report = run_gate([cnn_baseline], ["raspberry-pi-4"], accepted)
    assert report.passed
    # A bound above the threshold is a proven miss, estimate or not.
    tight = GateThresholds(max_latency_p99_ms=1e-6, accept_estimates=True)
    (lat,) = [
        c
        for c in run_gate([cnn_baseline], ["raspberry-pi-4"], tight).checks
        if c.threshold == "latency_p99"
    ]
    assert lat.status == "fail" and "lower bound" in lat.figure


def test_a_microcontroller_fails_because_onnx_runtime_does_not_run_there(cnn_int8):
    report = run_gate([cnn_int8], ["cortex-m4"], GateThresholds())
    (mem,) = report.checks
    assert mem.status == "fail" and "ONNX Runtime does not run on a microcontroller" in mem.figure


def test_junit_has_one_case_per_threshold_and_device_with_the_figure(cnn_baseline, cnn_int8):
    t = GateThresholds(max_latency_p99_ms=1e-6, max_accuracy_drop=100)
    report = run_gate([cnn_baseline, cnn_int8], ["host", "raspberry-pi-4"], t)
    root = ET.fromstring(report.junit_xml())
    cases = root.findall(".//testcase")
    assert len(cases) == 2 * 2 * 3
    names = {(c.get("classname"), c.get("name")) for c in cases}
    assert ("digits-cnn.baseline", "host: latency_p99") in names
    failures = root.findall(".//failure")
    assert len(failures) == sum(not c.passed for c in report.checks) == int(root.get("failures"))
    host_lat = next(c for c in cases if c.get("name") == "host: latency_p99").find("failure")
    assert "p99" in host_lat.get("message") and "ms" in host_lat.get("message")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_latency_p99_ms": 0},
        {"max_latency_p99_ms": float("inf")},
        {"max_memory_fraction": 0},
        {"max_memory_fraction": 1.2},
        {"max_accuracy_drop": -1},
        {"max_accuracy_drop": 101},
        {"accept_estimates": "yes"},
    ],
)
def test_thresholds_out_of_range_are_refused(kwargs):
    with pytest.raises(WorkbenchError):
        GateThresholds(**kwargs)


_CONFIG = """
[gate]
devices = ["host", "my-board"]
max_latency_p99_ms = 10000.0
max_memory_fraction = 0.6
max_accuracy_drop = 100

[[device]]
name = "my-board"
kind = "linux-board"
cpu = "4x Cortex-A55"
cores = 4
clock_mhz = 1800
ram_bytes = 2_000_000_000
storage_bytes = 8_000_000_000
memory_bandwidth_gbps = 6
peak_int8_gmacs = 50
runtimes = ["litert"]
"""


def test_a_gate_file_holds_thresholds_devices_and_profiles(tmp_path):
    f = tmp_path / "gate.toml"
    f.write_text(_CONFIG)
    config = load_gate_config(f)
    assert config.devices == ("host", "my-board")
    assert config.thresholds.max_latency_p99_ms == 10000.0
    assert config.profiles[0].runtimes == ("litert",)
    f.write_text(_CONFIG.replace("max_memory_fraction = 0.6", "max_memory_fraction = 6"))
    with pytest.raises(WorkbenchError, match="gate.toml.*max_memory_fraction"):
        load_gate_config(f)
    f.write_text(_CONFIG.replace("max_accuracy_drop", "max_acc_drop"))
    with pytest.raises(WorkbenchError, match="max_acc_drop"):
        load_gate_config(f)


def test_cli_check_with_a_config_writes_json_and_junit(capsys, tmp_path, session_cache):
    gate = tmp_path / "gate.toml"
    gate.write_text(_CONFIG)
    junit = tmp_path / "junit.xml"
    code = main(
        [
            "check",
            "digits-cnn",
            "--config",
            str(gate),
            "--accept-estimates",
            "--json",
            "--junit",
            str(junit),
            "--cache-dir",
            str(session_cache.root),
            *FAST,
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["passed"] and out["devices"] == ["host", "my-board"]
    assert any("runtime differs" in c["basis"] for c in out["checks"] if c["device"] == "my-board")
    assert len(ET.parse(junit).getroot().findall(".//testcase")) == 2 * 3


def test_cli_check_exits_1_when_a_threshold_is_missed(capsys, tmp_path, session_cache):
    junit = tmp_path / "junit.xml"
    code = main(
        [
            "check",
            "digits-cnn",
            "--device",
            "host",
            "--device",
            "cortex-m4",
            "--max-latency-p99",
            "1e-6",
            "--junit",
            str(junit),
            "--cache-dir",
            str(session_cache.root),
            *FAST,
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL latency_p99" in out and "FAIL memory" in out and "FAILED" in out
    assert junit.is_file()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--device", "host", "--max-memory-fraction", "1.5"], ["max_memory_fraction", "1.5"]),
        (["--device", "host", "--max-accuracy-drop", "-3"], ["max_accuracy_drop"]),
        (["--device", "raspberry-pi-9"], ["raspberry-pi-9", "raspberry-pi-4", "cortex-m4"]),
        ([], ["--device"]),
    ],
)
def test_cli_check_bad_input_is_one_line_exit_2_nothing_written(capsys, tmp_path, argv, words):
    junit = tmp_path / "junit.xml"
    code = main(["check", "digits-cnn", *argv, "--junit", str(junit), "--no-cache", *FAST])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    for w in words:
        assert w in err
    assert not junit.exists()


def test_cli_check_accuracy_needs_a_task(capsys, tmp_path, cnn_baseline):
    code = main(
        [
            "check",
            str(cnn_baseline.artifact),
            "--device",
            "host",
            "--max-accuracy-drop",
            "1",
            "--no-cache",
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--task" in err


def test_the_grid_is_variants_by_devices_with_the_threshold_missed(cnn_baseline, cnn_int8):
    report = run_gate([cnn_baseline, cnn_int8], ["host", "cortex-m4"], GateThresholds())
    lines = report.grid().splitlines()
    assert lines[0].split() == ["variant", "host", "cortex-m4"]
    assert lines[1].split() == ["baseline", "pass", "FAIL", "memory"]
    assert report.passed_cell("baseline", "host") and not report.passed_cell(
        "baseline", "cortex-m4"
    )
    assert report.to_dict()["passed_matrix"]["baseline"] == {"host": True, "cortex-m4": False}
    assert report.grid() in report.table()


@pytest.mark.parametrize(
    "values, names",
    [
        (["host,raspberry-pi-4", "cortex-m4"], ["host", "raspberry-pi-4", "cortex-m4"]),
        ([" host , host,esp32-s3 "], ["host", "esp32-s3"]),
        (None, []),
    ],
)
def test_device_names_are_comma_separated_and_repeatable(values, names):
    from workbench.devices.gate import parse_device_names

    assert parse_device_names(values) == names
    with pytest.raises(WorkbenchError, match="names no device"):
        parse_device_names([" , "])


def test_cli_check_takes_a_comma_separated_device_matrix(capsys, tmp_path, session_cache):
    junit = tmp_path / "junit.xml"
    code = main(
        [
            "check",
            "digits-cnn",
            "--quantize",
            "none,int8",
            "--device",
            "host,raspberry-pi-4",
            "--device",
            "cortex-m4",
            "--max-accuracy-drop",
            "100",
            "--json",
            "--junit",
            str(junit),
            "--cache-dir",
            str(session_cache.root),
            *FAST,
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # nothing ONNX runs on a Cortex-M4
    assert out["devices"] == ["host", "raspberry-pi-4", "cortex-m4"]
    assert len(out["variants"]) == 2
    assert all(row["host"] and not row["cortex-m4"] for row in out["passed_matrix"].values())
    assert out["matrix"]["baseline"]["cortex-m4"].startswith("FAIL memory: ")
    # JUnit: one case per variant, device and threshold (memory, accuracy_drop).
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert len(cases) == 2 * 3 * 2
    assert {c.get("name") for c in cases} == {
        f"{d}: {t}"
        for d in ("host", "raspberry-pi-4", "cortex-m4")
        for t in ("memory", "accuracy_drop")
    }


def test_cli_sweep_with_devices_writes_the_matrix_to_json_and_csv(capsys, tmp_path, session_cache):
    import pandas as pd

    from workbench.study import Study

    study, csv = tmp_path / "study.json", tmp_path / "study.csv"
    code = main(
        [
            "sweep",
            "digits-cnn",
            "--sparsity",
            "0",
            "--quantize",
            "none,int8",
            "--device",
            "host,raspberry-pi-4,cortex-m4",
            "--out",
            str(study),
            "--csv",
            str(csv),
            "--cache-dir",
            str(session_cache.root),
            *FAST,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "device matrix (2 variants x 3 devices" in out
    grid = out.split("device matrix", 1)[1].splitlines()[1:4]
    assert grid[0].split() == ["variant", "host", "raspberry-pi-4", "cortex-m4"]
    assert grid[1].split() == ["baseline", "pass", "pass", "FAIL", "memory"]
    assert "fits" not in grid[1]  # the figures follow, per device
    assert "frontier within the cortex-m4 budget: none (no variant fits)" in out
    assert "frontier within the raspberry-pi-4 budget: " in out
    data = json.loads(study.read_text())
    devices = data["devices"]
    assert devices["matrix"]["devices"] == ["host", "raspberry-pi-4", "cortex-m4"]
    assert devices["matrix"]["passed_matrix"]["baseline"]["cortex-m4"] is False
    assert "budget" in devices["matrix"]["matrix"]["baseline"]["raspberry-pi-4"]
    assert devices["frontiers"]["cortex-m4"]["keys"] == []
    assert devices["frontiers"]["host"]["keys"] == data["frontier"]["keys"]
    assert len(Study.load(study).results) == 2  # the record does not stop it loading
    table = pd.read_csv(csv)
    assert list(table["pass:cortex-m4"]) == [False, False]
    assert list(table["pass:host"]) == [True, True]
    assert table["device:raspberry-pi-4"].str.startswith("pass: memory").all()
    assert "frontier:host" in table.columns
    # --json prints the same record.
    code = main(
        [
            "sweep",
            "digits-cnn",
            "--sparsity",
            "0",
            "--quantize",
            "none,int8",
            "--device",
            "cortex-m4",
            "--out",
            str(study),
            "--json",
            "--cache-dir",
            str(session_cache.root),
            *FAST,
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["devices"]["matrix"]["devices"] == ["cortex-m4"]
    assert printed["devices"] == json.loads(study.read_text())["devices"]


def test_cli_sweep_refuses_an_unknown_device_before_measuring(capsys, tmp_path):
    cache = tmp_path / "cache"
    code = main(
        [
            "sweep",
            "digits-cnn",
            "--device",
            "host,pi-9",
            "--out",
            str(tmp_path / "s.json"),
            "--cache-dir",
            str(cache),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pi-9" in err and "raspberry-pi-4" in err
    assert not (tmp_path / "s.json").exists() and not any(cache.rglob("*.onnx"))
