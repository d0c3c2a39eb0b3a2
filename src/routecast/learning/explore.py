"""Which labels to buy for a request: the exploration strategy.

Every request offers one :class:`Candidate` per model the endpoint may route to: the served
model's label costs one judge call, any other model's costs its answer (a shadow request) plus
a judge call. An explorer returns the models worth labelling.

:class:`ActiveExplorer` (the default) buys the labels with the most information per dollar:

* **uncertainty** of the router about model ``j`` on this prompt,
  ``u_j = sqrt(p_j (1 - p_j) / (1 + n_j))``: the spread of a Bernoulli outcome of predicted
  quality ``p_j``, shrunk by ``n_j``, the number of labels of model ``j`` on similar prompts (a
  kernel count, see :class:`~routecast.learning.learner.Learner`). A label on a prompt like
  many already labelled teaches little;
* **relevance** to the routing decision: a label matters only if it can change which model
  the policy picks. ``g_j = H_{-j}(c_j) - p_j`` is how far model ``j``'s predicted point lies
  below the non-decreasing frontier (running best, linear between points) of the *other*
  models' predicted (cost, quality) points on this prompt; relevance
  ``exp(-max(g_j, 0) / (u_j + 0.02))`` is 1 on or above the frontier and fades as ``j``
  falls below it by more than its uncertainty (optimism in the face of uncertainty: a
  dominated model is explored only while it might not be);
* **price**: value ``v_j = u_j * relevance_j`` per dollar of the label's cost. Cheap models are
  labelled freely; the strongest model mostly through its own served answers (judge only).

**Budget pacing**: the meter allows a mean spend per request (``spend_fraction`` of what the
strongest model would have cost). From the candidates of the last ``window`` requests the
explorer finds the value-per-dollar threshold at which they would have spent exactly that pace,
and buys this request's candidates above it, best first, while the meter's allowance lasts.
Spending thus goes to the most informative requests rather than the first ones, and the
threshold rises by itself as the router learns and uncertainty falls.

**Randomised** (the default): a candidate below the threshold is still bought with probability
``value / threshold``. Buying only the top of the ranking (uncertainty sampling) skews each
model's labels towards the prompts the router was unsure of, and the per-model regressions
fitted on them got worse as labels grew: on the RouterBench subset, greedy selection reached
75 % of the offline router's AIQ gain after 1,000 requests, the randomised one 98 % at the same
spend (``benchmarks/learning_curve.py``).

:class:`UniformExplorer` is the reference: judge every served answer, and shadow a random
``fraction`` of requests to ``k`` random other models.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from routecast.learning.meter import SpendMeter


@dataclass(slots=True)
class Candidate:
    """One model's label on one request: predicted quality and cost, labels nearby, and what
    the label would cost (the answer unless served, plus the judge)."""

    model: str
    served: bool
    quality: float
    cost_usd: float
    nearby: float
    label_cost_usd: float
    #: Labels of this model so far, anywhere.
    labels: int = 0
    #: Labels this model is explored to first, whatever their value (within the allowance),
    #: if more than the explorer's ``warmup``.
    floor: int = 0


class Explorer(Protocol):
    def plan(self, candidates: Sequence[Candidate], meter: SpendMeter) -> list[Candidate]:
        """The candidates to label now, within ``meter.allowance()``."""


def frontier_gap(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Per model, how far its point lies below the non-decreasing hull of the others' points
    at its cost (negative: above it)."""
    m = len(cost)
    gaps = np.empty(m)
    for j in range(m):
        others = [i for i in range(m) if i != j]
        if not others:
            gaps[j] = -1.0
            continue
        oc, oq = cost[others], quality[others]
        order = np.argsort(oc)
        oc, oq = oc[order], np.maximum.accumulate(oq[order])
        # Upper hull by interpolation between the running-best points (flat beyond the ends).
        gaps[j] = float(np.interp(cost[j], oc, oq)) - quality[j]
    return gaps


