"""MLP quality predictor: one hidden layer shared by every model, one sigmoid output per model.

Unlike ``linear`` (one independent regression per model), the hidden layer is shared, so what
one model's outcomes teach about a prompt (hard maths, long code) helps predict the others.
Inputs are the dense features of ``_features.py`` (TF-IDF reduced by LSA, or MiniLM).

Training: full-batch L-BFGS on the mean soft cross-entropy plus ``alpha / (2 n)`` times the
squared norm of both weight matrices *and the hidden biases*, from ``n_init`` seeded starts
whose predictions are averaged (a small ensemble: each start lands in a different local
optimum, and averaging them lowers the variance that decides routing). Pure numpy and scipy;
no torch.

Why the inputs are standardised and the hidden biases penalised: without both, this network
was a linear model in disguise, identical to ``mf``. LSA components are uncentred (the first
is close to the mean TF-IDF direction, positive on every prompt), so every ReLU unit was
either active on every prompt or on none; an always-active layer is linear, ``z W1 W2``, and
an L2 penalty on both factors of a product is the nuclear norm of the product - the very
problem ``mf`` solves (``P v^T`` with L2 on both). Measured on the RouterBench subset: all 32
units of each start were always-on or dead, both routers' ``W`` had the same singular values
(7.53, 1.54, then 0), and their predictions differed by at most 0.0009 with the same choice
on every test prompt. Centred, unit-variance inputs make units split the prompts, and a
penalised bias stops a unit from buying its way back into the linear regime for free.
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


#: Per-prompt L2 penalties ``alpha`` picks from when it is ``None`` (see :class:`MLPRouter`).
PENALTY_GRID = (0.03, 0.1, 0.3)


class MLPRouter(DenseFeatures, PromptCost, Router):
    """``P(quality | prompt)`` for every model from one shared ReLU hidden layer.

    ``hidden`` units; L2 strength ``alpha`` in prompts' worth of evidence (the penalty on the
    mean loss is ``alpha / n_prompts``, as in ``mf``), or ``None``: then the per-prompt
    penalty is picked from :data:`PENALTY_GRID` by the log-loss on a seeded fifth of the
    training prompts (one start each), and the net is refitted on all of them (``alpha_``
    records the choice). Why a search: with standardised inputs the best penalty per prompt
    was about the same on data sets of 180 and 1,764 prompts (0.1-0.2), not the same in
    prompts' worth, and a penalty above a data set's threshold collapses the net to its base
    rates. ``dim`` LSA components for sparse encoders; ``n_init`` averaged starts, at most
    ``max_iter`` L-BFGS iterations each.
    """

    name = "mlp"

    def __init__(self, hidden: int = 32, alpha: float | None = None,
                 encoder: str | Encoder = "tfidf", dim: int = 128, n_init: int = 3,
                 max_iter: int = 200, seed: int = 0,
                 cost_model: str = "knn") -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.encoder = encoder
        self.dim = dim
        self.n_init = n_init
        self.max_iter = max_iter
        self.seed = seed
        self.cost_model = cost_model

    def _fit(self, dataset: Dataset) -> None:
        if self.hidden < 1 or self.n_init < 1 or not (self.alpha is None or self.alpha >= 0):
            raise ConfigError("mlp needs hidden >= 1, n_init >= 1 and alpha >= 0 (or None), "
                              f"got hidden={self.hidden}, n_init={self.n_init}, "
                              f"alpha={self.alpha}")
        z, rows = self._fit_features(dataset.prompts, self.encoder, self.dim, self.seed)
        # Standardised inputs: see the module docstring (why this is not a linear model).
        self.center_: FloatArray = np.asarray(z.mean(axis=0), dtype=np.float64)
        self.scale_: FloatArray = np.asarray(z.std(axis=0) + 1e-8, dtype=np.float64)
        z = (z - self.center_) / self.scale_
        n = dataset.n_prompts
        self.alpha_: float = (float(self.alpha) if self.alpha is not None
                              else n * self._pick_penalty(z, dataset.quality))
        alpha = self.alpha_ / n  # see MFRouter: prompts' worth of evidence
        nets = [_fit_net(z, dataset.quality, self.hidden, alpha, self.max_iter,
                         seed=self.seed + s) for s in range(self.n_init)]
        # Stacked per start, so the learned state stays plain arrays.
        self.w1_: FloatArray = np.stack([n[0] for n in nets])
        self.b1_: FloatArray = np.stack([n[1] for n in nets])
        self.w2_: FloatArray = np.stack([n[2] for n in nets])
        self.b2_: FloatArray = np.stack([n[3] for n in nets])
        self._fit_cost(dataset, rows)

    def _pick_penalty(self, z: FloatArray, y: FloatArray) -> float:
        """The per-prompt penalty of :data:`PENALTY_GRID` with the lowest log-loss on a seeded
        fifth of the rows, one start fitted on the rest for each (the largest on ties)."""
        n = len(z)
        if n < 20:  # too few prompts to hold any out
            return PENALTY_GRID[len(PENALTY_GRID) // 2]
        order = np.random.default_rng(self.seed).permutation(n)
        held, rest = order[: n // 5], order[n // 5:]
        losses = []
        for penalty in PENALTY_GRID:
            # Half the iterations: enough to rank three penalties, and the fit time stays
            # within ~1.5x of a fixed penalty's.
            w1, b1, w2, b2 = _fit_net(z[rest], y[rest], self.hidden, penalty,
                                      max(1, self.max_iter // 2), seed=self.seed)
            logits = np.maximum(z[held] @ w1 + b1, 0.0) @ w2 + b2
            losses.append(soft_bce(logits, y[held])[0])
        best = min(losses)
        return max(p for p, loss in zip(PENALTY_GRID, losses, strict=True)
                   if loss <= best + 1e-9)

    def _cost_rows(self, prompts: Sequence[str]) -> Features:
        return self.encoder_.transform(list(prompts))

    def hidden_layer(self, prompts: Sequence[str]) -> FloatArray:
        """Hidden-layer activations per start, ``(n_init, n, hidden)``."""
        self._check_fitted()
        z, _ = self._features(prompts)
        z = (z - self.center_) / self.scale_
        h = np.maximum(np.einsum("nd,sdh->snh", z, self.w1_) + self.b1_[:, None, :], 0.0)
        return np.asarray(h, dtype=np.float64)

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        self._check_fitted()
        if len(prompts) == 0:
            return np.empty((0, len(self.models_)))
        p = sigmoid(np.einsum("snh,shm->snm", self.hidden_layer(prompts), self.w2_)
                    + self.b2_[:, None, :])
        return np.asarray(p.mean(axis=0), dtype=np.float64)

    def _add_model(self, labels: Labels, prior: Prior) -> None:
        """One more output unit per start on the fixed hidden layer, centred on the prior."""
        from routecast.routers.fewshot import fit_new_output

        outs = [fit_new_output(h, labels.quality, prior, self.w2_[s].T, self.b2_[s])
                for s, h in enumerate(self.hidden_layer(labels.prompts))]
        self.w2_ = np.concatenate([self.w2_, np.stack([c for c, _ in outs])[:, :, None]],
                                  axis=2)
        self.b2_ = np.column_stack([self.b2_, [b for _, b in outs]])


def _fit_net(z: FloatArray, y: FloatArray, hidden: int, alpha: float, max_iter: int,
             seed: int) -> list[FloatArray]:
    n, d = z.shape
    m = y.shape[1]
    rng = np.random.default_rng(seed)
    start = [rng.normal(0.0, np.sqrt(2.0 / d), (d, hidden)), np.zeros(hidden),
             rng.normal(0.0, np.sqrt(1.0 / hidden), (hidden, m)),
             # Start at each model's base rate, so early iterations learn the prompt signal.
             logit(np.clip(y.mean(axis=0), 0.02, 0.98))]

    def fun(params: list[FloatArray]) -> tuple[float, list[FloatArray]]:
        w1, b1, w2, b2 = params
        a = z @ w1 + b1
        h = np.maximum(a, 0.0)
        loss, g = soft_bce(h @ w2 + b2, y)
        g /= n
        dh = (g @ w2.T) * (a > 0)
        reg = 0.5 * alpha * (float((w1 * w1).sum()) + float((b1 * b1).sum())
                             + float((w2 * w2).sum()))
        return (loss / n + reg, [z.T @ dh + alpha * w1, dh.sum(axis=0) + alpha * b1,
                                 h.T @ g + alpha * w2, g.sum(axis=0)])

    return minimize(fun, start, max_iter=max_iter)
