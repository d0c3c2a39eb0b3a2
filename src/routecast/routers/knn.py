"""k-nearest-neighbour router: a prompt's expected quality is that of its neighbours.

Studies of routing (RouterBench, "routing plateau" papers) find a well-tuned kNN hard to beat,
so it is the learned baseline every other router is measured against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.encoders import Encoder, make_encoder
from routecast.routers import register_router
from routecast.routers.base import FloatArray, Router


@register_router
class KNNRouter(Router):
    """Mean quality of the ``k`` most similar training prompts (cosine similarity).

    ``weighted`` weighs neighbours by similarity; ``prior`` shrinks the neighbour mean towards
    the model's overall mean with that many pseudo-neighbours, which steadies small ``k``.
    """

    name = "knn"

    def __init__(self, k: int = 40, encoder: str | Encoder = "tfidf", weighted: bool = True,
                 prior: float = 1.0) -> None:
        self.k = k
        self.encoder = encoder
        self.weighted = weighted
        self.prior = prior

    def _fit(self, dataset: Dataset) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.encoder_: Encoder = make_encoder(self.encoder).fit(dataset.prompts)
        features = self.encoder_.transform(dataset.prompts)
        self.k_: int = max(1, min(self.k, dataset.n_prompts))
        self.index_: Any = NearestNeighbors(n_neighbors=self.k_, metric="cosine",
                                            algorithm="brute").fit(features)
        self.quality_: FloatArray = dataset.quality
        self.mean_quality_: FloatArray = dataset.mean_quality()

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        if len(prompts) == 0:
            return np.empty((0, len(self.models_)))
        dist, idx = self.index_.kneighbors(self.encoder_.transform(prompts))
        # Cosine distance in [0, 2]; similarity weights stay positive.
        w = np.clip(1.0 - dist, 1e-6, None) if self.weighted else np.ones_like(dist)
        neigh = self.quality_[idx]  # (n, k, m)
        num = np.einsum("nk,nkm->nm", w, neigh) + self.prior * self.mean_quality_
        den = w.sum(axis=1, keepdims=True) + self.prior
        return np.asarray(num / den, dtype=np.float64)
