"""Matrix factorisation router, RouteLLM's ``mf`` generalised from two models to N.

RouteLLM scores a (strong, weak) pair as ``w . ((v_strong - v_weak) * P e(x))``: learned model
embeddings ``v`` meet a learned projection ``P`` of the prompt embedding ``e(x)``, trained on
pairwise preferences. With N models and per-model outcomes, routecast predicts each model's
quality directly:

    logit P(quality_j | x) = b_j + v_j . (P^T z(x))

with ``z(x)`` the dense prompt features of ``_features.py`` (LSA of TF-IDF, or MiniLM),
``P`` (``dim x k``) shared by all models, a ``k``-dimensional embedding ``v_j`` and a bias
``b_j`` per model, fitted jointly by L-BFGS on the soft cross-entropy with an L2 penalty.
Differences from RouteLLM: pointwise outcomes instead of pairwise preferences (a pair's
preference is the difference of two logits, so a pair's ranking is still a score
``(b_s - b_w) + (v_s - v_w) . P^T z``); no normalisation of ``v`` and no separate classifier
vector (both are absorbed into ``v``); a per-model bias, which N models need for absolute
quality; offline features instead of OpenAI embeddings.

What this model is, as an estimator: a linear model of ``z`` with a low-rank weight matrix
``W = P v^T`` (rank <= ``k``), and since the L2 penalty on both factors equals, at its
optimum, the nuclear norm of ``W``, fitting it solves a convex nuclear-norm-regularised
logistic regression whenever the solution's rank stays below ``k`` (on the RouterBench subset
it has rank 2). That is also what RouteLLM's ``mf`` is once its prompt embedding is fixed.
The ``mlp`` router used to reduce to this same problem; see its docstring.

Because ``P`` is shared, a new model needs only its own ``v`` and ``b``: :meth:`_add_model`
fits those ``k + 1`` numbers from a few labelled prompts, centred on a prior drawn from the
existing models (see ``fewshot.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from routecast.data.dataset import Dataset
from routecast.encoders import Encoder, Features
from routecast.errors import ConfigError
from routecast.routers._features import DenseFeatures
from routecast.routers._fit import FloatArray, logit, minimize, sigmoid, soft_bce
from routecast.routers.base import Router
from routecast.routers.cost import PromptCost

if TYPE_CHECKING:
    from routecast.routers.fewshot import Labels, Prior


class MFRouter(DenseFeatures, PromptCost, Router):
    """Low-rank quality model: per-model embeddings (size ``k``) times projected prompts.

    ``alpha`` is the L2 strength on ``P`` and ``v`` in prompts' worth of evidence: the penalty
    on the *mean* loss is ``alpha / n_prompts``, so shrinkage fades as data grows (weight decay
    read as a Gaussian prior). A fixed per-sample penalty had to be retuned per data set (best
    validation AIQ at 0.01 on 1,764 RouterBench prompts but 0.003 on 8,425 MMLU prompts: both
    about 20 / n). ``dim`` LSA components for sparse encoders; at most ``max_iter`` L-BFGS
    iterations from a start seeded by ``seed``.
    """

    name = "mf"
    #: Sparse outcomes fit natively: the loss runs over the labelled pairs only.
    accepts_sparse = True

    def __init__(self, k: int = 16, alpha: float = 20.0, encoder: str | Encoder = "tfidf",
                 dim: int = 128, max_iter: int = 300, seed: int = 0,
                 cost_model: str = "knn") -> None:
        self.k = k
        self.alpha = alpha
        self.encoder = encoder
        self.dim = dim
        self.max_iter = max_iter
        self.seed = seed
        self.cost_model = cost_model

    def _fit(self, dataset: Dataset) -> None:
        if self.k < 1 or not self.alpha >= 0:
            raise ConfigError(f"mf needs k >= 1 and alpha >= 0, got k={self.k}, "
                              f"alpha={self.alpha}")
        z, rows = self._fit_features(dataset.prompts, self.encoder, self.dim, self.seed)
        self.proj_, self.model_emb_, self.bias_ = fit_mf(
            z, dataset.quality, self.k, self.alpha / dataset.n_prompts, self.max_iter,
            self.seed)
        self._fit_cost(dataset, rows)

    def _cost_rows(self, prompts: Sequence[str]) -> Features:
        return self.encoder_.transform(list(prompts))

    def prompt_embedding(self, prompts: Sequence[str]) -> FloatArray:
        """``P^T z(x)``, shape ``(n, k)``: the prompt side of the factorisation."""
        self._check_fitted()
        z, _ = self._features(prompts)
        return np.asarray(z @ self.proj_, dtype=np.float64)

    def predict_logits(self, prompts: Sequence[str]) -> FloatArray:
        """``b_j + v_j . P^T z(x)`` for every prompt and model, shape ``(n, m)``."""
        if len(prompts) == 0:
            self._check_fitted()
            return np.empty((0, len(self.models_)))
        return np.asarray(self.prompt_embedding(prompts) @ self.model_emb_.T + self.bias_,
                          dtype=np.float64)

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        return sigmoid(self.predict_logits(prompts))

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        """Fit only the new model's embedding and bias; ``P`` and the others stay fixed."""
        from routecast.routers.fewshot import fit_new_output

        coef, bias = fit_new_output(self.prompt_embedding(labels.prompts), labels.quality,
                                    prior, self.model_emb_, self.bias_)
        self.model_emb_ = np.vstack([self.model_emb_, coef])
        self.bias_ = np.append(self.bias_, bias)


def fit_mf(z: FloatArray, y: FloatArray, k: int, alpha: float, max_iter: int,
           seed: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(P, v, b)`` fitted on dense features ``z`` and soft outcomes ``y``.

    ``alpha`` here is the penalty on the mean loss (the router passes ``alpha / n``).
    """
    n, d = z.shape
    m = y.shape[1]
    rng = np.random.default_rng(seed)
    # Sparse outcomes (NaN = unlabelled) enter the loss with weight 0.
    known = ~np.isnan(y)
    mask = None if known.all() else known.astype(np.float64)
    if mask is not None:
        col = _col_means(y, float(np.nanmean(y)) if known.any() else 0.5)
        y = np.where(known, y, 0.0)
        n = max(1, round(float(known.sum()) / m))  # labels per model, as a dense fit counts
    else:
        col = y.mean(axis=0)
    # Small random start: at zero the gradients of P and v vanish together (a saddle).
    start = [rng.normal(0.0, 0.1, (d, k)), rng.normal(0.0, 0.1, (m, k)),
             logit(np.clip(col, 0.02, 0.98))]

    def fun(params: list[FloatArray]) -> tuple[float, list[FloatArray]]:
        proj, emb, bias = params
        e = z @ proj
        loss, g = soft_bce(e @ emb.T + bias, y, mask)
        g /= n
        reg = 0.5 * alpha * (float((proj * proj).sum()) + float((emb * emb).sum()))
        return (loss / n + reg,
                [z.T @ (g @ emb) + alpha * proj, g.T @ e + alpha * emb, g.sum(axis=0)])

    proj, emb, bias = minimize(fun, start, max_iter=max_iter)
    return proj, emb, bias


def _col_means(y: FloatArray, fill: float) -> FloatArray:
    """Per-column mean over non-NaN entries; ``fill`` for an all-NaN column."""
    known = ~np.isnan(y)
    total = np.where(known, y, 0.0).sum(axis=0)
    count = known.sum(axis=0)
    return np.asarray(np.where(count > 0, total / np.maximum(count, 1), fill), dtype=np.float64)
