"""Shared fixtures: a per-session cache, quick measurement settings, the sample models."""

from __future__ import annotations

import pytest

from workbench.cache import Cache
from workbench.pipeline import MeasureSettings

# Enough runs for ordered percentiles, few enough to keep the suite fast. Real
# figures come from the defaults; benchmarks/ checks speed targets. The noise check is
# off (limits no timing reaches): so few runs on a shared machine are often noisy, and
# a noisy result is measured again on its next evaluation, which would make tests of
# caching depend on the machine's load. Tests of the noise check set their own limits.
QUICK = MeasureSettings(
    min_runs=20, min_seconds=0.05, warmup=3, profile=False, max_spread=1e9, max_preempted=1e9
)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Cache:
    """One cache for the session, so a baseline measured once serves every test."""
    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def quick() -> MeasureSettings:
    return QUICK


@pytest.fixture(scope="session")
def cnn():
    from workbench.models import load_model

    return load_model("digits-cnn")


# A second runtime for tests of everything that spans runtimes (the app's runtime
# choice, sweeps over several, charts telling them apart), without depending on which
# runtimes a branch registers: ONNX Runtime under another name, measured for real.
FAKE_RUNTIME = "onnxruntime-twin"
# One that has no quantization step: what a runtime that cannot honour a setting does.
FAKE_FLOAT_RUNTIME = "onnxruntime-float-only"


@pytest.fixture
def fake_runtimes():
    """Registers FAKE_RUNTIME and FAKE_FLOAT_RUNTIME; unregisters them afterwards."""
    from workbench import runtimes
    from workbench.runtimes import get_runtime, register_runtime

    base = type(get_runtime("onnxruntime"))
    twin = type("OnnxRuntimeTwin", (base,), {"name": FAKE_RUNTIME})
    float_only = type(
        "OnnxRuntimeFloatOnly", (base,), {"name": FAKE_FLOAT_RUNTIME, "artifact_steps": {}}
    )
    register_runtime(twin)
    register_runtime(float_only)
    try:
        yield (FAKE_RUNTIME, FAKE_FLOAT_RUNTIME)
    finally:
        runtimes._REGISTRY.pop(FAKE_RUNTIME, None)
        runtimes._REGISTRY.pop(FAKE_FLOAT_RUNTIME, None)
