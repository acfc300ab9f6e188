"""The device runner: one file, numpy + onnxruntime only, run in a minimal environment."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

import workbench.devices.runner as runner_module

RUNNER = Path(runner_module.__file__)
_PACKAGE = re.compile(r"^(numpy|onnxruntime)(\.libs|-[\d.]+\.dist-info)?$")


def test_the_runner_imports_only_the_standard_library_numpy_and_onnxruntime():
    tree = ast.parse(RUNNER.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names - set(sys.stdlib_module_names) - {"__future__"} == {"numpy", "onnxruntime"}


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A virtual environment without system site-packages holding only numpy and onnxruntime."""
    venv = tmp_path_factory.mktemp("device-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    source = Path(numpy.__file__).resolve().parents[1]
    for entry in source.iterdir():
        if _PACKAGE.match(entry.name):
            os.symlink(entry, Path(site) / entry.name)
    return python


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    first_cpu = min(os.sched_getaffinity(0))
    return subprocess.run(
        [str(python), "-I", "runner.py", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        preexec_fn=lambda: os.sched_setaffinity(0, {first_cpu}),  # a one-core stand-in device
    )


def test_the_bare_environment_has_no_torch_and_no_workbench(bare_python):
    for module in ("torch", "workbench", "onnx"):
        proc = subprocess.run(
            [str(bare_python), "-I", "-c", f"import {module}"], capture_output=True, text=True
        )
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_the_runner_measures_an_artifact_on_a_stand_in_device(bare_python, tmp_path, cnn_baseline):
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(RUNNER, device / "runner.py")
    shutil.copy(cnn_baseline.artifact, device / "model.onnx")
    proc = _run(
        bare_python,
        "model.onnx",
        "-o",
        "results.json",
        "--device-name",
        "stand-in",
        "--min-runs",
        "30",
        "--min-seconds",
        "0.05",
        "--warmup",
        "3",
        cwd=device,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads((device / "results.json").read_text())
    assert r["format"] == "edge-workbench-runner-results" and r["device_name"] == "stand-in"
    assert r["artifact"]["sha256"] == hashlib.sha256(cnn_baseline.artifact.read_bytes()).hexdigest()
    lat = r["latency_ms"]
    assert lat["n"] >= 30 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["threads"] == 1 and r["input_shape"] == [1, 1, 8, 8]
    mem = r["memory"]
    assert 0 < mem["peak_bytes"] < mem["process_peak_bytes"]
    env = r["environment"]
    assert env["usable_cores"] == 1 and env["onnxruntime"] and env["numpy"] == numpy.__version__
    # The same keys the workbench's own results use, so an import can read them as they are.
    from workbench.results import LatencyStats

    assert LatencyStats.from_dict(lat).p99 == lat["p99"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["absent.onnx"], ["absent.onnx", "not a file"]),
        (["broken.onnx"], ["cannot be loaded"]),
        (["model.onnx", "--input-shape", "1,3,32,32"], ["input shape"]),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    bare_python, tmp_path, cnn_baseline, args, words
):
    shutil.copy(RUNNER, tmp_path / "runner.py")
    shutil.copy(cnn_baseline.artifact, tmp_path / "model.onnx")
    (tmp_path / "broken.onnx").write_bytes(cnn_baseline.artifact.read_bytes()[:500])
    proc = _run(bare_python, *args, "-o", "results.json", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    for w in words:
        assert w in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_an_export_bundles_the_runner_which_measures_it_on_a_stand_in_device(
    bare_python, tmp_path, cnn, cnn_baseline, session_cache, capsys
):
    """The exported folder alone (no workbench) is enough to measure the variant on a
    device; the results it writes are accepted by `workbench import`."""
    from workbench.cli import main
    from workbench.devices.imported import find_measurement
    from workbench.export import RUN_INSTRUCTIONS_FILE, RUNNER_FILE, export_variant

    out = tmp_path / "export"
    manifest = json.loads(
        export_variant(cnn_baseline, cnn, out, cache=session_cache, torch_program=False).read_text()
    )
    bundle = manifest["device_runner"]
    assert bundle["runner"]["file"] == RUNNER_FILE
    assert bundle["instructions"]["file"] == RUN_INSTRUCTIONS_FILE
    assert (out / RUNNER_FILE).read_bytes() == RUNNER.read_bytes()
    assert bundle["runner"]["sha256"] == hashlib.sha256(RUNNER.read_bytes()).hexdigest()
    run_md = (out / RUN_INSTRUCTIONS_FILE).read_text()
    assert f"python3 {RUNNER_FILE} model.onnx" in run_md and "workbench import" in run_md
    # Run on the "device": the folder as exported, a Python with numpy and onnxruntime only.
    proc = subprocess.run(
        [str(bare_python), "-I", RUNNER_FILE, "model.onnx", "-o", "results.json"]
        + ["--device-name", "stand-in", "--min-runs", "20", "--min-seconds", "0.02"],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert proc.returncode == 0, proc.stderr
    cache_dir = tmp_path / "cache"
    code = main(
        [
            "import",
            str(out / "results.json"),
            "--device",
            "raspberry-pi-4",
            "--artifact",
            str(out / "model.onnx"),
            "--cache-dir",
            str(cache_dir),
        ]
    )
    assert code == 0, capsys.readouterr().err
    from workbench.cache import Cache

    recorded = find_measurement(out / "model.onnx", "raspberry-pi-4", Cache(cache_dir))
    assert recorded is not None and recorded.runner_device_name == "stand-in"
