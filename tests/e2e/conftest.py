"""Browser tests stop with one line naming the install command when Chromium is absent."""

from __future__ import annotations

import pytest
from headless import chromium_missing


@pytest.fixture(autouse=True)
def _require_chromium(request) -> None:
    if request.node.get_closest_marker("browser") is None:
        return
    missing = chromium_missing()
    if missing:
        pytest.fail(missing, pytrace=False)
