"""Cascade routing: at every step, call the next model or stop (Dekoninck et al., 2024).

Routing picks one model before any answer is seen; a cascade always starts at the cheapest
model. Cascade routing ("A Unified Approach to Routing and Cascading for LLMs", Dekoninck,
Baader & Vechev, arXiv:2410.10347) does both: before the first call and after every answer
it compares, for the prompt at hand, the expected quality of each action minus
``cost_weight`` (lambda) times its expected cost:

* **first call**: ``argmax_j p_j - lambda * c_j``, the router's choice under a policy of the
  same weight (``p_j``: the router's *ex-ante* estimate of model ``j``'s quality on the
  prompt, ``c_j``: its expected cost);
* **after the answers of the models in S** (the last of which is the current answer, scored
  ``r`` by a *post-hoc* signal, a calibrated probability that it is correct): stop and keep
  it (value ``r``), or call the unseen model ``k`` maximising ``p_k|S - lambda * c_k`` if that
  beats ``r``. Already-paid calls are sunk; the answer kept is the last one, as in a cascade.

``p_k|S`` updates the ex-ante estimates with what the answers revealed about the prompt:
answers that scored worse than expected suggest a harder prompt for every model,

``logit p_k|S = logit p_k + gamma * mean_{j in S} (logit r_j - logit p_j)``,

with ``gamma`` in [0, 1] fitted by maximum likelihood on calibration data
(:func:`fit_gamma`): 0 treats models as independent, 1 as fully sharing the surprise.

``lambda`` plays the part of a :class:`~routecast.policy.Policy`'s cost weight and is solved
the same way, on calibration data (the validation split): :meth:`CascadeRouting.for_budget`
and :meth:`CascadeRouting.for_quality`. The decision functions are pure and batch. Cascade
routing is offline only for now: ``routecast bench`` replays it beside routers and cascades,
and the server has no cascade-routing endpoint. :meth:`CascadeRouting.first_model` and
:meth:`CascadeRouting.next_model` take one prompt's estimates and the scores of the answers
received so far, and the tests check that they make exactly the choices the replay makes:
they are the step-by-step form a live endpoint would call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from routecast.cascades.cascade import BoolArray, FloatArray, IntArray, Replay
from routecast.errors import CalibrationError, ConfigError
from routecast.policy import choose, weight_grid

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset

#: Probabilities are clipped this far inside (0, 1) before a logit: a post-hoc score of
#: exactly 0 would otherwise claim infinite evidence about the prompt.
_EPS = 1e-3
DEFAULT_MAX_CALLS = 4


def _logit(p: FloatArray) -> FloatArray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.asarray(np.log(p) - np.log1p(-p), dtype=np.float64)


def conditional_quality(ex_ante: FloatArray, posthoc: FloatArray, seen: BoolArray,
                        gamma: float) -> FloatArray:
    """``p_k|S`` for every model (see the module docstring), shape ``(n, m)``.

    Rows with nothing seen keep their ex-ante estimates.
    """
    lp = _logit(ex_ante)
    surprise = np.where(seen, _logit(posthoc) - lp, 0.0).sum(axis=1)
    surprise /= np.maximum(seen.sum(axis=1), 1)
    return np.asarray(1.0 / (1.0 + np.exp(-(lp + gamma * surprise[:, None]))),
                      dtype=np.float64)


def fit_gamma(ex_ante: FloatArray, posthoc: FloatArray, quality: FloatArray,
              grid: Sequence[float] = tuple(np.linspace(0.0, 1.0, 21))) -> float:
    """The ``gamma`` of the grid with the highest likelihood of the other models' outcomes
    after seeing one model's answer, over every (prompt, seen model) pair of the data."""
    ex_ante, posthoc = np.asarray(ex_ante, float), np.asarray(posthoc, float)
    quality = np.asarray(quality, float)
    n, m = quality.shape
    if m < 2 or n == 0:
        return 0.0
    best, best_ll = 0.0, -np.inf
    for gamma in grid:
        ll = 0.0
        for j in range(m):
            seen = np.zeros((n, m), dtype=bool)
            seen[:, j] = True
            p = np.clip(conditional_quality(ex_ante, posthoc, seen, gamma), 1e-6, 1 - 1e-6)
            others = np.arange(m) != j
            q = quality[:, others]
            ll += float((q * np.log(p[:, others]) + (1 - q) * np.log1p(-p[:, others])).sum())
        if ll > best_ll + 1e-9:
            best, best_ll = float(gamma), ll
    return best


