"""The encoder interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

#: A dense ``(n, d)`` array or a scipy sparse matrix with ``n`` rows (TF-IDF is sparse).
Features = npt.NDArray[np.float64] | Any


@runtime_checkable
class Encoder(Protocol):
    """Turns prompts into feature rows.

    ``fit`` learns from training prompts only (a vocabulary, say); pre-trained encoders make it a
    no-op. ``transform`` must be deterministic: the same text gives the same row. Rows are
    L2-normalised so that dot products are cosine similarities.
    """

    name: str

    def fit(self, texts: Sequence[str]) -> Self: ...

    def transform(self, texts: Sequence[str]) -> Features: ...


@runtime_checkable
class PersistentEncoder(Encoder, Protocol):
    """An encoder that can be saved with a router (see ``routers/persist.py``).

    ``get_state`` returns its learned state as JSON-able values and numpy arrays;
    ``set_state`` restores it on an instance built with the same constructor arguments.
    """

    def get_params(self) -> dict[str, Any]: ...

    def get_state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]: ...

    def set_state(self, values: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None: ...
