"""Routers: fitted predictors of each model's quality on each prompt.

Built-ins register through :func:`register_router`, the same path a plugin takes, and are
imported only when first asked for by name.
"""

from __future__ import annotations

from typing import Any, TypeVar

from routecast.registry import Registry
from routecast.routers.base import Router

__all__ = ["ROUTERS", "Router", "make_router", "register_router", "router_names"]


def _load_builtins() -> None:
    from routecast.routers import baselines, knn, linear, mf, mlp, ranking, stack  # noqa: F401


# Routers list in registration order: no documented order to restore.
_REGISTRY = Registry[Router]("router", _load_builtins)
ROUTERS: dict[str, type[Router]] = _REGISTRY.classes

R = TypeVar("R", bound=type[Router])


def register_router(cls: R) -> R:
    """Class decorator: make a router constructible by its ``name``."""
    _REGISTRY.register(cls)
    return cls


def router_names(*, include_evaluation_only: bool = True) -> list[str]:
    """Registered router names, in registration order."""
    return [n for n, c in _REGISTRY.loaded().items()
            if include_evaluation_only or not c.evaluation_only]


def make_router(name: str, **params: Any) -> Router:
    """A new, unfitted router by registered name."""
    return _REGISTRY.make(name, **params)
