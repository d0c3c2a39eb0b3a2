"""Routers: fitted predictors of each model's quality on each prompt.

Built-ins register through :func:`register_router`, the same path a plugin takes, and are
imported only when first asked for by name.
"""

from __future__ import annotations

from typing import Any, TypeVar

from routecast.errors import ConfigError
from routecast.routers.base import Router

__all__ = ["ROUTERS", "Router", "make_router", "register_router", "router_names"]

ROUTERS: dict[str, type[Router]] = {}

R = TypeVar("R", bound=type[Router])


def register_router(cls: R) -> R:
    """Class decorator: make a router constructible by its ``name``."""
    if not cls.name:
        raise ConfigError(f"{cls.__name__} needs a non-empty class attribute `name`")
    ROUTERS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    from routecast.routers import baselines, knn, linear, mf, mlp, ranking, stack  # noqa: F401


def router_names(*, include_evaluation_only: bool = True) -> list[str]:
    """Registered router names, in registration order."""
    _load_builtins()
    return [n for n, c in ROUTERS.items() if include_evaluation_only or not c.evaluation_only]


def make_router(name: str, **params: Any) -> Router:
    """A new, unfitted router by registered name."""
    _load_builtins()
    try:
        cls = ROUTERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown router {name!r}; known routers: {', '.join(ROUTERS)}") from None
    try:
        return cls(**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for router {name!r}: {e}") from None
