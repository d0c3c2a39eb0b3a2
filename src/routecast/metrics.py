"""Every metric routecast reports, defined once. Pure functions over arrays.

Notation: a policy family (a router swept over its cost weight) yields operating points
``(c_k, q_k)``: mean cost in USD per query and mean quality over the evaluated prompts.

* **Non-decreasing convex hull** ``H``: the upper convex hull of the points, from the cheapest
  point to the best one. Every point on it is reachable by randomising between two operating
  points, and spending more never lowers quality along it.
* **AIQ** (RouterBench, Hu et al. 2024): ``AIQ = 1/(c_max - c_min) * integral_{c_min}^{c_max}
  H(c) dc`` over a cost range shared by every router of one evaluation (here: the cheapest and
  the priciest single model's mean cost). ``H`` is extended flat beyond its end points.
* **AIQ, RouterBench's code convention** (``evaluation/AIQ.py`` in withmartian/routerbench):
  each hull is integrated from *its own first point* ``c_0`` to the largest cost ``c_max``
  among the curves compared (flat beyond its last vertex), and the area is divided by
  ``c_max``: ``AIQ_RB = 1/c_max * integral_{c_0}^{c_max} H(c) dc``. It counts nothing below
  ``c_0`` and divides by the whole cost axis from 0, so it is lower than the range-normalised
  AIQ above by about ``c_min/c_max`` times the quality at the cheap end; gains over the zero
  router agree closely between the two. The bench reports both (``aiq``: range-normalised,
  ``aiq_routerbench``: this one).
* **Zero router**: the hull of the single models' own points, i.e. randomly mixing models with
  no look at the prompt. A router has learned something only if its AIQ beats this one.
* **Savings at x %**: ``1 - c* / c_best`` where ``c*`` is the lowest cost at which ``H``
  reaches ``x`` times the best single model's quality and ``c_best`` is that model's mean cost;
  ``None`` when ``H`` never gets there.
* **Oracle**: per prompt, the cheapest model among those of maximal quality ("cheapest
  correct"). **Oracle gap** = oracle quality - ``H(c_oracle)``: the quality the router leaves
  on the table at the oracle's spend.
* **PGR** (RouteLLM, Ong et al. 2024), for a weak/strong pair: ``PGR = (q - q_weak) /
  (q_strong - q_weak)``. **APGR** is the area under PGR as a function of the share of calls
  sent to the strong model, over [0, 1] (trapezoids, with the all-weak and all-strong end
  points). **CPT(x %)** is the smallest strong-call share whose PGR reaches ``x``.
* **Delta-IBC** (AutoMix, Aggarwal et al. 2023, arXiv:2310.12963; ``ibc_lift`` in the
  authors' code, github.com/automix-llm/automix): the incremental benefit per cost of a point
  ``(c, q)`` over a small model (SLM), ``IBC = (q - q_SLM) / (c - c_SLM)``, against that of the
  straight small-to-large line, ``IBC_BASE = (q_LLM - q_SLM) / (c_LLM - c_SLM)``:
  ``Delta-IBC = (IBC - IBC_BASE) / IBC_BASE`` (AutoMix prints it x 100). Positive means the
  point buys quality more cheaply than mixing the two models at random.
* **Bootstrap CI**: the 2.5 and 97.5 percentiles of a statistic recomputed on the evaluated
  prompts resampled with replacement (seeded), with the cost range and best single model
  recomputed on each resample too.
"""

from __future__ import annotations

import numpy as np

from routecast.arrays import FloatArray, IntArray


def nondecreasing_hull(cost: FloatArray, quality: FloatArray) -> FloatArray:
    """Vertices ``(k, 2)`` of the non-decreasing upper convex hull, sorted by cost."""
    pts = np.column_stack([np.asarray(cost, float), np.asarray(quality, float)])
    if pts.size == 0:
        raise ValueError("no operating points")
    # Highest quality first among equal costs, then keep one point per cost.
    pts = pts[np.lexsort((-pts[:, 1], pts[:, 0]))]
    _, first = np.unique(pts[:, 0], return_index=True)
    pts = pts[first]
    # Only points that beat everything cheaper can be on a non-decreasing frontier.
    keep = pts[:, 1] > np.maximum.accumulate(np.r_[-np.inf, pts[:-1, 1]])
    pts = pts[keep]
    hull: list[FloatArray] = []
    for p in pts:  # Andrew's monotone chain, upper part
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()  # hull[-1] lies on or below the chord: not a vertex
            else:
                break
        hull.append(p)
    return np.asarray(hull)


def hull_quality_at(hull: FloatArray, cost: float) -> float:
    """``H(cost)``: linear between vertices, flat beyond the ends."""
    return float(np.interp(cost, hull[:, 0], hull[:, 1]))


def aiq(cost: FloatArray, quality: FloatArray, c_min: float, c_max: float) -> float:
    """Average improvement in quality (RouterBench) over ``[c_min, c_max]``; see module doc."""
    if not c_max > c_min:
        raise ValueError(f"empty cost range [{c_min}, {c_max}]")
    hull = nondecreasing_hull(cost, quality)
    inner = hull[(hull[:, 0] > c_min) & (hull[:, 0] < c_max), 0]
    xs = np.r_[c_min, inner, c_max]
    ys = np.asarray(np.interp(xs, hull[:, 0], hull[:, 1]), dtype=np.float64)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / (c_max - c_min))


