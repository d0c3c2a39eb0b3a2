"""Curves of operating points, the entry built from one, and its bootstrap intervals.

Every entry of a benchmark result (a router swept over its cost weight, the Pareto front of
tuned cascades, cascade routing swept over its weight) is a set of operating points replayed
on the evaluated split. A :class:`Sweep` holds what each point chose for each prompt; the
entry's figures (AIQ, savings, oracle gap; :mod:`routecast.metrics`) come from the points'
means, and the bootstrap intervals from the per-prompt choices, resampled.

Do no harm: every entry's figures are read off the hull of its own points (``curve``) *and*
the single models' points (the zero router's), since any policy may mix with them
(:mod:`routecast.mixing`), so no entry's hull lies below the zero router's. ``aiq_own`` is the
AIQ of the entry's own points alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routecast import metrics
from routecast.arrays import FloatArray, IntArray
from routecast.bench.schema import Calibrated, Entry, Interval, ModelSummary, SplitSummary
from routecast.data.dataset import Dataset
from routecast.policy import choose, weight_grid


@dataclass
class Sweep:
    """What every operating point of one entry chose on the evaluated split, per prompt.

    ``weights`` labels the points (a cost weight, or just an index); ``chosen_q`` and
    ``chosen_c`` are ``(n_points, n_prompts)`` realised quality and cost; ``picks`` the
    answering model's column per point and prompt.
    """

    weights: FloatArray
    chosen_q: FloatArray
    chosen_c: FloatArray
    picks: IntArray

    @property
    def quality(self) -> FloatArray:
        """Mean quality per point."""
        return np.asarray(self.chosen_q.mean(axis=1), dtype=np.float64)

    @property
    def cost_usd(self) -> FloatArray:
        """Mean cost per point."""
        return np.asarray(self.chosen_c.mean(axis=1), dtype=np.float64)


def with_single_models(sw: Sweep, data: Dataset) -> Sweep:
    """``sw`` plus one point per single model (every prompt to that model)."""
    m = data.n_models
    picks = np.repeat(np.arange(m, dtype=np.int64)[:, None], data.n_prompts, axis=1)
    return Sweep(np.r_[sw.weights, np.full(m, np.nan)],
                 np.vstack([sw.chosen_q, data.quality.T]),
                 np.vstack([sw.chosen_c, data.cost_usd.T]),
                 np.vstack([sw.picks, picks]))


def sweep(pred_q: FloatArray, pred_c: FloatArray, data: Dataset) -> Sweep:
    """A policy's choices on ``data`` at every cost weight of :func:`weight_grid`."""
    weights = weight_grid(pred_c)
    picks = np.stack([choose(pred_q, pred_c, float(w)) for w in weights])
    rows = np.arange(data.n_prompts)[None, :]
    return Sweep(weights, data.quality[rows, picks], data.cost_usd[rows, picks], picks)


def best_single(q: FloatArray, c: FloatArray) -> int:
    """Index of the best single model: highest mean quality, ties to the cheaper."""
    return int(np.lexsort((c, -q))[0])


def split_summary(data: Dataset) -> SplitSummary:
    """The evaluated split's own figures: models, best single, oracle, cost range, zero AIQ."""
    q, c = data.mean_quality(), data.mean_cost_usd()
    b = best_single(q, c)
    pick = metrics.oracle_choice(data.quality, data.cost_usd)
    rows = np.arange(data.n_prompts)
    return {
        "models": [{"name": m, "quality": float(q[j]), "cost_usd": float(c[j])}
                   for j, m in enumerate(data.models)],
        "best_single": {"name": data.models[b], "quality": float(q[b]), "cost_usd": float(c[b])},
        "oracle": {"quality": float(data.quality[rows, pick].mean()),
                   "cost_usd": float(data.cost_usd[rows, pick].mean())},
        "cost_range": [float(c.min()), float(c.max())],
        "zero_router_aiq": metrics.aiq(c, q, float(c.min()), float(c.max())),
    }


