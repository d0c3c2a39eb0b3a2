"""The policy: turn predicted quality and cost into a choice of model.

``choose(quality, cost) = argmax_j (quality[:, j] - cost_weight * cost[:, j])``

Ties go to the cheaper model, so ``cost_weight = 0`` picks the cheapest of the best, and
``cost_weight = inf`` picks the cheapest model (ties to the better one). The constructors solve
for the weight on *calibration* data (the validation split, never train or test):

* :meth:`Policy.for_budget` - the best realised quality whose mean cost per query fits a budget;
* :meth:`Policy.for_quality` - the cheapest operating point whose realised quality reaches a
  fraction of the best single model's quality on the same data; with ``confidence``, the
  cheapest one *certified* to reach it on new prompts with that probability
  (:mod:`routecast.guarantee`: one-sided bounds and a Learn-then-Test search).

**Mixes: do no harm.** An operating point may mix two arms with a seeded per-prompt draw: a
share ``mix_share`` of the prompts takes the second arm (the router at ``mix_weight``, or the
single model ``mix_model``), the rest the first (the router at ``cost_weight``, or the single
model ``model``). The draw hashes the seed and the prompt text, so a served endpoint and the
replay benchmark send the same prompt the same way. Mixing two single models is the zero
router: a router that cannot beat it at the target should not be used, and ``for_quality``
then returns that mix, with ``fallback`` saying why (:mod:`routecast.mixing`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast.arrays import FloatArray, IntArray
from routecast.errors import CalibrationError, ConfigError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset
    from routecast.routers.base import Router

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


def draws(n: int, seed: int, prompts: Sequence[str] | None = None) -> FloatArray:
    """One uniform number in [0, 1) per prompt: a hash of ``seed`` and the prompt text where
    ``prompts`` are given (the same prompt always draws the same number), else a seeded
    generator's ``n`` numbers."""
    if prompts is None:
        return np.random.default_rng(seed).random(n)
    if len(prompts) != n:
        raise ConfigError(f"{len(prompts)} prompts for {n} rows of estimates")
    key = str(seed).encode()
    return np.array([int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8, key=key)
                                    .digest(), "big") / 2.0 ** 64 for p in prompts])


@dataclass(frozen=True)
class Calibration:
    """How a policy was solved, for reports and ``routecast route``: the target (on the
    calibration data), the point's realised quality and cost there, and with a guarantee its
    confidence, the bound used and a lower confidence bound on the point's quality."""

    fraction: float
    target: float
    quality: float
    cost_usd: float
    confidence: float | None = None
    method: str | None = None
    quality_bound: float | None = None
    n_prompts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "target": self.target, "quality": self.quality,
                "cost_usd": self.cost_usd, "confidence": self.confidence,
                "method": self.method, "quality_bound": self.quality_bound,
                "n_prompts": self.n_prompts}


