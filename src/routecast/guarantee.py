"""Quality targets met with a stated probability: one-sided bounds and a Learn-then-Test search.

The question. A user asks for "at least ``fraction`` of the best single model's quality" and a
``confidence`` ``1 - delta``. On a grid of operating points (cost weights of a router, tuned
cascades, mixes of single models) we want the cheapest point whose *expected* quality on new
prompts from the same distribution (exchangeable with the validation split) reaches the
target, except with probability at most ``delta``, using nothing but the validation split.

Learn then Test (Angelopoulos, Bates, Candes, Jordan & Lei 2021, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052) turns this into
multiple testing: for every grid point ``k`` test the null ``H_k: point k misses the target``
with a valid p-value, and pick among the rejected nulls. Fixed-sequence testing keeps the
family-wise error at ``delta``: walk the grid in an order fixed *before* looking at the
validation outcomes (here: from the most to the least expensive, as predicted from the prompts
alone), reject while ``p_k <= delta`` and stop at the first point that is not rejected. Every
rejected point meets the target simultaneously with probability ``>= 1 - delta``, so the
cheapest of them (by validation cost) may be chosen. The bounds follow Bates, Angelopoulos,
Lei, Malik & Jordan 2021, "Distribution-Free, Risk-Controlling Prediction Sets" (RCPS,
arXiv:2101.02703).

The target is estimated too. ``fraction`` times the best single model's quality is unknown;
plugging in its validation estimate would let noise in the reference leak into the guarantee.
Instead each null is tested *paired*, against every model ``j``:

    H_kj: E[q_k - fraction * y_j] < 0,

where ``q_k`` is the point's quality and ``y_j`` model ``j``'s, per prompt. The point meets the
target iff it beats ``fraction`` times *every* model, so ``H_k`` is the union of the ``H_kj``
and ``p_k = max_j p_kj`` is a valid p-value for it (an intersection-union test: under ``H_k``
the null of the truly best model holds, and its p-value alone is valid). Pairing also helps:
a router that mostly picks the best model has a small per-prompt difference to it, which a
variance-adaptive bound exploits.

The p-values. Per-prompt differences ``d = q - fraction * y`` lie in ``[-fraction, 1]`` and
are rescaled to ``z = (d + fraction) / (1 + fraction)`` in ``[0, 1]``; the null is
``E[z] < m`` with ``m = fraction / (1 + fraction)``.

* ``"wsr"`` (default): the betting martingale of Waudby-Smith & Ramdas ("Estimating means of
  bounded random variables by betting", arXiv:2010.09686), the bound RCPS found tightest:
  ``K_t = prod_{i<=t} (1 + nu_i (z_i - m))`` with predictable bets ``nu_i`` from a running
  variance estimate, truncated to ``nu_i <= 0.75 / m`` so the capital stays positive. Under the
  null ``K`` is a non-negative supermartingale, so by Ville's inequality
  ``p = min(1, 1 / max_t K_t)`` is valid. Prompts are taken in a seeded random order.
* ``"hb"``: Hoeffding-Bentkus (RCPS, Prop. 3 / LTT eq. 7): the smaller of the Hoeffding tail
  and ``e`` times the binomial tail at the observed mean. It ignores the variance, so it needs
  several times the prompts: on the shared data sets it cannot certify even the best model
  itself at 95 % of its own quality from a few hundred validation prompts (the difference is
  ``0.05 * y``, the bound's slack ~``sqrt(log(1/delta) / 2n)`` on a range of 1.95).

For reports, :func:`quality_lower_bound` gives a one-sided ``1 - delta`` lower bound on one
point's mean quality: Clopper-Pearson where qualities are 0/1 (exact binomial), the WSR bound
otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routecast.arrays import FloatArray, IntArray
from routecast.errors import ConfigError

METHODS = ("wsr", "hb")
#: Bets are truncated at this share of the largest bet that keeps the capital positive.
_BET_CAP = 0.75


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {1 - delta:g}")


def wsr_p_value(z: FloatArray, m: float, delta: float, *, seed: int = 0) -> float:
    """p-value of ``H0: E[z] < m`` for ``z`` in ``[0, 1]`` (betting martingale; module doc).

    The bets are tuned for level ``delta``; the p-value is valid at every level.
    """
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    if n == 0:
        return 1.0
    if m <= 0:
        return 0.0 if np.mean(z) > 0 else 1.0
    z = z[np.random.default_rng(seed).permutation(n)]
    t = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(z)) / (t + 1)
    var = (0.25 + np.cumsum((z - mu) ** 2)) / (t + 1)
    prev_var = np.r_[0.25, var[:-1]]  # predictable: the bet on z_i uses z_1..z_{i-1} only
    nu = np.minimum(np.sqrt(2 * math.log(1 / delta) / (n * prev_var)), _BET_CAP / m)
    log_k = np.cumsum(np.log1p(nu * (z - m)))
    return float(min(1.0, math.exp(-max(0.0, float(log_k.max())))))


def hb_p_value(z: FloatArray, m: float) -> float:
    """Hoeffding-Bentkus p-value of ``H0: E[z] < m`` for ``z`` in ``[0, 1]`` (module doc)."""
    from scipy import stats

    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    if n == 0:
        return 1.0
    # In loss form (loss = 1 - z, null: mean loss > alpha = 1 - m), as RCPS writes it.
    alpha, loss = 1.0 - m, float(1.0 - z.mean())
    if alpha <= 0:
        return 1.0
    if alpha >= 1:
        return 0.0 if loss < 1 else 1.0
    a = min(loss, alpha)
    if a <= 0:
        hoeffding = alpha ** n  # the limit of exp(-n h(a, alpha)) as a -> 0
    else:
        h = a * math.log(a / alpha) + (1 - a) * math.log((1 - a) / (1 - alpha))
        hoeffding = math.exp(-n * h)
    bentkus = math.e * float(stats.binom.cdf(math.ceil(n * loss), n, alpha))
    return float(min(1.0, hoeffding, bentkus))


def paired_p_value(quality: FloatArray, models: FloatArray, fraction: float, delta: float, *,
                   method: str = "wsr", seed: int = 0) -> float:
    """p-value of "``quality`` (per prompt) misses ``fraction`` x the best of ``models``
    (``(n, m)``, per prompt and model) in expectation": the largest of the paired p-values
    against each model (module doc)."""
    if method not in METHODS:
        raise ConfigError(f"unknown bound {method!r}; use one of {', '.join(METHODS)}")
    m = fraction / (1 + fraction)
    worst = 0.0
    for j in range(models.shape[1]):
        z = (quality - fraction * models[:, j] + fraction) / (1 + fraction)
        z = np.clip(z, 0.0, 1.0)
        p = wsr_p_value(z, m, delta, seed=seed) if method == "wsr" else hb_p_value(z, m)
        worst = max(worst, p)
        if worst > delta:  # already not rejected: the rest cannot change that
            break
    return worst


@dataclass(frozen=True)
class Certified:
    """The outcome of :func:`fixed_sequence`: the indices of the grid points certified to
    meet the target (in test order) and the p-value of every point tested."""

    rejected: tuple[int, ...]
    p_values: tuple[float, ...]


def fixed_sequence(order: Sequence[int] | IntArray, quality: FloatArray, models: FloatArray,
                   fraction: float, delta: float, *, method: str = "wsr",
                   seed: int = 0) -> Certified:
    """Test the grid points in ``order`` (fixed before looking at outcomes; most expensive
    first) and stop at the first one not certified. ``quality`` is ``(n_points, n_prompts)``,
    each point's realised quality per validation prompt; ``models`` ``(n_prompts, n_models)``.
    """
    _check_delta(delta)
    rejected: list[int] = []
    p_values: list[float] = []
    for k in order:
        p = paired_p_value(quality[int(k)], models, fraction, delta, method=method, seed=seed)
        p_values.append(p)
        if p > delta:
            break
        rejected.append(int(k))
    return Certified(tuple(rejected), tuple(p_values))


def quality_lower_bound(quality: FloatArray, delta: float, *, seed: int = 0) -> float:
    """A one-sided ``1 - delta`` lower confidence bound on the mean of ``quality`` (in
    ``[0, 1]``): Clopper-Pearson for 0/1 qualities, the WSR bound otherwise."""
    _check_delta(delta)
    q = np.asarray(quality, dtype=np.float64)
    n = len(q)
    if n == 0:
        return 0.0
    if np.all((q == 0) | (q == 1)):
        from scipy import stats

        k = int(q.sum())
        return 0.0 if k == 0 else float(stats.beta.ppf(delta, k, n - k + 1))
    lo, hi = 0.0, float(q.mean())
    for _ in range(40):  # the largest m the betting test still rejects "E[q] < m" at
        mid = (lo + hi) / 2
        if wsr_p_value(q, mid, delta, seed=seed) <= delta:
            lo = mid
        else:
            hi = mid
    return lo
