"""Fixtures for the device tests: measured digits-cnn variants and a profile factory."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.devices import get_device
from workbench.pipeline import evaluate
from workbench.recipe import QuantizeConfig, Recipe


@pytest.fixture(scope="session")
def cnn_baseline(cnn, session_cache):
    from tests.conftest import QUICK

    return evaluate(cnn, Recipe(), settings=QUICK, cache=session_cache)


@pytest.fixture(scope="session")
def cnn_int8(cnn, session_cache):
    from tests.conftest import QUICK

    return evaluate(
        cnn, Recipe.of(QuantizeConfig(scheme="int8")), settings=QUICK, cache=session_cache
    )


@pytest.fixture
def board():
    """A linux-board profile with the given fields changed (a Raspberry Pi 4 by default)."""

    def make(**changes):
        return dataclasses.replace(get_device("raspberry-pi-4"), name="test-board", **changes)

    return make
