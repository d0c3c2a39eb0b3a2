"""Do no harm: calibrate over a router's operating points *and* mixes of single models.

The zero router mixes single models without looking at the prompt; its curve is the upper
convex hull of the models' (cost, quality) points, and any point on it is reached by sending a
seeded share of the prompts to one hull vertex and the rest to the next. A router is worth
using at a quality target only where it is cheaper there than that mix. Calibration therefore
searches two *families* of operating points:

* the router at each cost weight of :func:`routecast.policy.weight_grid`, from 0 (best
  predicted quality) to infinity (cheapest), and
* the zero router's path: from the best vertex of the single models' hull down to the
  cheapest, mixing each pair of adjacent vertices at shares ``0, 0.1, ..., 0.9``.

Each family is ordered from the most to the least expensive *as predicted from the prompts*
(the router's estimates, or the models' mean estimates), never from the calibration outcomes,
so the order is fixed before the test (:mod:`routecast.guarantee`). The chosen point is the
cheapest on the calibration data that reaches the target (point estimate), or with a
``confidence`` the cheapest *certified* one: each family is searched by fixed-sequence testing
at ``delta / 2`` (Bonferroni across the two families). When the single-model mix wins, the
policy says so in ``fallback``: the router's estimates carried no information at the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from routecast import metrics
from routecast.arrays import FloatArray, IntArray
from routecast.errors import CalibrationError, ConfigError
from routecast.guarantee import fixed_sequence, quality_lower_bound
from routecast.policy import Calibration, Policy, choose, draws, weight_grid

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset

#: Shares of the cheaper vertex along each edge of the zero router's path.
SHARES = tuple(np.round(np.arange(0.0, 1.0, 0.1), 2))
FALLBACK = ("the router is no cheaper than mixing single models at the target on the "
            "calibration data, so its estimates carry no information there")


def hull_vertices(mean_quality: FloatArray, mean_cost: FloatArray) -> list[int]:
    """Model indices on the non-decreasing upper hull of ``(cost, quality)``, cheapest first."""
    hull = metrics.nondecreasing_hull(np.asarray(mean_cost, float),
                                      np.asarray(mean_quality, float))
    out = []
    for c, q in hull:
        hit = np.flatnonzero(np.isclose(mean_cost, c, rtol=0, atol=1e-15)
                             & np.isclose(mean_quality, q, rtol=0, atol=1e-12))
        out.append(int(hit[0]))
    return out


def zero_router_path(mean_quality: FloatArray, mean_cost: FloatArray
                     ) -> list[tuple[int, int, float]]:
    """The zero router's path as ``(pricier model, cheaper model, share of the cheaper)``,
    from the best hull vertex down to the cheapest (a pure model has share 0)."""
    v = hull_vertices(mean_quality, mean_cost)
    path = [(v[i], v[i - 1], float(s)) for i in range(len(v) - 1, 0, -1) for s in SHARES]
    return [*path, (v[0], v[0], 0.0)]


@dataclass(frozen=True)
class Family:
    """Operating points in test order: per point and calibration prompt, realised quality and
    cost (``(n_points, n_prompts)``)."""

    quality: FloatArray
    cost: FloatArray

    def __len__(self) -> int:
        return len(self.quality)


@dataclass(frozen=True)
class Selected:
    """The point :func:`cheapest_meeting` chose: its family and index there, and how."""

    family: int
    index: int
    calibration: Calibration


def cheapest_meeting(families: Sequence[Family], models_quality: FloatArray, fraction: float,
                     confidence: float | None = None, *, method: str = "wsr",
                     seed: int = 0) -> Selected:
    """The cheapest point (mean cost on the calibration prompts) of ``families`` that reaches
    ``fraction`` x the best single model's quality (``models_quality``: ``(n, m)`` per
    calibration prompt and model); with ``confidence``, the cheapest certified one (module
    doc). Ties in cost go to the better point, then to the earlier family."""
    target = fraction * float(models_quality.mean(axis=0).max())
    n = models_quality.shape[0]
    candidates: list[tuple[float, float, int, int]] = []
    if confidence is None:
        for f, fam in enumerate(families):
            q, c = fam.quality.mean(axis=1), fam.cost.mean(axis=1)
            candidates += [(float(c[k]), -float(q[k]), f, k) for k in range(len(fam))
                           if q[k] >= target - 1e-12]
    else:
        delta = (1.0 - confidence) / len(families)
        for f, fam in enumerate(families):
            certified = fixed_sequence(range(len(fam)), fam.quality, models_quality,
                                       fraction, delta, method=method, seed=seed)
            candidates += [(float(fam.cost[k].mean()), -float(fam.quality[k].mean()), f, k)
                           for k in certified.rejected]
    if not candidates:
        best = max(float(fam.quality.mean(axis=1).max()) for fam in families)
        how = (f"is certified at confidence {confidence:g} ({method} bound, {n} prompts) "
               "to reach" if confidence is not None else "reaches")
        raise CalibrationError(
            f"no operating point {how} {fraction:.0%} of the best single model's quality "
            f"({target:.4f}); the most it reaches is {best:.4f} on the calibration data. "
            "Lower the fraction or the confidence, or calibrate on more prompts")
    cost, neg_q, f, k = min(candidates)
    bound = None
    if confidence is not None:
        bound = quality_lower_bound(families[f].quality[k], 1.0 - confidence, seed=seed)
    return Selected(f, k, Calibration(fraction, target, -neg_q, cost, confidence,
                                      method if confidence is not None else None, bound, n))


def router_family(pred_q: FloatArray, pred_c: FloatArray, data: Dataset
                  ) -> tuple[FloatArray, Family]:
    """The router at every weight of the grid (ascending: most expensive first)."""
    weights = weight_grid(pred_c)
    picks = np.stack([choose(pred_q, pred_c, float(w)) for w in weights])
    return weights, _family(picks, data)


def zero_family(mean_quality: FloatArray, mean_cost: FloatArray, data: Dataset, seed: int
                ) -> tuple[list[tuple[int, int, float]], Family]:
    """The zero router's path (:func:`zero_router_path`) replayed on ``data`` with the draw a
    :class:`~routecast.policy.Policy` of that ``seed`` makes for each prompt."""
    path = zero_router_path(mean_quality, mean_cost)
    u = draws(data.n_prompts, seed, list(data.prompts))
    picks = np.stack([np.where(u < s, b, a) for a, b, s in path]).astype(np.int64)
    return path, _family(picks, data)


def _family(picks: IntArray, data: Dataset) -> Family:
    rows = np.arange(data.n_prompts)[None, :]
    return Family(np.asarray(data.quality[rows, picks], dtype=np.float64),
                  np.asarray(data.cost_usd[rows, picks], dtype=np.float64))


def zero_policy(models: Sequence[str], step: tuple[int, int, float], seed: int,
                fallback: str | None = FALLBACK) -> Policy:
    """The policy of one step of the zero router's path."""
    a, b, share = step
    if share <= 0 or a == b:
        return Policy(model=models[a], seed=seed, fallback=fallback)
    return Policy(model=models[a], mix_model=models[b], mix_share=share, seed=seed,
                  fallback=fallback)


