"""Reference routers that learn nothing per prompt: random, best single, cheapest, oracle.

They bracket every learned router: a learned router is worth its fit only if it beats the
convex combination of single models (the "zero router"), and its headroom is the oracle.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.routers.base import FloatArray, Router

if TYPE_CHECKING:
    from routecast.routers.fewshot import Labels, Prior


class RandomRouter(Router):
    """Predicts uniform random quality, so any policy picks at random (cost weight aside).

    The draw is seeded by ``seed`` and the prompt text, so it is reproducible per prompt.
    """

    name = "random"
    accepts_sparse = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, dataset: Dataset) -> None:
        pass

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        m = len(self.models_)
        out = np.empty((len(prompts), m))
        for i, p in enumerate(prompts):
            rng = np.random.default_rng([self.seed, zlib.crc32(p.encode("utf-8"))])
            out[i] = rng.random(m)
        return out

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        pass  # draws one value per model it knows: the name is all it needs


class BestSingleRouter(Router):
    """Predicts each model's mean training quality for every prompt.

    On sparse outcomes, each model's mean over its labelled prompts, shrunk towards the mean
    of all labels by ``prior`` pseudo-labels (0: none), so that a model seen twice is not
    taken at its word; a model with no label gets the mean of all labels.
    """

    name = "best-single"
    accepts_sparse = True

    def __init__(self, prior: float = 0.0) -> None:
        self.prior = prior

    def _fit(self, dataset: Dataset) -> None:
        if dataset.is_complete():
            self.mean_quality_: FloatArray = dataset.mean_quality()
            return
        have = dataset.labelled
        overall = float(np.nanmean(dataset.quality)) if have.any() else 0.5
        total = np.where(have, dataset.quality, 0.0).sum(axis=0)
        self.mean_quality_ = (total + self.prior * overall) / np.maximum(
            have.sum(axis=0) + self.prior, 1e-12)
        self.mean_quality_[have.sum(axis=0) == 0] = overall

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        return np.tile(self.mean_quality_, (len(prompts), 1))

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        self.mean_quality_ = np.append(self.mean_quality_, labels.quality.mean())


class CheapestRouter(Router):
    """Always the model with the lowest mean training cost, whatever the policy.

    It predicts the same quality for every model, so the policy's tie-break (cheaper wins)
    decides, at any cost weight.
    """

    name = "cheapest"
    accepts_sparse = True

    def _fit(self, dataset: Dataset) -> None:
        self.quality_: float = float(dataset.mean_quality()[int(np.argmin(self.mean_cost_usd_))])

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        return np.full((len(prompts), len(self.models_)), self.quality_)

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        pass  # one constant for all models: the new model's cost decides


class OracleRouter(Router):
    """Knows the true outcomes of the prompts it was fitted on: evaluation only.

    Fit it on the data you evaluate on. With any small positive cost weight it picks the
    cheapest model of best quality per prompt (the "cheapest correct" oracle). Prompts that
    appear more than once get the mean of their outcomes.
    """

    name = "oracle"
    evaluation_only = True

    def _fit(self, dataset: Dataset) -> None:
        rows: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(dataset.prompts):
            rows[p].append(i)
        self.index_: dict[str, int] = {p: k for k, p in enumerate(rows)}
        self.quality_: FloatArray = np.stack([dataset.quality[r].mean(axis=0)
                                              for r in rows.values()])
        self.cost_usd_: FloatArray = np.stack([dataset.cost_usd[r].mean(axis=0)
                                               for r in rows.values()])

    def _rows(self, prompts: Sequence[str]) -> list[int]:
        self._check_fitted()
        try:
            return [self.index_[p] for p in prompts]
        except KeyError as e:
            raise ConfigError(
                f"the oracle only knows prompts it was fitted on; {str(e)[:60]}... is new. "
                "Fit it on the evaluation data (it is for evaluation only)") from None

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        rows = self._rows(prompts)  # checks fitted before touching learned attributes
        return self.quality_[rows]

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        rows = self._rows(prompts)
        return self.cost_usd_[rows]
