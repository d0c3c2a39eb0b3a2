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

import numpy.typing as npt

from routecast.encoders.base import Encoder, Features
from routecast.errors import ConfigError
from routecast.registry import Registry

__all__ = ["ENCODERS", "Encoder", "Features", "encoder_from_state", "encoder_state",
           "make_encoder", "register_encoder"]

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


def encoder_state(encoder: Any) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """A fitted encoder as ``{"name", "params", "state"}`` (JSON-able) and its arrays, which
    :func:`encoder_from_state` reads back. The encoder needs a ``name`` (registered, so the
    reader can build it), ``get_params`` and ``get_state``: every built-in has them."""
    name = getattr(encoder, "name", None)
    if not isinstance(name, str) or not hasattr(encoder, "get_state"):
        raise ConfigError(f"cannot save encoder {encoder!r}: only registered encoders with "
                          "get_state persist; register it with `routecast.register_encoder`")
    values, arrays = encoder.get_state()
    return {"name": name, "params": encoder.get_params(), "state": values}, dict(arrays)


def encoder_from_state(spec: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Encoder:
    """The encoder :func:`encoder_state` described (``arrays`` keyed as it returned them)."""
    encoder: Any = make_encoder(str(spec["name"]), **dict(spec["params"]))
    encoder.set_state(dict(spec["state"]), arrays)
    return cast(Encoder, encoder)
