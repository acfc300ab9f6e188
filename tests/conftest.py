"""Shared fixtures: a per-session cache, quick measurement settings, the sample models."""

from __future__ import annotations

import pytest

from workbench.cache import Cache
from workbench.pipeline import MeasureSettings

# Enough runs for ordered percentiles, few enough to keep the suite fast. Real
# figures come from the defaults; benchmarks/ checks speed targets.
QUICK = MeasureSettings(min_runs=20, min_seconds=0.05, warmup=3, profile=False)


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