@dataclass(frozen=True)
class Policy:
    """A fixed trade-off between quality and dollars, optionally a mix of two arms; see the
    module docstring. ``fallback`` is ``None`` when the router is used, else why it is not."""

    cost_weight: float = 0.0
    model: str | None = None
    mix_share: float = 0.0
    mix_weight: float | None = None
    mix_model: str | None = None
    seed: int = 0
    fallback: str | None = None
    calibration: Calibration | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.cost_weight >= 0):  # also rejects NaN
            raise ConfigError(f"cost_weight must be >= 0, got {self.cost_weight}")
        if not 0 <= self.mix_share <= 1:
            raise ConfigError(f"mix_share must lie in [0, 1], got {self.mix_share}")
        if self.mix_weight is not None and not self.mix_weight >= 0:
            raise ConfigError(f"mix_weight must be >= 0, got {self.mix_weight}")
        if self.mix_weight is not None and self.mix_model is not None:
            raise ConfigError("the second arm is the router at mix_weight or the model "
                              "mix_model, not both")
        if self.mix_share > 0 and self.mix_weight is None and self.mix_model is None:
            raise ConfigError("mix_share > 0 needs a second arm: mix_weight or mix_model")

    @property
    def uses_router(self) -> bool:
        """Whether any prompt is routed by the router's estimates (not a fixed model)."""
        return self.model is None or (self.mix_share > 0 and self.mix_model is None)

    def choose(self, quality: FloatArray, cost: FloatArray, *,
               models: Sequence[str] | None = None,
               prompts: Sequence[str] | None = None) -> IntArray:
        """Column per row. ``models`` (the columns' names) is needed when an arm is a single
        model; ``prompts`` makes the mix's draw a function of the prompt (module doc)."""
        first = self._arm(quality, cost, self.cost_weight, self.model, models)
        if self.mix_share <= 0:
            return first
        second = self._arm(quality, cost, self.mix_weight or 0.0, self.mix_model, models)
        u = draws(len(first), self.seed, prompts)
        return np.asarray(np.where(u < self.mix_share, second, first), dtype=np.int64)

    @staticmethod
    def _arm(quality: FloatArray, cost: FloatArray, weight: float, model: str | None,
             models: Sequence[str] | None) -> IntArray:
        if model is None:
            return choose(quality, cost, weight)
        if models is None or model not in models:
            raise ConfigError(f"the policy sends prompts to {model!r}, which is not among the "
                              f"router's models {list(models or [])}; recalibrate the policy")
        return np.full(np.shape(quality)[0], list(models).index(model), dtype=np.int64)

    def describe(self) -> str:
        """One line: what the policy does."""
        first = f"model {self.model}" if self.model else f"router at w={self.cost_weight:.4g}"
        if self.mix_share > 0:
            second = (f"model {self.mix_model}" if self.mix_model
                      else f"router at w={self.mix_weight:.4g}")
            text = f"{1 - self.mix_share:.0%} {first}, {self.mix_share:.0%} {second}"
        else:
            text = first
        return text + (f" (fallback: {self.fallback})" if self.fallback else "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (an infinite weight is the string ``"inf"``, which
        ``float`` reads back); :meth:`from_dict` reads it back."""
        def weight(w: float | None) -> float | str | None:
            return "inf" if w is not None and math.isinf(w) else w

        return {"cost_weight": weight(self.cost_weight), "model": self.model,
                "mix_share": self.mix_share, "mix_weight": weight(self.mix_weight),
                "mix_model": self.mix_model, "seed": self.seed, "fallback": self.fallback}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        try:
            mix_weight = data.get("mix_weight")
            return cls(float(data.get("cost_weight", 0.0)), model=data.get("model"),
                       mix_share=float(data.get("mix_share", 0.0)),
                       mix_weight=None if mix_weight is None else float(mix_weight),
                       mix_model=data.get("mix_model"), seed=int(data.get("seed", 0)),
                       fallback=data.get("fallback"))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"a saved policy is malformed ({e}); recalibrate it with "
                              "`routecast calibrate`") from None

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
    def for_quality(cls, router: Router, data: Dataset, fraction: float = 0.95,
                    confidence: float | None = None, *, method: str = "wsr",
                    seed: int = 0, mean_quality: Sequence[float] | None = None) -> Policy:
        """Cheapest operating point on ``data`` (the validation split) whose quality reaches
        ``fraction`` x the best single model's, among the router's cost weights and the mixes
        of single models (:mod:`routecast.mixing`); a mix of single models wins, with
        ``fallback`` set, when the router is no cheaper at the target.

        With ``confidence`` (e.g. 0.9): the cheapest point certified by a Learn-then-Test
        fixed-sequence search (Angelopoulos et al. 2021) with one-sided bounds (Bates et al.
        2021, RCPS; ``method``: ``"wsr"`` or ``"hb"``) to reach the target on new prompts
        exchangeable with ``data``, except with probability ``1 - confidence``. The target's
        own uncertainty is accounted for by pairing (:mod:`routecast.guarantee`).

        ``mean_quality`` (each model's mean quality on data *other* than ``data``, e.g. the
        train split) orders the single-model mixes; without it, the router's mean estimates
        on ``data``'s prompts do (never ``data``'s outcomes: the order must be fixed before
        the test)."""
        from routecast.mixing import calibrate_mixed

        if not 0 < fraction <= 1.5:
            raise ConfigError(f"quality fraction must lie in (0, 1.5], got {fraction}")
        if tuple(router.models_) != tuple(data.models):
            raise ConfigError(
                f"the router was fitted on models {list(router.models_)} but the calibration "
                f"data has {list(data.models)}; calibrate on data with the same models")
        prompts = list(data.prompts)
        return calibrate_mixed(router.predict(prompts), router.predict_cost(prompts), data,
                               fraction, confidence, method=method, seed=seed,
                               mean_quality=mean_quality)


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