@dataclass(frozen=True)
class CascadeRouting:
    """The cascade-routing decision rule at one cost weight (see the module docstring).

    Arrays are per prompt and model, in one model order: ``ex_ante`` (router estimates),
    ``cost`` (expected USD per call) and ``posthoc`` (the signal's scores of the answers).
    """

    cost_weight: float = 0.0
    gamma: float = 0.5
    max_calls: int = DEFAULT_MAX_CALLS

    def __post_init__(self) -> None:
        if not self.cost_weight >= 0:
            raise ConfigError(f"cost_weight must be >= 0, got {self.cost_weight}")
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.max_calls < 1:
            raise ConfigError(f"max_calls must be >= 1, got {self.max_calls}")

    # -- one step, batch ------------------------------------------------------------------

    def _next(self, ex_ante: FloatArray, cost: FloatArray, posthoc: FloatArray,
              seen: BoolArray, current: IntArray) -> IntArray:
        """The model to call next per row, or -1 to stop (rows with ``current`` >= 0)."""
        n = len(current)
        rows = np.arange(n)
        stay = posthoc[rows, current]
        value = conditional_quality(ex_ante, posthoc, seen, self.gamma)
        value = value - (0.0 if self.cost_weight == 0 else self.cost_weight * cost)
        value = np.where(seen, -np.inf, value)
        # Equal values: the cheaper model, as a policy breaks ties.
        best = value.max(axis=1, keepdims=True)
        pick = np.where(value >= best - 1e-12, cost, np.inf).argmin(axis=1)
        go = value[rows, pick] > stay + 1e-12
        go &= seen.sum(axis=1) < self.max_calls
        return np.asarray(np.where(go, pick, -1), dtype=np.int64)

    def run(self, ex_ante: FloatArray, cost: FloatArray, posthoc: FloatArray
            ) -> tuple[BoolArray, IntArray]:
        """Walk every prompt to its stop: ``(visited (n, m), answered (n,))``."""
        ex_ante, cost, posthoc = (np.asarray(a, dtype=np.float64)
                                  for a in (ex_ante, cost, posthoc))
        if not ex_ante.shape == cost.shape == posthoc.shape or ex_ante.ndim != 2:
            raise ConfigError(f"ex_ante {ex_ante.shape}, cost {cost.shape} and posthoc "
                              f"{posthoc.shape} must all be (n_prompts, n_models)")
        n = ex_ante.shape[0]
        rows = np.arange(n)
        current = choose(ex_ante, cost, self.cost_weight)
        seen = np.zeros(ex_ante.shape, dtype=bool)
        seen[rows, current] = True
        active = rows
        for _ in range(self.max_calls - 1):
            nxt = self._next(ex_ante[active], cost[active], posthoc[active], seen[active],
                             current[active])
            go = nxt >= 0
            if not go.any():
                break
            active = active[go]
            seen[active, nxt[go]] = True
            current[active] = nxt[go]
        return seen, current

    def replay(self, data: Dataset, ex_ante: FloatArray, cost: FloatArray,
               posthoc: FloatArray) -> Replay:
        """Run over recorded outcomes; every visited call is paid, in sequence."""
        seen, answered = self.run(ex_ante, cost, posthoc)
        return Replay.from_visits(data, seen, answered)

    # -- the live path: one prompt --------------------------------------------------------

    def first_model(self, ex_ante: Sequence[float], cost: Sequence[float]) -> int:
        """Index of the model to call first for one prompt."""
        q = np.asarray(ex_ante, dtype=np.float64)[None, :]
        return int(choose(q, np.asarray(cost, dtype=np.float64)[None, :], self.cost_weight)[0])

    def next_model(self, ex_ante: Sequence[float], cost: Sequence[float],
                   answers: Sequence[tuple[int, float]]) -> int | None:
        """Index of the model to call next for one prompt, or ``None`` to keep the last answer.

        ``answers`` lists ``(model index, post-hoc score)`` in the order the calls were made.
        """
        if not answers:
            raise ConfigError("next_model needs the answers seen so far; call first_model "
                              "before any answer")
        q = np.asarray(ex_ante, dtype=np.float64)[None, :]
        c = np.asarray(cost, dtype=np.float64)[None, :]
        if q.shape != c.shape:
            raise ConfigError(f"ex_ante and cost must have one entry per model, got "
                              f"{q.shape[1]} and {c.shape[1]}")
        posthoc = q.copy()
        seen = np.zeros(q.shape, dtype=bool)
        for j, score in answers:
            if not 0 <= j < q.shape[1] or seen[0, j]:
                raise ConfigError(f"answer from model index {j} is unknown or repeated")
            seen[0, j] = True
            posthoc[0, j] = score
        nxt = int(self._next(q, c, posthoc, seen, np.array([answers[-1][0]]))[0])
        return None if nxt < 0 else nxt

    # -- calibration ----------------------------------------------------------------------

    def sweep(self, data: Dataset, ex_ante: FloatArray, cost: FloatArray, posthoc: FloatArray,
              n_weights: int = 60) -> tuple[FloatArray, list[Replay]]:
        """Replays at every cost weight of a grid scaled to ``cost`` (from 0 to infinity)."""
        weights = weight_grid(cost, n_weights)
        return weights, [replace(self, cost_weight=float(w)).replay(data, ex_ante, cost,
                                                                    posthoc)
                         for w in weights]

    def for_budget(self, data: Dataset, ex_ante: FloatArray, cost: FloatArray,
                   posthoc: FloatArray, budget_usd: float) -> CascadeRouting:
        """This rule with the weight of best realised quality on ``data`` (the validation
        split) whose mean cost per query fits ``budget_usd``."""
        if not budget_usd >= 0:
            raise ConfigError(f"budget must be >= 0 USD per query, got {budget_usd}")
        weights, replays = self.sweep(data, ex_ante, cost, posthoc)
        ok = [k for k, r in enumerate(replays) if r.mean_cost_usd <= budget_usd * (1 + 1e-9)]
        if not ok:
            cheapest = min(r.mean_cost_usd for r in replays)
            raise CalibrationError(
                f"no cost weight keeps cascade routing on {data.name!r} within "
                f"{budget_usd:.3g} USD per query (the cheapest costs {cheapest:.3g}); raise "
                "the budget")
        k = max(ok, key=lambda i: (replays[i].mean_quality, -replays[i].mean_cost_usd))
        return replace(self, cost_weight=float(weights[k]))

    def for_quality(self, data: Dataset, ex_ante: FloatArray, cost: FloatArray,
                    posthoc: FloatArray, fraction: float = 0.95,
                    reference: str | None = None,
                    confidence: float | None = None) -> CascadeRouting:
        """This rule with the weight of lowest realised cost on ``data`` whose quality
        reaches ``fraction`` x the best single model's there (or ``reference`` model's).

        With ``confidence``: the cheapest weight *certified* to reach it on new prompts
        exchangeable with ``data``, except with probability ``1 - confidence`` (Learn then
        Test over the weights from 0 up, tested paired against every model, or against
        ``reference`` alone; :mod:`routecast.guarantee`)."""
        if not 0 < fraction <= 1.5:
            raise ConfigError(f"quality fraction must lie in (0, 1.5], got {fraction}")
        if confidence is not None:
            from routecast.mixing import Family, cheapest_meeting

            weights, replays = self.sweep(data, ex_ante, cost, posthoc)
            family = Family(np.stack([r.quality for r in replays]),
                            np.stack([r.cost_usd for r in replays]))
            models = (data.quality if reference is None
                      else data.quality[:, [data.model_index(reference)]])
            chosen = cheapest_meeting([family], models, fraction, confidence)
            return replace(self, cost_weight=float(weights[chosen.index]))
        quality = data.mean_quality()
        base = quality[data.model_index(reference)] if reference else np.max(quality)
        target = fraction * float(base)
        weights, replays = self.sweep(data, ex_ante, cost, posthoc)
        ok = [k for k, r in enumerate(replays) if r.mean_quality >= target - 1e-12]
        if not ok:
            most = max(r.mean_quality for r in replays)
            raise CalibrationError(
                f"cascade routing on {data.name!r} does not reach {fraction:.0%} of the best "
                f"single model's quality ({target:.4f}) at any cost weight; the most it "
                f"reaches is {most:.4f}")
        k = min(ok, key=lambda i: (replays[i].mean_cost_usd, -replays[i].mean_quality))
        return replace(self, cost_weight=float(weights[k]))
