"""Shared fixtures: where the real recorded outcome data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: ../shared/data beside the checkout; ROUTECAST_SHARED_DATA overrides it.
SHARED_DATA = Path(
    os.environ.get("ROUTECAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real outcome data not found at {SHARED_DATA}; set ROUTECAST_SHARED_DATA")
    return SHARED_DATA
