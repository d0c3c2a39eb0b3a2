"""The routecast server under test: configs over stub upstreams, run by a real uvicorn."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from routecast.policy import Policy
from routecast.routers.base import Router
from routecast.server.app import create_app
from routecast.server.config import Config, parse_config
from tests.stub_upstream import LiveServer, StubUpstream

#: USD per million tokens of the three toy models (input, output, cached input).
PRICES = {"small": (0.1, 0.4, 0.05), "medium": (1.0, 4.0, 0.5), "large": (10.0, 30.0, 2.5)}

#: The toy models declare every capability (the stub serves any request), so tests of other
#: features are not refused by the capability check; tests of that check override it.
ALL_CAPABILITIES: dict[str, Any] = {
    "input": ["text", "image", "audio"], "tools": True,
    "structured_output": ["json_object", "json_schema"]}


def model_entry(base_url: str, name: str, **overrides: Any) -> dict[str, Any]:
    price_in, price_out, price_cached = PRICES.get(name, (1.0, 2.0, None))
    entry: dict[str, Any] = {
        "base_url": base_url, "input_usd_per_mtok": price_in, "output_usd_per_mtok": price_out,
        "cached_usd_per_mtok": price_cached, "max_retries": 2, "backoff_s": 0.01,
        "max_backoff_s": 0.05, "connect_timeout_s": 2, "read_timeout_s": 5,
        "capabilities": ALL_CAPABILITIES}
    entry.update(overrides)
    return entry


def make_config(base_url: str, db: Path | None, *, endpoints: dict[str, Any] | None = None,
                models: dict[str, dict[str, Any]] | None = None, **extra: Any) -> Config:
    """small / medium / large on one stub (plus ``models``), and the given endpoints."""
    doc: dict[str, Any] = {
        "models": {name: model_entry(base_url, name) for name in PRICES} | (models or {}),
        "endpoints": endpoints or {},
        "storage": {"db": str(db) if db else None, "batch_ms": 20},
        **extra,
    }
    return parse_config(doc, where="test config")


@contextmanager
def serve(config: Config, routers: dict[str, tuple[Router, Policy]] | None = None,
          env: dict[str, str] | None = None) -> Iterator[str]:
    """Run routecast on a free port; yields its base URL (``http://127.0.0.1:PORT``)."""
    app = create_app(config, routers=routers, env=env or {})
    with LiveServer(app) as live:
        yield live.url


def stub_fixture() -> Callable[..., Any]:
    """A module-scoped fixture named ``stub``: one :class:`StubUpstream` for a module's tests.

    Bind it at module level, ``stub = stub_fixture()``; each module that does gets its own
    upstream, as with a fixture written out in the module. (Typed as a plain callable: pytest
    does not export the type of a fixture definition.)
    """

    @pytest.fixture(scope="module", name="stub")
    def fixture() -> Iterator[StubUpstream]:
        with StubUpstream() as stub:
            yield stub

    return fixture


def db_fixture() -> Callable[..., Any]:
    """A module-scoped fixture named ``db``: the path of a fresh request log (and key store)
    for a module's server, not created yet. Bind it as ``db = db_fixture()``."""

    @pytest.fixture(scope="module", name="db")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp("log") / "requests.db"

    return fixture


def read_rows(db: Path) -> list[dict[str, Any]]:
    """Every committed row of the request log, oldest first."""
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM requests ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def log_rows(db: Path, n: int, where: Callable[[dict[str, Any]], bool] = lambda r: True,
             timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The rows matching ``where`` once at least ``n`` of them are committed (the writer
    batches, so a row appears some milliseconds after its request)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [r for r in read_rows(db) if where(r)]
        if len(rows) >= n:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {n} matching logged requests in {db}, got {rows}")
        time.sleep(0.02)