def calibrate_mixed(pred_q: FloatArray, pred_c: FloatArray, data: Dataset, fraction: float,
                    confidence: float | None = None, *, method: str = "wsr",
                    seed: int = 0, mean_quality: Sequence[float] | None = None) -> Policy:
    """:meth:`Policy.for_quality` over the router's estimates ``pred_q``/``pred_c`` on
    ``data`` (module doc); ``mean_quality`` orders the single-model mixes (default: the
    mean estimates)."""
    if pred_q.shape != (data.n_prompts, data.n_models):
        raise ConfigError(f"estimates {pred_q.shape} do not match the calibration data "
                          f"{(data.n_prompts, data.n_models)}")
    weights, routed = router_family(pred_q, pred_c, data)
    order_q = pred_q.mean(axis=0) if mean_quality is None else np.asarray(mean_quality, float)
    if order_q.shape != (data.n_models,):
        raise ConfigError(f"mean_quality needs one value per model ({data.n_models}), got "
                          f"{order_q.shape}")
    path, mixed = zero_family(order_q, pred_c.mean(axis=0), data, seed)
    chosen = cheapest_meeting([routed, mixed], data.quality, fraction, confidence,
                              method=method, seed=seed)
    if chosen.family == 0:
        policy = Policy(float(weights[chosen.index]), seed=seed)
    else:
        policy = zero_policy(data.models, path[chosen.index], seed)
    return Policy(policy.cost_weight, model=policy.model, mix_share=policy.mix_share,
                  mix_weight=policy.mix_weight, mix_model=policy.mix_model, seed=seed,
                  fallback=policy.fallback, calibration=chosen.calibration)