class ActiveExplorer:
    """Value of information per dollar, budget-paced; see the module docstring.

    ``max_labels`` caps the labels bought for one request; ``window`` is the number of recent
    requests the pacing threshold is drawn from. Until a model has ``warmup`` labels it is
    explored regardless of value (within the allowance): a handful of labels per model is
    what every later estimate, and every router's fit, starts from. A candidate's ``floor``
    raises that count for its model (the learner's ``anchor_labels`` for the cold start's
    model).
    """

    def __init__(self, *, max_labels: int = 6, window: int = 200, warmup: int = 10,
                 randomized: bool = True, seed: int = 0) -> None:
        self.max_labels = max_labels
        self.warmup = warmup
        self.randomized = randomized
        self._rng = np.random.default_rng(seed)
        self._recent: deque[list[tuple[float, float]]] = deque(maxlen=window)

    def values(self, candidates: Sequence[Candidate]) -> np.ndarray:
        p = np.clip([c.quality for c in candidates], 0.02, 0.98)
        n = np.asarray([c.nearby for c in candidates])
        u = np.sqrt(p * (1 - p) / (1.0 + n))
        gap = frontier_gap(np.asarray([c.cost_usd for c in candidates]), p)
        return np.asarray(u * np.exp(-np.maximum(gap, 0.0) / (u + 0.02)))

    def threshold(self, pace_usd: float) -> float:
        """The value per dollar above which the recent candidates would have spent
        ``pace_usd`` per request."""
        if len(self._recent) < 20 or not math.isfinite(pace_usd):
            return 0.0
        items = sorted((x for req in self._recent for x in req), reverse=True)
        budget = pace_usd * len(self._recent)
        spent = 0.0
        for ratio, cost in items:
            spent += cost
            if spent > budget:
                return ratio
        return 0.0

    def plan(self, candidates: Sequence[Candidate], meter: SpendMeter) -> list[Candidate]:
        if not candidates:
            return []
        v = self.values(candidates)
        costs = np.asarray([max(c.label_cost_usd, 1e-12) for c in candidates])
        ratio = v / costs
        limit = self.threshold(meter.pace_per_request())
        self._recent.append([(float(r), float(c)) for r, c in zip(ratio, costs, strict=True)])
        allowance = meter.allowance()
        chosen: list[Candidate] = []
        warm = np.asarray([c.labels < max(self.warmup, c.floor) for c in candidates])
        if self.randomized and limit > 0:
            # Probabilistic thresholding: a candidate below the threshold still has a chance
            # in proportion to its value, one above it is bought; labels then cover every
            # region instead of only the most uncertain one.
            keep = self._rng.random(len(ratio)) < ratio / limit
            ratio = np.where(keep, np.maximum(ratio, limit), ratio)
        order = sorted(range(len(candidates)), key=lambda j: (not warm[j], -ratio[j]))
        for j in order:
            if len(chosen) == self.max_labels or (ratio[j] < limit and not warm[j]):
                break
            if costs[j] <= allowance:
                chosen.append(candidates[j])
                allowance -= costs[j]
        return chosen


class UniformExplorer:
    """Judge every served answer; shadow a ``fraction`` of requests to ``k`` random others."""

    def __init__(self, *, fraction: float = 0.3, k: int = 2, judge_served: bool = True,
                 seed: int = 0) -> None:
        self.fraction = fraction
        self.k = k
        self.judge_served = judge_served
        self._rng = np.random.default_rng(seed)

    def plan(self, candidates: Sequence[Candidate], meter: SpendMeter) -> list[Candidate]:
        chosen = [c for c in candidates if c.served and self.judge_served]
        others = [c for c in candidates if not c.served]
        if others and self._rng.random() < self.fraction:
            pick = self._rng.choice(len(others), size=min(self.k, len(others)), replace=False)
            chosen += [others[i] for i in pick]
        allowance = meter.allowance()
        kept = []
        for c in chosen:
            if c.label_cost_usd <= allowance:
                kept.append(c)
                allowance -= c.label_cost_usd
        return kept
