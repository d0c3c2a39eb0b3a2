"""A per-prompt cost estimate fitted on the costs the learning loop's labels recorded.

A router predicts each model's *mean* training cost unless it has a per-prompt cost model of
its own (the linear router has none). The mean hides what makes a prompt dear: on the
RouterBench subset GPT-4 costs 2.7x more on MBPP (long code answers) than on Winogrande. When
the traffic shifts from short answers to long ones, a policy calibrated to a quality target on
means keeps its cost weight and pays for the dear model's long answers as if they were short.

Every label of a served or shadowed answer records what the answer cost (``cost_usd``), so the
learner can fit the cost per prompt itself. Costs are sparse (a prompt has the costs of the
models labelled on it), so the model is pooled over models: a prompt's *cost factor* is the
mean, over the models with a known cost on it, of that cost over the model's mean cost; a
ridge regression of the log factor on the prompt's features (the router's TF-IDF rows) predicts
it for new prompts, and model ``j``'s cost on prompt ``x`` is ``mean_j * factor(x)``. Answers
are long or short for the prompt's sake (code, essays) more than for the model's, which is what
the pooling assumes. Predicting one prompt is one sparse dot product (no scipy), like the linear
router's own prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset, FloatArray
from routecast.routers.base import Router

#: Ridge penalty of the log-factor regression (TF-IDF rows have unit norm).
ALPHA = 1.0
#: Prompts with a known cost needed before a per-prompt estimate replaces the means.
MIN_PROMPTS = 30
#: Predicted factors are clipped to this range (a typo-length prompt does not cost nothing).
FACTOR_RANGE = (0.1, 10.0)


class PromptCostModel:
    """``mean_cost_usd[j] * factor(prompt)``; see the module docstring."""

    def __init__(self, encoder: Any, coef: FloatArray, intercept: float,
                 mean_cost_usd: FloatArray) -> None:
        self.encoder = encoder
        self.coef = coef
        self.intercept = intercept
        self.mean_cost_usd = mean_cost_usd

    @classmethod
    def fit(cls, encoder: Any, data: Dataset, mean_cost_usd: FloatArray,
            alpha: float = ALPHA) -> PromptCostModel | None:
        """Fit on ``data``'s known costs with ``encoder`` (fitted); ``None`` when fewer than
        :data:`MIN_PROMPTS` prompts have a known, positive cost."""
        from sklearn.linear_model import Ridge

        means = np.where(mean_cost_usd > 0, mean_cost_usd, np.nan)
        rel = data.cost_usd / means
        known = np.isfinite(rel) & (rel > 0)
        rows = np.flatnonzero(known.any(axis=1))
        if rows.size < MIN_PROMPTS:
            return None
        factor = np.array([rel[i, known[i]].mean() for i in rows])
        x = encoder.transform([data.prompts[i] for i in rows])
        reg = Ridge(alpha=alpha).fit(x, np.log(factor))
        return cls(encoder, np.asarray(reg.coef_, dtype=np.float64).ravel(),
                   float(reg.intercept_), np.nan_to_num(np.asarray(mean_cost_usd,
                                                                   dtype=np.float64)))

    def factor(self, prompts: Sequence[str]) -> FloatArray:
        """Each prompt's predicted cost factor (1: a typical prompt)."""
        row = getattr(self.encoder, "transform_row", None)
        if row is not None:
            z = np.empty(len(prompts))
            for i, prompt in enumerate(prompts):
                cols, values = row(prompt)
                z[i] = self.coef.take(cols) @ values
        else:
            z = np.asarray(self.encoder.transform(list(prompts)) @ self.coef).ravel()
        return np.asarray(np.clip(np.exp(z + self.intercept), *FACTOR_RANGE), dtype=np.float64)

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        """``(len(prompts), n_models)`` expected USD cost."""
        return np.asarray(np.outer(self.factor(prompts), self.mean_cost_usd), dtype=np.float64)


class PromptCostRouter(Router):
    """``inner``'s quality predictions with costs per prompt from ``cost``. Not registered:
    internal to the learner."""

    name = "prompt-cost"

    def __init__(self, inner: Router, cost: PromptCostModel) -> None:
        self.inner = inner
        self.cost = cost

    def _fit(self, dataset: Dataset) -> None:
        pass

    def ready(self) -> PromptCostRouter:
        self.models_ = tuple(self.inner.models_)
        self.mean_cost_usd_ = self.cost.mean_cost_usd
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        return self.inner.predict(prompts)

    def predict_cost(self, prompts: Sequence[str]) -> FloatArray:
        return self.cost.predict(prompts)
