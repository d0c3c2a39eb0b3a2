"""routecast: efficient multi-LLM inference by routing and cascading.

The public API is re-exported here lazily, so ``import routecast`` stays cheap (no numpy or
scikit-learn until a name is used)::

    from routecast import load_dataset, make_router, Policy

    data = load_dataset("../shared/data/routerbench-subset")
    router = make_router("linear").fit(data.subset("train"))
    policy = Policy.for_quality(router, data.subset("validation"), 0.95)
    router.route(["What is 2 + 2?"], policy)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Dataset": "routecast.data.dataset",
    "load_dataset": "routecast.data",
    "save_dataset": "routecast.data",
    "Policy": "routecast.policy",
    "Router": "routecast.routers.base",
    "make_router": "routecast.routers",
    "register_router": "routecast.routers",
    "make_encoder": "routecast.encoders",
    "register_encoder": "routecast.encoders",
    "evaluate": "routecast.bench.evaluate",
    "RoutecastError": "routecast.errors",
    "DataError": "routecast.errors",
    "ConfigError": "routecast.errors",
    "CalibrationError": "routecast.errors",
    "NotFittedError": "routecast.errors",
    "OptionalDependencyError": "routecast.errors",
}

__all__ = [
    "CalibrationError",
    "ConfigError",
    "DataError",
    "Dataset",
    "NotFittedError",
    "OptionalDependencyError",
    "Policy",
    "RoutecastError",
    "Router",
    "evaluate",
    "load_dataset",
    "make_encoder",
    "make_router",
    "register_encoder",
    "register_router",
    "save_dataset",
]

if TYPE_CHECKING:
    from routecast.bench.evaluate import evaluate
    from routecast.data import load_dataset, save_dataset
    from routecast.data.dataset import Dataset
    from routecast.encoders import make_encoder, register_encoder
    from routecast.errors import (
        CalibrationError,
        ConfigError,
        DataError,
        NotFittedError,
        OptionalDependencyError,
        RoutecastError,
    )
    from routecast.policy import Policy
    from routecast.routers import make_router, register_router
    from routecast.routers.base import Router


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'routecast' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
