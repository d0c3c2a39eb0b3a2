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

import numpy as np

from routecast.data.dataset import Dataset, FloatArray
from routecast.policy import Policy, choose, weight_grid
from routecast.routers.base import Router


def brier(router: Router, data: Dataset) -> float:
    """Mean squared error of predicted quality over the labelled pairs of ``data``."""
    pred = router.predict(list(data.prompts))
    have = data.labelled
    return float(np.mean((pred[have] - data.quality[have]) ** 2))


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
              budget_usd: float | None = None, labels: FloatArray | None = None) -> Policy:
    """The policy meeting the target on ``data`` (imputed; see the module docstring): the
    cheapest point reaching ``quality_fraction`` of the best single model, or the best point
    within ``budget_usd`` per query; the closest point when none meets it. ``labels``
    replaces ``data.quality`` (de-biased labels may lie outside [0, 1], which a
    :class:`Dataset` refuses)."""
    labels = data.quality if labels is None else labels
    pq, pc, q, c = imputed(router, data, labels)
    weights = weight_grid(pc)
    rows = np.arange(data.n_prompts)
    qs = np.empty(len(weights))
    cs = np.empty(len(weights))
    have = data.labelled
    for k, w in enumerate(weights):
        pick = choose(pq, pc, float(w))
        qs[k], cs[k] = _corrected(pq[rows, pick], labels[rows, pick],
                                  have[rows, pick]), c[rows, pick].mean()
    if budget_usd is not None:
        ok = np.flatnonzero(cs <= budget_usd * (1 + 1e-9))
        best = (max(ok, key=lambda i: (qs[i], -cs[i])) if ok.size
                else int(np.argmin(cs)))
        return Policy(float(weights[best]))
    target = (quality_fraction or 0.95) * float(q.mean(axis=0).max())
    ok = np.flatnonzero(qs >= target - 1e-12)
    best = min(ok, key=lambda i: (cs[i], -qs[i])) if ok.size else int(np.argmax(qs))
    return Policy(float(weights[best]))


def _corrected(pred: FloatArray, label: FloatArray, have: np.ndarray, min_labels: int = 5
               ) -> float:
    """Mean predicted quality plus the mean residual over the labelled pairs (doubly robust);
    the plain imputed mean while fewer than ``min_labels`` pairs are labelled."""
    if int(have.sum()) < min_labels:
        return float(np.where(have, label, pred).mean())
    return float(pred.mean() + (label[have] - pred[have]).mean())
