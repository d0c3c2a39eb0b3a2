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
