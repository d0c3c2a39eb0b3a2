"""A routecast server with a routed, a cascade and a fallback endpoint for the dashboard's
tests: a linear router fitted and calibrated through the CLI on the toy data (saved to disk, so
the server loads it as a user's would), over the stub upstream's small/medium/large."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from routecast.cli import main
from routecast.data import save_dataset
from tests.routecast_live import make_config, serve
from tests.stub_upstream import StubUpstream
from tests.toy import toy_dataset


def run_cli(*argv: str) -> None:
    """``routecast ARGV`` in this process; click exits, 0 on success."""
    code: object = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = e.code
    assert code in (0, None), f"routecast {' '.join(argv)} exited with {code}"


def saved_router(folder: Path) -> Path:
    """A linear router fitted on the toy data's train split and calibrated for 95 % of the
    best model's quality on its validation split, through ``routecast fit`` / ``calibrate``."""
    data = folder / "toy.jsonl"
    save_dataset(toy_dataset(), data)
    out = folder / "linear"
    run_cli("fit", str(data), "--router", "linear", "--out", str(out))
    run_cli("calibrate", str(out), "--quality-fraction", "0.95", "--data", str(data))
    return out


def endpoints(router_dir: Path) -> dict[str, Any]:
    return {"auto": {"type": "routed", "router": str(router_dir)},
            "smart": {"type": "cascade", "models": ["small", "large"], "thresholds": [0.8]},
            "guarded": {"type": "plain", "model": "large", "fallbacks": ["small"]}}


@contextmanager
def dashboard_server(stub: StubUpstream, db: Path, router_dir: Path, **extra: Any
                     ) -> Iterator[str]:
    """A running server logging prompts to ``db``; yields its base URL."""
    config = make_config(stub.url, db, endpoints=endpoints(router_dir), **extra)
    config.storage.log_prompts = True
    with serve(config) as url:
        yield url


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_router(tmp_path_factory.mktemp("router"))
