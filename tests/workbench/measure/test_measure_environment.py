"""The environment fingerprint and the CPU features honesty warnings rely on."""

from __future__ import annotations

import importlib
import json
import sys

import onnxruntime

from workbench.measure import cpu_features, environment, has_int8_dot_product

# The package re-exports the function environment(), which hides the module of the
# same name as an attribute: fetch the module itself.
env_module = importlib.import_module("workbench.measure.environment")

KEYS = {
    "cpu_model",
    "cpu_features",
    "int8_dot_product",
    "physical_cores",
    "logical_cores",
    "threads",
    "os",
    "platform",
    "machine",
    "python",
    "onnxruntime",
    "onnx",
    "torch",
    "numpy",
    "workbench",
}


def test_environment_has_the_keys_and_is_json():
    env = environment(threads=3)
    assert KEYS <= set(env)
    assert env["threads"] == 3
    assert env["onnxruntime"] == onnxruntime.__version__
    assert env["logical_cores"] >= env["physical_cores"] >= 1
    assert env["cpu_model"]
    assert json.loads(json.dumps(env)) == env


def test_features_match_proc_cpuinfo():
    if not sys.platform.startswith("linux"):
        return
    text = open("/proc/cpuinfo").read()
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags = set(line.partition(":")[2].split())
            break
    feats = cpu_features()
    assert ("avx2" in feats) == ("avx2" in flags)
    assert ("vnni" in feats) == bool({"avx512_vnni", "avx_vnni"} & flags)
    assert ("dotprod" in feats) == ("asimddp" in flags)
    assert has_int8_dot_product() == bool({"vnni", "dotprod"} & feats)


def test_arm_flags_normalize(monkeypatch):
    monkeypatch.setattr(
        env_module, "_cpu", lambda: ("Cortex-A76", frozenset({"fp", "asimd", "asimddp"}))
    )
    assert cpu_features() == {"neon", "dotprod"}
    assert has_int8_dot_product()
    monkeypatch.setattr(env_module, "_cpu", lambda: ("Cortex-A53", frozenset({"fp", "asimd"})))
    assert not has_int8_dot_product()
    monkeypatch.setattr(env_module, "_cpu", lambda: ("old x86", frozenset({"sse4_2", "avx2"})))
    assert cpu_features() == {"avx2"} and not has_int8_dot_product()