def curve_entry(name: str, kind: str, cost: FloatArray, quality: FloatArray,
                summary: SplitSummary, *, evaluation_only: bool = False) -> Entry:
    """The entry of one curve of operating points ``(cost[k], quality[k])`` (means on the
    evaluated split) plus the single models' points (module doc): AIQ and its gain over the
    zero router, savings at 95 % and 100 % of the best single model's quality and the oracle
    gap. ``calibrated_95`` is left ``None`` for the caller to fill."""
    best, oracle = summary["best_single"], summary["oracle"]
    lo, hi = summary["cost_range"]
    own = metrics.aiq(cost, quality, lo, hi)
    curve = [[float(c), float(q)] for c, q in zip(cost, quality, strict=True)]
    cost = np.r_[cost, [m["cost_usd"] for m in summary["models"]]]
    quality = np.r_[quality, [m["quality"] for m in summary["models"]]]
    aiq = metrics.aiq(cost, quality, lo, hi)
    return {
        "name": name, "kind": kind, "evaluation_only": evaluation_only,
        "aiq": aiq, "aiq_minus_zero": aiq - summary["zero_router_aiq"],
        "max_quality": float(quality.max()),
        "savings_at_95": metrics.savings_at(cost, quality, 0.95, best["quality"],
                                            best["cost_usd"]),
        "savings_at_100": metrics.savings_at(cost, quality, 1.0, best["quality"],
                                             best["cost_usd"]),
        "oracle_gap": metrics.oracle_gap(cost, quality, oracle["quality"], oracle["cost_usd"]),
        "curve": curve, "calibrated_95": None, "aiq_own": own,
    }


def calibrated(quality: float, cost_usd: float, best: ModelSummary) -> Calibrated:
    """A calibrated point's realised figures, also relative to the best single model."""
    return {"quality": quality, "cost_usd": cost_usd,
            "quality_vs_best": quality / best["quality"],
            "cost_vs_best": cost_usd / best["cost_usd"]}


def unreachable(error: str) -> Calibrated:
    """The calibrated point of an entry that reached no target on validation."""
    return {"error": error, "quality": None, "cost_usd": None}


def _resample_stats(sw: Sweep, data: Dataset, rows: IntArray) -> dict[str, float | None]:
    """AIQ and savings of one entry on one bootstrap resample of the evaluated prompts."""
    q_models = data.quality[rows].mean(axis=0)
    c_models = data.cost_usd[rows].mean(axis=0)
    b = best_single(q_models, c_models)
    cq = sw.chosen_q[:, rows].mean(axis=1)
    cc = sw.chosen_c[:, rows].mean(axis=1)
    lo, hi = float(c_models.min()), float(c_models.max())
    out: dict[str, float | None] = {
        "aiq": metrics.aiq(cc, cq, lo, hi) if hi > lo else None,
        "zero_aiq": metrics.aiq(c_models, q_models, lo, hi) if hi > lo else None,
    }
    for frac, key in ((0.95, "savings_at_95"), (1.0, "savings_at_100")):
        out[key] = metrics.savings_at(cc, cq, frac, float(q_models[b]), float(c_models[b]))
    return out


def bootstrap(sw: Sweep, data: Dataset, n_boot: int, seed: int) -> Interval:
    """Percentile intervals of AIQ, its gain over the zero router and the savings, from
    ``n_boot`` seeded resamples of the evaluated prompts (the cost range and the best single
    model are recomputed on each; see :mod:`routecast.metrics`)."""
    rng = np.random.default_rng(seed)
    draws = [_resample_stats(sw, data, rng.integers(0, data.n_prompts, data.n_prompts))
             for _ in range(n_boot)]
    for d in draws:
        a, z = d["aiq"], d["zero_aiq"]
        d["aiq_minus_zero"] = None if a is None or z is None else a - z

    def interval(key: str) -> list[float] | None:
        return metrics.percentile_interval([v for d in draws if (v := d[key]) is not None],
                                           n_draws=n_boot)

    return {"aiq": interval("aiq"), "aiq_minus_zero": interval("aiq_minus_zero"),
            "savings_at_95": interval("savings_at_95"),
            "savings_at_100": interval("savings_at_100")}
