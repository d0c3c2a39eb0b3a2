"""A toy third-party router: each model's mean quality on training prompts with and without
the words on which the cheapest model failed most often.

It uses nothing but routecast's public :class:`~routecast.routers.base.Router` contract: the
entry point in ``pyproject.toml`` is all it takes to be fitted, benchmarked and served by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from routecast.routers.base import FloatArray, Router

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset


def _words(prompt: str) -> set[str]:
    return set(prompt.lower().split())


class KeywordRouter(Router):
    """``n_words`` words most associated with the cheapest model's failures split prompts in
    two; a model's predicted quality is its mean on the training prompts of the same side."""

    name = "toy-keywords"

    def __init__(self, n_words: int = 6) -> None:
        self.n_words = n_words

    def _fit(self, dataset: Dataset) -> None:
        cheapest = int(np.argmin(self.mean_cost_usd_))
        failed: dict[str, float] = {}
        for prompt, q in zip(dataset.prompts, dataset.quality[:, cheapest], strict=True):
            for word in _words(prompt):
                failed[word] = failed.get(word, 0.0) + (0.5 - float(q))
        ranked = sorted(failed, key=lambda w: (-failed[w], w))
        self.words_ = sorted(ranked[: self.n_words])
        hard = np.array([self._is_hard(p) for p in dataset.prompts])
        overall = dataset.quality.mean(axis=0)
        self.quality_ = np.vstack([
            dataset.quality[~hard].mean(axis=0) if (~hard).any() else overall,
            dataset.quality[hard].mean(axis=0) if hard.any() else overall,
        ])

    def _is_hard(self, prompt: str) -> bool:
        return bool(_words(prompt) & set(self.words_))

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        rows = np.array([int(self._is_hard(p)) for p in prompts], dtype=np.int64)
        return np.asarray(self.quality_[rows], dtype=np.float64)
