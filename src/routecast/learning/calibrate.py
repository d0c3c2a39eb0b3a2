"""Calibrating a policy, and validating a router, on sparse held-out labels.

``Policy.for_quality`` needs every model's outcome on every calibration prompt. Labels from
traffic have holes, so the realised quality of a choice is estimated, doubly robust: the
router's predicted quality of the chosen models (the router never trained on these held-out
prompts), corrected by the mean error of those predictions where the chosen model was labelled.
The correction matters: a policy picks the models whose predictions are highest, so the
predictions of chosen models run high (the winner's curse), and imputing them raw made the
learned endpoint settle below its quality target on the RouterBench subset. Costs likewise: the
observed cost, else the predicted one. The target is a fraction of the best single model's
mean quality (labels where present, predictions elsewhere), or a mean cost per query.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from routecast.data.dataset import Dataset, FloatArray
from routecast.policy import Policy, choose, weight_grid
from routecast.routers.base import Router


def squared_errors(router: Router, data: Dataset) -> FloatArray:
    """Squared error of predicted quality on each labelled pair of ``data`` (row-major order,
    so two routers' errors on the same data pair up); their mean is the Brier score."""
    pred = router.predict(list(data.prompts))
    have = data.labelled
    return np.asarray((pred[have] - data.quality[have]) ** 2, dtype=np.float64)


def imputed(router: Router, data: Dataset, labels: FloatArray | None = None
            ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Predicted quality and cost, and the imputed realised quality and cost, each ``(n, m)``;
    ``labels`` replaces ``data.quality`` (e.g. de-biased labels of a noisy judge)."""
    prompts = list(data.prompts)
    pq, pc = router.predict(prompts), router.predict_cost(prompts)
    labels = data.quality if labels is None else labels
    q = np.where(np.isnan(labels), pq, labels)
    c = np.where(np.isnan(data.cost_usd), pc, data.cost_usd)
    return pq, pc, q, c


def calibrate(router: Router, data: Dataset, *, quality_fraction: float | None = 0.95,
              budget_usd: float | None = None, labels: FloatArray | None = None,
              weights: FloatArray | None = None) -> Policy:
    """The policy meeting the target on ``data`` (imputed; see the module docstring): the
    cheapest point reaching ``quality_fraction`` of the best single model, or the best point
    within ``budget_usd`` per query; the closest point when none meets it. ``labels``
    replaces ``data.quality`` (de-biased labels may lie outside [0, 1], which a
    :class:`Dataset` refuses). ``weights`` (one per prompt, >= 0, not all 0) weigh every
    mean, the target's included: how much each prompt stands for the traffic the policy
    will serve (see :func:`mix_weights`); equal by default."""
    labels = data.quality if labels is None else labels
    pq, pc, q, c = imputed(router, data, labels)
    sw = (np.ones(data.n_prompts) if weights is None
          else np.asarray(weights, dtype=np.float64))
    if sw.shape != (data.n_prompts,) or not (sw >= 0).all() or sw.sum() <= 0:
        raise ValueError(f"weights must be {data.n_prompts} values >= 0, not all 0")
    sw = sw / sw.sum()
    grid = weight_grid(pc)
    rows = np.arange(data.n_prompts)
    qs = np.empty(len(grid))
    cs = np.empty(len(grid))
    have = data.labelled
    for k, w in enumerate(grid):
        pick = choose(pq, pc, float(w))
        qs[k] = _corrected(pq[rows, pick], labels[rows, pick], have[rows, pick], sw)
        cs[k] = float(sw @ c[rows, pick])
    if budget_usd is not None:
        ok = np.flatnonzero(cs <= budget_usd * (1 + 1e-9))
        best = (max(ok, key=lambda i: (qs[i], -cs[i])) if ok.size
                else int(np.argmin(cs)))
        return Policy(float(grid[best]))
    target = (quality_fraction or 0.95) * float((sw @ q).max())
    ok = np.flatnonzero(qs >= target - 1e-12)
    best = min(ok, key=lambda i: (cs[i], -qs[i])) if ok.size else int(np.argmax(qs))
    return Policy(float(grid[best]))


def _corrected(pred: FloatArray, label: FloatArray, have: np.ndarray, weights: FloatArray,
               min_labels: int = 5) -> float:
    """Mean predicted quality plus the mean residual over the labelled pairs (doubly robust),
    both weighted by ``weights`` (summing to 1); the plain imputed mean while fewer than
    ``min_labels`` pairs of positive weight are labelled."""
    have = have & (weights > 0)
    if int(have.sum()) < min_labels:
        return float(weights @ np.where(have, label, pred))
    resid = label[have] - pred[have]
    return float(weights @ pred + weights[have] @ resid / weights[have].sum())


def mix_weights(recent: Any, pool: Any, power: float = 1.0) -> FloatArray:
    """How much each of the ``pool`` prompts stands for the ``recent`` traffic: a kernel
    estimate of the density ratio, the mean similarity of a pool prompt to the recent prompts
    over its mean similarity to the pool's (similarity ``max(cos, 0) ** power`` of the rows,
    feature matrices with unit-norm rows as TF-IDF gives them, dense or sparse; a prompt's
    own copy left out), normalised to sum to 1. While the traffic keeps its mix the ratios
    stay near 1; after a shift the pool prompts like the new traffic gain weight in
    proportion to its share of the recent prompts, so a policy calibrated on the pool with
    these weights follows the shift as soon as a few held-out prompts of the new mix are
    labelled, instead of once they fill the window. A ratio rather than nearest-neighbour
    votes: on the RouterBench subset, 5-nearest-neighbour votes of the latest 100 prompts
    put all the weight on 72 of 300 held-out prompts (prompts near many others collect the
    votes; effective sample size 18), the ratio keeps an effective 134 in a steady mix.
    Equal weights when no pool prompt is like any recent one."""

    def density(a: Any, b: Any) -> FloatArray:
        sim = a @ b.T
        sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim, dtype=np.float64)
        sim[sim > 1.0 - 1e-9] = 0.0  # the prompt itself
        return np.asarray((np.clip(sim, 0.0, 1.0) ** power).mean(axis=1), dtype=np.float64)

    n_pool = pool.shape[0]
    if recent.shape[0] == 0 or n_pool == 0:
        return np.full(n_pool, 1.0 / max(n_pool, 1))
    num, den = density(pool, recent), density(pool, pool)
    w = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    if w.sum() <= 0:
        return np.full(n_pool, 1.0 / n_pool)
    return np.asarray(w / w.sum(), dtype=np.float64)
