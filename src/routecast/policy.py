"""The policy: turn predicted quality and cost into a choice of model.

``choose(quality, cost) = argmax_j (quality[:, j] - cost_weight * cost[:, j])``

Ties go to the cheaper model, so ``cost_weight = 0`` picks the cheapest of the best, and
``cost_weight = inf`` picks the cheapest model (ties to the better one). The constructors solve
for the weight on *calibration* data (the validation split, never train or test):

* :meth:`Policy.for_budget` - the best realised quality whose mean cost per query fits a budget;
* :meth:`Policy.for_quality` - the cheapest weight whose realised quality reaches a fraction of
  the best single model's quality on the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from routecast.errors import CalibrationError, ConfigError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.routers.base import Router

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def choose(quality: FloatArray, cost: FloatArray, cost_weight: float) -> IntArray:
    """Column chosen per row: the argmax of ``quality - cost_weight * cost``, ties to cheaper."""
    quality = np.asarray(quality, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if quality.shape != cost.shape or quality.ndim != 2:
        raise ConfigError(f"quality {quality.shape} and cost {cost.shape} must both be (n, m)")
    if math.isinf(cost_weight):
        lo = cost.min(axis=1, keepdims=True)
        pick = np.where(cost <= lo, quality, -np.inf).argmax(axis=1)
        return np.asarray(pick, dtype=np.int64)
    score = quality - cost_weight * cost
    best = score.max(axis=1, keepdims=True)
    tol = 1e-12 * np.maximum(1.0, np.abs(best))
    return np.asarray(np.where(score >= best - tol, cost, np.inf).argmin(axis=1), dtype=np.int64)


def weight_grid(cost: FloatArray, n: int = 160) -> FloatArray:
    """Cost weights spanning "ignore cost" to "cheapest always", scaled to the data's costs.

    A weight ``w`` trades one unit of quality for ``1/w`` dollars, so the useful range is set
    by the cost scale: from ``1e-3`` to ``1e5`` quality units per mean cost of the priciest
    model, log-spaced, plus 0 and infinity at the ends.
    """
    scale = float(np.max(np.mean(cost, axis=0))) if np.size(cost) else 1.0
    scale = scale if scale > 0 else 1.0
    inner = np.geomspace(1e-3, 1e5, n) / scale
    return np.concatenate([[0.0], inner, [np.inf]])


@dataclass(frozen=True)
class Policy:
    """A fixed trade-off between quality and dollars; see the module docstring."""

    cost_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (self.cost_weight >= 0):  # also rejects NaN
            raise ConfigError(f"cost_weight must be >= 0, got {self.cost_weight}")

    def choose(self, quality: FloatArray, cost: FloatArray) -> IntArray:
        return choose(quality, cost, self.cost_weight)

    # -- calibration -----------------------------------------------------------------------

    @classmethod
    def for_budget(cls, router: Router, data: Dataset, budget_usd: float) -> Policy:
        """Best realised quality on ``data`` with mean cost per query <= ``budget_usd``."""
        if not budget_usd >= 0:
            raise ConfigError(f"budget must be >= 0 USD per query, got {budget_usd}")
        weights, q, c = _sweep(router, data)
        ok = c <= budget_usd * (1 + 1e-9)
        if not ok.any():
            raise CalibrationError(
                f"no operating point on {data.name!r} costs <= {budget_usd:.3g} USD per query "
                f"(the cheapest costs {c.min():.3g}); raise the budget")
        # Highest quality within budget; among equals, the cheaper point.
        best = max(np.flatnonzero(ok), key=lambda i: (q[i], -c[i]))
        return cls(float(weights[best]))

    @classmethod
    def for_quality(cls, router: Router, data: Dataset, fraction: float = 0.95) -> Policy:
        """Cheapest point on ``data`` whose quality >= ``fraction`` x the best single model's."""
        if not 0 < fraction <= 1.5:
            raise ConfigError(f"quality fraction must lie in (0, 1.5], got {fraction}")
        target = fraction * float(np.max(data.mean_quality()))
        weights, q, c = _sweep(router, data)
        ok = q >= target - 1e-12
        if not ok.any():
            raise CalibrationError(
                f"no operating point on {data.name!r} reaches {fraction:.0%} of the best single "
                f"model's quality ({target:.4f}); the most it reaches is {q.max():.4f}")
        best = min(np.flatnonzero(ok), key=lambda i: (c[i], -q[i]))
        return cls(float(weights[best]))


def _sweep(router: Router, data: Dataset) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Realised mean quality and cost on ``data`` for every weight of the grid."""
    if tuple(router.models_) != tuple(data.models):
        raise ConfigError(
            f"the router was fitted on models {list(router.models_)} but the calibration data "
            f"has {list(data.models)}; calibrate on data with the same models")
    data.require_complete("calibrating a policy")
    pred_q = router.predict(list(data.prompts))
    pred_c = router.predict_cost(list(data.prompts))
    weights = weight_grid(pred_c)
    rows = np.arange(data.n_prompts)
    q = np.empty(len(weights))
    c = np.empty(len(weights))
    for k, w in enumerate(weights):
        pick = choose(pred_q, pred_c, float(w))
        q[k] = data.quality[rows, pick].mean()
        c[k] = data.cost_usd[rows, pick].mean()
    return weights, q, c
