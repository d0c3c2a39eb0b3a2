"""Routers: fitted predictors of each model's quality on each prompt.

Routers are one :class:`~routecast.registry.Registry` (entry-point group
``routecast.routers``): the built-ins below are ``"module:Class"`` references, imported only
when first asked for by name, and an installed plugin's router joins the same way (its class's
``name`` is the entry point's name). :func:`register_router` adds one at run time.
"""

from __future__ import annotations

from typing import Any, TypeVar

from routecast.registry import Registry, class_check
from routecast.routers.base import Router

__all__ = ["ROUTERS", "Router", "make_router", "register_router", "router_names"]

_BUILTINS = {
    "random": "routecast.routers.baselines:RandomRouter",
    "best-single": "routecast.routers.baselines:BestSingleRouter",
    "cheapest": "routecast.routers.baselines:CheapestRouter",
    "oracle": "routecast.routers.baselines:OracleRouter",
    "knn": "routecast.routers.knn:KNNRouter",
    "linear": "routecast.routers.linear:LinearRouter",
    "mf": "routecast.routers.mf:MFRouter",
    "mlp": "routecast.routers.mlp:MLPRouter",
    "sw-ranking": "routecast.routers.ranking:SWRankingRouter",
    "stack": "routecast.routers.stack:StackRouter",
}

#: Every router class by name (a read-only mapping; plugins included).
ROUTERS: Registry[type[Router]] = Registry("router", "routecast.routers", _BUILTINS,
                                           class_check("router", Router))

R = TypeVar("R", bound=type[Router])


def register_router(cls: R) -> R:
    """Class decorator: make a router constructible by its ``name`` in this process."""
    ROUTERS.register(cls.name, cls)
    return cls


def router_names(*, include_evaluation_only: bool = True) -> list[str]:
    """Router names: the built-ins in documented order, then run-time ones, then plugins."""
    return [n for n in ROUTERS.names()
            if include_evaluation_only or not ROUTERS.load(n).evaluation_only]


def make_router(name: str, **params: Any) -> Router:
    """A new, unfitted router by registered name."""
    router = ROUTERS.make(name, **params)
    assert isinstance(router, Router)  # class_check made sure
    return router
