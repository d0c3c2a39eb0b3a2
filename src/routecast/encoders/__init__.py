"""Prompt encoders: text in, feature matrix out.

Encoders are one :class:`~routecast.registry.Registry` (entry-point group
``routecast.encoders``) of factories: callables that take keyword parameters and return an
:class:`Encoder` (usually the class itself). ``tfidf`` runs offline with scikit-learn only;
``minilm`` needs the ``minilm`` extra and is wrapped in the embedding cache
(:mod:`routecast.encoders.cache`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from routecast.encoders.base import Encoder, Features
from routecast.errors import ConfigError
from routecast.registry import Registry

__all__ = ["ENCODERS", "Encoder", "Features", "make_encoder", "register_encoder"]

EncoderFactory = Callable[..., Encoder]


def _check(name: str, obj: object) -> EncoderFactory:
    if not callable(obj):
        raise ConfigError(f"encoder {name!r} is {obj!r}, not a callable that builds an encoder")
    return cast(EncoderFactory, obj)


_BUILTINS = {
    "tfidf": "routecast.encoders.tfidf:TfidfEncoder",
    "minilm": "routecast.encoders.minilm:minilm",
}

#: Every encoder factory by name (a read-only mapping; plugins included).
ENCODERS: Registry[EncoderFactory] = Registry("encoder", "routecast.encoders", _BUILTINS, _check)


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Class decorator: make an encoder constructible by ``name`` in this process."""

    def deco(factory: EncoderFactory) -> EncoderFactory:
        return ENCODERS.register(name, factory)

    return deco


def make_encoder(spec: str | Encoder, **params: Any) -> Encoder:
    """An encoder from its registered name, or ``spec`` itself if it is already one."""
    if not isinstance(spec, str):
        return spec
    return cast(Encoder, ENCODERS.make(spec, **params))
