"""Prompt encoders: text in, feature matrix out.

Built-ins register through :func:`register_encoder`, the same path a plugin would take.
``tfidf`` runs offline with scikit-learn only; ``minilm`` needs the ``minilm`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from routecast.encoders.base import Encoder, Features
from routecast.errors import ConfigError

__all__ = ["ENCODERS", "Encoder", "Features", "make_encoder", "register_encoder"]

ENCODERS: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Class decorator: make an encoder constructible by name."""

    def deco(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        ENCODERS[name] = factory
        return factory

    return deco


def make_encoder(spec: str | Encoder, **params: Any) -> Encoder:
    """An encoder from its registered name, or ``spec`` itself if it is already one."""
    if not isinstance(spec, str):
        return spec
    _load_builtins()
    try:
        factory = ENCODERS[spec]
    except KeyError:
        raise ConfigError(
            f"unknown encoder {spec!r}; known encoders: {', '.join(sorted(ENCODERS))}"
        ) from None
    return factory(**params)


def _load_builtins() -> None:
    # Importing the modules registers them; both are light (minilm imports torch lazily).
    from routecast.encoders import minilm, tfidf  # noqa: F401