def aiq_routerbench(cost: FloatArray, quality: FloatArray, c_max: float) -> float:
    """AIQ by RouterBench's code convention over ``[first hull point, c_max]``; see module doc."""
    hull = nondecreasing_hull(cost, quality)
    if not c_max > 0:
        raise ValueError(f"the largest cost must be > 0, got {c_max}")
    if c_max < hull[-1, 0]:
        raise ValueError(f"c_max {c_max} lies below the hull's last point {hull[-1, 0]}")
    xs = np.r_[hull[:, 0], c_max]
    ys = np.r_[hull[:, 1], hull[-1, 1]]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / c_max)


def cost_to_reach(cost: FloatArray, quality: FloatArray, target: float) -> float | None:
    """Lowest cost at which the hull reaches ``target`` quality, or ``None``."""
    hull = nondecreasing_hull(cost, quality)
    if hull[-1, 1] < target - 1e-12:
        return None
    if hull[0, 1] >= target:
        return float(hull[0, 0])
    k = int(np.argmax(hull[:, 1] >= target - 1e-12))
    x1, y1 = float(hull[k - 1, 0]), float(hull[k - 1, 1])
    x2, y2 = float(hull[k, 0]), float(hull[k, 1])
    return float(x1 + (target - y1) * (x2 - x1) / (y2 - y1))


def savings_at(cost: FloatArray, quality: FloatArray, fraction: float,
               best_quality: float, best_cost: float) -> float | None:
    """``1 - c*/c_best`` at ``fraction`` of the best single model's quality; see module doc."""
    c = cost_to_reach(cost, quality, fraction * best_quality)
    return None if c is None else 1.0 - c / best_cost


def oracle_choice(quality: FloatArray, cost: FloatArray) -> IntArray:
    """Per prompt, the cheapest model among those of maximal quality."""
    best = quality.max(axis=1, keepdims=True)
    return np.asarray(np.where(quality >= best - 1e-12, cost, np.inf).argmin(axis=1),
                      dtype=np.int64)


def oracle_gap(cost: FloatArray, quality: FloatArray, oracle_quality: float,
               oracle_cost: float) -> float:
    """Oracle quality minus the router hull's quality at the oracle's cost."""
    return oracle_quality - hull_quality_at(nondecreasing_hull(cost, quality), oracle_cost)


def pgr(quality: float | FloatArray, q_weak: float, q_strong: float) -> FloatArray:
    """Performance gap recovered; see module doc."""
    if q_strong == q_weak:
        raise ValueError("PGR is undefined when the weak and strong models tie")
    return np.asarray((np.asarray(quality, float) - q_weak) / (q_strong - q_weak))


def _pgr_curve(strong_share: FloatArray, quality: FloatArray, q_weak: float,
               q_strong: float) -> tuple[FloatArray, FloatArray]:
    x = np.r_[0.0, np.asarray(strong_share, float), 1.0]
    y = np.r_[0.0, pgr(np.asarray(quality, float), q_weak, q_strong), 1.0]
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    _, last = np.unique(x[::-1], return_index=True)  # best PGR per share
    idx = len(x) - 1 - last
    return x[idx], y[idx]


def apgr(strong_share: FloatArray, quality: FloatArray, q_weak: float, q_strong: float) -> float:
    """Average PGR over strong-call shares in [0, 1]; see module doc."""
    x, y = _pgr_curve(strong_share, quality, q_weak, q_strong)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def cpt(strong_share: FloatArray, quality: FloatArray, q_weak: float, q_strong: float,
        target_pgr: float) -> float:
    """Smallest share of strong calls at which PGR reaches ``target_pgr`` (e.g. 0.5)."""
    x, y = _pgr_curve(strong_share, quality, q_weak, q_strong)
    return float(x[int(np.argmax(y >= target_pgr - 1e-12))])


def delta_ibc(quality: float, cost: float, slm: tuple[float, float],
              llm: tuple[float, float]) -> float | None:
    """AutoMix's Delta-IBC of the point ``(cost, quality)``; see module doc. ``slm`` and
    ``llm`` are ``(quality, cost)`` pairs. ``None`` where a slope is undefined (equal costs, or
    a "large" model no better than the small one)."""
    (q_slm, c_slm), (q_llm, c_llm) = slm, llm
    if c_llm == c_slm or cost == c_slm:
        return None
    base = (q_llm - q_slm) / (c_llm - c_slm)
    if base <= 0:
        return None
    return float(((quality - q_slm) / (cost - c_slm) - base) / base)


def percentile_interval(values: list[float], *, n_draws: int,
                        level: float = 0.95) -> list[float] | None:
    """Bootstrap percentile interval ``[low, high]`` of ``values``, one per resample.

    Resamples where the statistic is undefined are left out of ``values``; if fewer than half
    of the ``n_draws`` resamples are defined, the interval is ``None``.
    """
    if len(values) < n_draws / 2:
        return None
    a = (1 - level) / 2
    return [float(x) for x in np.quantile(values, [a, 1 - a])]
