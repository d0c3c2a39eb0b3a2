"""Per-prompt cost prediction: the ``cost_model`` option of the learned routers.

``"mean"`` predicts each model's mean training cost for every prompt, as the base
:meth:`Router.predict_cost` does. ``"knn"`` (the default of ``mlp``, ``mf``, ``sw-ranking``
and ``stack``) predicts a cost per prompt and model from the ``COST_K`` most similar training
prompts (cosine similarity of the encoder rows):

* where the data records tokens (``tokens_in`` and ``tokens_out``), the cost is rebuilt from
  them: per model, the input and output prices per token are fitted to the recorded costs by
  non-negative least squares, the prompt's own input tokens are estimated from its length in
  characters (tokens per character fitted per model, since tokenizers differ), and only the
  output tokens, which are unknown before generating, come from the neighbours;
* otherwise the neighbours' recorded costs are averaged directly.

Why it is the default: a model's cost differs by task (on the RouterBench subset GPT-4 costs
2.7x more on MBPP than on Winogrande, because code answers are long), and the mean hides that
from the policy. Measured while choosing the default (median relative cost error 2 % vs 18-26 %
for the mean), it raised validation AIQ for every router tried on the RouterBench subset
(e.g. mf 0.809 -> 0.812, linear 0.812 -> 0.818) and on LLMRouter's data (mf 0.624 -> 0.629,
linear 0.629 -> 0.637). ``benchmarks/routers.py`` reports both options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast.errors import ConfigError
from routecast.routers._features import similarity
from routecast.routers._fit import FloatArray

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.encoders import Features

COST_MODELS = ("mean", "knn")
#: Neighbours averaged per prediction; costs vary far less than quality within a topic.
COST_K = 20
#: A token-based fit must explain this share of the cost variance, else costs are used as is.
MIN_R2 = 0.9


def check_cost_model(value: str) -> None:
    if value not in COST_MODELS:
        raise ConfigError(f"unknown cost_model {value!r}; use one of {', '.join(COST_MODELS)}")


def _prices(data: Dataset) -> FloatArray | None:
    """Per model ``[usd per input token, usd per output token]`` ``(m, 2)``, or ``None``."""
    if data.tokens_in is None or data.tokens_out is None:
        return None
    from scipy.optimize import nnls

    prices = np.zeros((data.n_models, 2))
    for j in range(data.n_models):
        a = np.column_stack([data.tokens_in[:, j], data.tokens_out[:, j]])
        ok = np.isfinite(a).all(axis=1)
        y = data.cost_usd[ok, j]
        if ok.sum() < 2 or not y.any():
            return None
        # Scale columns so NNLS sees comparable magnitudes; prices are ~1e-6 USD per token.
        norm = np.maximum(np.abs(a[ok]).max(axis=0), 1.0)
        coef, _ = nnls(a[ok] / norm, y)
        fitted = (a[ok] / norm) @ coef
        resid = float(((y - fitted) ** 2).sum())
        total = float(((y - y.mean()) ** 2).sum())
        if total > 0 and 1 - resid / total < MIN_R2:
            return None
        prices[j] = coef / norm
    return prices


class PromptCost:
    """Mixin: ``cost_model`` option and :meth:`predict_cost` per prompt (see module doc).

    The router calls :meth:`_fit_cost` in ``_fit`` with its encoder's training rows (L2-
    normalised, dense or sparse) and implements :meth:`_cost_rows` for new prompts.
    """

    cost_model: str
    mean_cost_usd_: FloatArray

    if TYPE_CHECKING:
        def _check_fitted(self) -> None: ...

    def _fit_cost(self, data: Dataset, rows: Features) -> None:
        check_cost_model(self.cost_model)
        if self.cost_model == "mean":
            return
        prices = _prices(data)
        self.cost_rows_: Any = rows
        if prices is None:
            # Sparse outcomes: an unknown cost counts as the model's mean (known) cost.
            self.cost_target_: FloatArray = np.where(np.isnan(data.cost_usd),
                                                     self.mean_cost_usd_, data.cost_usd)
            self.cost_prices_: FloatArray = np.zeros((0, 2))
            self.tokens_per_char_: FloatArray = np.zeros(0)
        else:
            assert data.tokens_in is not None and data.tokens_out is not None
            self.cost_target_ = np.nan_to_num(data.tokens_out)
            self.cost_prices_ = prices
            chars = np.array([max(1, len(p)) for p in data.prompts], dtype=np.float64)
            self.tokens_per_char_ = np.nansum(data.tokens_in, axis=0) / chars.sum()

    def _cost_rows(self, prompts: Sequence[str]) -> Features:
        raise NotImplementedError

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        """Expected USD cost per prompt and model: the training mean, or per prompt (kNN)."""
        self._check_fitted()
        n = len(prompts)
        if self.cost_model == "mean" or n == 0:
            return np.tile(self.mean_cost_usd_, (n, 1))
        sim = similarity(self, "cost_rows_", self._cost_rows(prompts))
        k = min(COST_K, sim.shape[1])
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.clip(np.take_along_axis(sim, idx, axis=1), 1e-6, None)
        target = np.einsum("nk,nkm->nm", w, self.cost_target_[idx]) / w.sum(axis=1,
                                                                         keepdims=True)
        if not self.cost_prices_.size:
            return np.asarray(target, dtype=np.float64)
        chars = np.array([max(1, len(p)) for p in prompts], dtype=np.float64)[:, None]
        tokens_in = chars * self.tokens_per_char_
        return np.asarray(tokens_in * self.cost_prices_[:, 0] + target * self.cost_prices_[:, 1],
                          dtype=np.float64)

    def add_model_cost(self, mean_cost: float) -> None:
        """Extend the cost model by one model whose cost is known only on average.

        It is assumed to vary across prompts as the existing models do on average, each
        relative to its own mean (e.g. dearer on tasks with long answers).
        """
        if self.cost_model == "mean":
            return
        costs = self.cost_target_
        if self.cost_prices_.size:  # token targets: compare models in USD of output
            costs = costs * self.cost_prices_[:, 1]
        means = costs.mean(axis=0)
        rel = costs / np.where(means > 0, means, 1.0)
        column = mean_cost * rel.mean(axis=1)
        if self.cost_prices_.size:
            # No input price and an output "price" of 1 make the stored column USD itself.
            self.cost_prices_ = np.vstack([self.cost_prices_, [0.0, 1.0]])
            self.tokens_per_char_ = np.append(self.tokens_per_char_, 0.0)
        self.cost_target_ = np.column_stack([self.cost_target_, column])
