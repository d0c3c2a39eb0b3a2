"""Shared fixtures: where the real recorded outcome data lives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from routecast.fleet import RunningFleet

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


@pytest.fixture(scope="session")
def routerbench_fleet(shared_data: Path) -> Iterator[RunningFleet]:
    """The RouterBench subset's 11 models and the judge, replayed in-process on a free port
    (every split; ``.fleet`` is the :class:`routecast.fleet.Fleet` for look-ups)."""
    from routecast.fleet import serve_fleet

    with serve_fleet(shared_data / "routerbench-subset") as running:
        yield running


@pytest.fixture(scope="session")
def cascades_fleet(shared_data: Path) -> Iterator[RunningFleet]:
    """The cascade set's 9 models (with latency and confidence) and the judge, in-process."""
    from routecast.fleet import serve_fleet

    with serve_fleet(shared_data / "llm-cascades-zellinger") as running:
        yield running
