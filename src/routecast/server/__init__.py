"""The OpenAI-compatible routing server (Starlette, run by uvicorn).

Importing this package imports nothing heavy; the names below load on first use::

    from routecast.server import create_app, load_config

    app = create_app(load_config("routecast.yaml"))   # then: uvicorn.run(app)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "create_app": "routecast.server.app",
    "RoutecastServer": "routecast.server.app",
    "Config": "routecast.server.config",
    "load_config": "routecast.server.config",
    "parse_config": "routecast.server.config",
    "build_endpoints": "routecast.server.endpoints",
    "RequestLog": "routecast.server.requestlog",
    "request_stats": "routecast.server.stats",
}

__all__ = ["Config", "RequestLog", "RoutecastServer", "build_endpoints", "create_app",
           "load_config", "parse_config", "request_stats"]

if TYPE_CHECKING:
    from routecast.server.app import RoutecastServer, create_app
    from routecast.server.config import Config, load_config, parse_config
    from routecast.server.endpoints import build_endpoints
    from routecast.server.requestlog import RequestLog
    from routecast.server.stats import request_stats


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'routecast.server' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
