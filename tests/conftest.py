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


@pytest.fixture(scope="session", autouse=True)
def _private_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests' embeddings out of the user's cache (and read none from it).

    Set in the environment so that subprocesses started by tests inherit it too.
    """
    os.environ["ROUTECAST_CACHE"] = str(tmp_path_factory.mktemp("routecast-cache"))
