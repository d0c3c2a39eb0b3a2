"""k-nearest-neighbour router: a prompt's expected quality is that of its neighbours.

Studies of routing (RouterBench, "routing plateau" papers) find a well-tuned kNN hard to beat,
so it is the learned baseline every other router is measured against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.encoders import Encoder, make_encoder
from routecast.routers.base import FloatArray, IntArray, Router

if TYPE_CHECKING:
    from routecast.routers.fewshot import Labels, Prior


class KNNRouter(Router):
    """Mean quality of the ``k`` most similar training prompts (cosine similarity).

    ``weighted`` weighs neighbours by similarity; ``prior`` shrinks the neighbour mean towards
    the model's overall mean with that many pseudo-neighbours, which steadies small ``k``.

    On sparse outcomes a model's prediction averages its ``k`` nearest *labelled* neighbours
    (prompts with a label for that model), shrunk towards its mean over its labels.
    """

    name = "knn"
    accepts_sparse = True

    def __init__(self, k: int = 40, encoder: str | Encoder = "tfidf", weighted: bool = True,
                 prior: float = 1.0) -> None:
        self.k = k
        self.encoder = encoder
        self.weighted = weighted
        self.prior = prior

    def _fit(self, dataset: Dataset) -> None:
        self.encoder_: Encoder = make_encoder(self.encoder).fit(dataset.prompts)
        # Encoders give L2-normalised rows, so a dot product is the cosine similarity and a
        # brute-force search is one (sparse) matrix product: no index object to persist.
        self.features_: Any = self.encoder_.transform(dataset.prompts)
        self._features_t: Any = None  # rebuilt on first use
        self.k_: int = max(1, min(self.k, dataset.n_prompts))
        self.quality_: FloatArray = dataset.quality
        mean = dataset.mean_quality()
        overall = float(np.nanmean(dataset.quality)) if dataset.labelled.any() else 0.5
        self.mean_quality_: FloatArray = np.where(np.isnan(mean), overall, mean)

    def neighbours(self, prompts: Sequence[str]) -> tuple[FloatArray, IntArray]:
        """Cosine similarity and row index of the ``k_`` nearest training prompts, best first."""
        self._check_fitted()
        # Transposing the training matrix per call costs milliseconds; do it once (derived
        # from features_, so it is not persisted).
        if getattr(self, "_features_t", None) is None:
            t = self.features_.T
            self._features_t = t.tocsr() if hasattr(t, "tocsr") else np.ascontiguousarray(t)
        sim = self.encoder_.transform(prompts) @ self._features_t
        sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim, dtype=np.float64)
        k = self.k_
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
            np.tile(np.arange(sim.shape[1]), (sim.shape[0], 1))
        top = np.take_along_axis(sim, idx, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        return (np.take_along_axis(top, order, axis=1),
                np.take_along_axis(idx, order, axis=1).astype(np.int64))

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        if len(prompts) == 0:
            return np.empty((0, len(self.models_)))
        if np.isnan(self.quality_).any():
            return self._predict_sparse(prompts)
        sim, idx = self.neighbours(prompts)
        # Similarity weights stay positive even for orthogonal neighbours.
        w = np.clip(sim, 1e-6, None) if self.weighted else np.ones_like(sim)
        neigh = self.quality_[idx]  # (n, k, m)
        num = np.einsum("nk,nkm->nm", w, neigh) + self.prior * self.mean_quality_
        den = w.sum(axis=1, keepdims=True) + self.prior
        return np.asarray(num / den, dtype=np.float64)

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        """The new model's outcome on every training prompt imputed from the prior, the
        labelled prompts joined with their true outcomes (see ``routers/fewshot.py``)."""
        from routecast.routers.fewshot import impute_and_append
        from routecast.routers.stack import knn_means

        def existing(rows: Any) -> FloatArray:
            # What predict computes, from encoder rows instead of prompts.
            sim = rows @ self.features_.T
            sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim,
                             dtype=np.float64)
            return knn_means(sim, self.quality_, self.mean_quality_, [self.k_],
                             prior=self.prior, weighted=self.weighted)[0]

        rows = self.encoder_.transform(labels.prompts)
        self.features_, self.quality_ = impute_and_append(
            self.features_, self.quality_, rows, labels, prior, existing)
        self.mean_quality_ = np.append(self.mean_quality_, self.quality_[:, -1].mean())
        self._features_t = None  # the cached transpose would hide the appended rows

    def _predict_sparse(self, prompts: Sequence[str]) -> FloatArray:
        """Per model, the ``k`` nearest prompts labelled for it."""
        if getattr(self, "_features_t", None) is None:
            self.neighbours(prompts[:1])  # builds the transposed training matrix
        sim = self.encoder_.transform(prompts) @ self._features_t
        sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim, dtype=np.float64)
        out = np.empty((len(prompts), len(self.models_)))
        for j in range(len(self.models_)):
            rows = np.flatnonzero(~np.isnan(self.quality_[:, j]))
            if rows.size == 0:
                out[:, j] = self.mean_quality_[j]
                continue
            s = sim[:, rows]
            k = min(self.k_, rows.size)
            idx = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < rows.size else \
                np.tile(np.arange(rows.size), (len(prompts), 1))
            top = np.take_along_axis(s, idx, axis=1)
            w = np.clip(top, 1e-6, None) if self.weighted else np.ones_like(top)
            q = self.quality_[rows[idx], j]
            out[:, j] = ((w * q).sum(axis=1) + self.prior * self.mean_quality_[j]) / (
                w.sum(axis=1) + self.prior)
        return out
