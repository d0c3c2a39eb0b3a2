"""Similarity-weighted Bradley-Terry ranking, RouteLLM's ``sw_ranking`` generalised to N models.

RouteLLM's router, per incoming prompt, weighs every training comparison ("battle") by the
prompt's similarity to the battle's prompt, ``weight = 10 * 10 ** (sim / max_sim)``, fits
Bradley-Terry (Elo) ratings to the weighted battles, and routes on the strong model's win rate.

routecast derives the battles from recorded outcomes. On each training prompt, every pair of
models plays once: the better outcome wins, a tie counts half to each (RouteLLM's tie rule;
for fractional quality the win share is ``(1 + q_i - q_j) / 2``). To turn ratings into the
quality a policy needs, one extra player, the **pass bar**, plays every model on every prompt
and loses with share ``q_j``: ``P(quality_j | x) = sigmoid(theta_j - theta_bar)``. Ratings are
fitted per prompt by Newton's method on the weighted log-likelihood with a Gaussian prior of
precision ``prior`` on each rating (it keeps a model that won every weighted battle finite).

Weights are ``base ** (sim / max_sim)`` (RouteLLM's rule, whose base is 10); the counts are
scaled so that they sum to the Kish effective number of weighted prompts, which makes
``prior`` mean the same at every base. The default base is 1000, not 10: with 10 every
training prompt weighs at least a tenth of the nearest, so the ratings are nearly global,
which suits one chat distribution but not a mix of tasks. On the RouterBench subset's
validation split AIQ was 0.807 at base 10, 0.809 at 100, 0.815 at 1000 and 0.808 at 10^4.

A consequence worth knowing: with the tie rule above, the weighted battle counts are a linear
function of the similarity-weighted mean quality of each model, so the ranking is a joint
(Bradley-Terry) reading of those means, not extra data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.encoders import Encoder, Features, make_encoder
from routecast.errors import ConfigError
from routecast.routers._features import similarity
from routecast.routers._fit import FloatArray, logit, sigmoid
from routecast.routers.base import Router
from routecast.routers.cost import PromptCost

if TYPE_CHECKING:
    from routecast.routers.fewshot import Labels, Prior

#: Newton steps per prompt; the log-likelihood is concave, so this is far past convergence.
NEWTON_STEPS = 12


class SWRankingRouter(PromptCost, Router):
    """Per-prompt Bradley-Terry ratings from similarity-weighted, outcome-derived battles.

    ``base`` sets how much the most similar training prompts outweigh the least similar ones
    (``base`` times); ``prior`` is the precision of the Gaussian prior on ratings.
    """

    name = "sw-ranking"

    def __init__(self, encoder: str | Encoder = "tfidf", base: float = 1000.0,
                 prior: float = 1.0, cost_model: str = "knn") -> None:
        self.encoder = encoder
        self.base = base
        self.prior = prior
        self.cost_model = cost_model

    def _fit(self, dataset: Dataset) -> None:
        if not self.base >= 1 or not self.prior > 0:
            raise ConfigError(f"sw-ranking needs base >= 1 and prior > 0, got base={self.base},"
                              f" prior={self.prior}")
        self.encoder_: Encoder = make_encoder(self.encoder).fit(dataset.prompts)
        self.features_: Any = self.encoder_.transform(dataset.prompts)
        self.quality_: FloatArray = np.asarray(dataset.quality, dtype=np.float64)
        self._fit_cost(dataset, self.features_)

    def _cost_rows(self, prompts: Sequence[str]) -> Features:
        return self.encoder_.transform(list(prompts))

    def weights(self, prompts: Sequence[str]) -> FloatArray:
        """Weight of every training prompt for every prompt, ``(n, n_train)``, rows sum to 1."""
        self._check_fitted()
        return self._weights(self.encoder_.transform(list(prompts)))

    def _weights(self, rows: Features) -> FloatArray:
        sim = similarity(self, "features_", rows)
        top = sim.max(axis=1, keepdims=True)
        # A prompt that shares nothing with the training set weighs every battle equally.
        rel = np.where(top > 1e-12, sim / np.where(top > 1e-12, top, 1.0), 0.0)
        w = np.power(float(self.base), rel)
        return np.asarray(w / w.sum(axis=1, keepdims=True), dtype=np.float64)

    def ratings(self, prompts: Sequence[str]) -> FloatArray:
        """Bradley-Terry ratings ``theta_j - theta_bar`` (logit scale), shape ``(n, m)``.

        Higher is better; a model's difference to another is the log-odds that it wins their
        battle on prompts like this one.
        """
        self._check_fitted()
        return self._ratings(self.encoder_.transform(list(prompts)))

    def _ratings(self, rows: Features) -> FloatArray:
        w = self._weights(rows)
        n_eff = 1.0 / np.sum(w * w, axis=1)  # Kish effective sample size
        return bradley_terry(w @ self.quality_, n_eff, self.prior)

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        if len(prompts) == 0:
            return np.empty((0, len(self.models_)))
        return sigmoid(self.ratings(prompts))

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        """Impute the new model's battles on the training prompts; append the labelled ones."""
        from routecast.routers.fewshot import impute_and_append

        rows = self.encoder_.transform(labels.prompts)
        self.features_, self.quality_ = impute_and_append(
            self.features_, self.quality_, rows, labels, prior,
            lambda r: sigmoid(self._ratings(r)))

def bradley_terry(mean_q: FloatArray, n_eff: FloatArray, prior: float) -> FloatArray:
    """Ratings of ``m`` models against a pass bar (fixed at 0), one fit per row of ``mean_q``.

    Row ``r`` describes ``n_eff[r]`` weighted prompts on which model ``j`` reached mean quality
    ``mean_q[r, j]``. Battles: model ``i`` beats ``j`` with total weight
    ``n (1 + q_i - q_j) / 2``, beats the bar with weight ``n q_i`` and loses to it with
    ``n (1 - q_i)``. Maximises their Bradley-Terry log-likelihood minus ``prior/2 ||theta||^2``.
    """
    q = np.clip(np.asarray(mean_q, dtype=np.float64), 0.0, 1.0)
    n = np.asarray(n_eff, dtype=np.float64)[:, None]
    m = q.shape[1]
    win = n[:, :, None] * 0.5 * (1.0 + q[:, :, None] - q[:, None, :])  # win[r, i, j]
    eye = np.eye(m, dtype=bool)
    win[:, eye] = 0.0
    games = win + np.swapaxes(win, 1, 2)  # = n off the diagonal
    theta = logit(np.clip(q, 0.01, 0.99))
    for _ in range(NEWTON_STEPS):
        diff = theta[:, :, None] - theta[:, None, :]
        s = sigmoid(diff)
        s_bar = sigmoid(theta)
        grad = ((win - games * s).sum(axis=2) + n * (q - s_bar) - prior * theta)
        curv = games * s * (1.0 - s)
        hess = -curv
        diag = curv.sum(axis=2) + n * s_bar * (1.0 - s_bar) + prior
        hess[:, np.arange(m), np.arange(m)] = diag
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        # Damp very long steps (far-off starts); near the optimum this never binds.
        theta = theta + np.clip(step, -4.0, 4.0)
    return np.asarray(theta, dtype=np.float64)
