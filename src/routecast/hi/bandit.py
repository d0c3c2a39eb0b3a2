"""Learning the offload threshold online, from the feedback HI gets: HI-LCB.

The setting (hierarchical inference learning, Moothedath et al. 2023; the LCB policy is
Chattopadhyay, Sutar, Champati & Moharir, arXiv:2508.08985). Query ``t`` arrives with the
device model's confidence ``p_t`` and an offload cost ``beta_t`` in [0, 1] known up front. The
learner either keeps the local answer, paying ``w_t`` (1 if it was wrong, 0 if right,
fractional for graded quality), or offloads, paying ``beta_t``. The feedback is partial and
policy dependent: ``w_t`` is revealed **only when the query is offloaded** (the cloud's
answer shows whether the local one was right); a kept answer reveals nothing.

With ``psi(p)`` the chance that the local answer is right at confidence ``p``, keeping is
better exactly when ``psi(p) >= 1 - beta``. HI-LCB assumes ``psi`` non-decreasing, so the
best rule is a threshold on ``p``, and it keeps a query only when a *lower* confidence bound on
``psi`` clears ``1 - beta``; until then it offloads, which is also what buys the feedback.

This implementation discretises confidence into ``n_bins`` equal bins (the thresholds are the
bin edges). Monotonicity lets evidence pool: the mean correctness of the observed queries in
bins ``j..b`` is at most ``psi`` at the top of bin ``b``, so ::

    LCB_b = max over windows j <= i <= b of  mean_{j..i} - sqrt(exploration * ln(t) / n_{j..i})

is a (within-bin approximate) lower bound on ``psi`` throughout bin ``b``, non-decreasing in
``b``. A query in bin ``b`` is kept iff ``LCB_b >= 1 - beta_t``: a threshold on confidence.
``discount < 1`` fades old evidence (discounted UCB, Garivier & Moulines 2011) for streams
whose mix drifts.

**Regret** is against the best fixed threshold in hindsight among the same bin edges:
``R(t) = sum_{s<=t} cost_s(learner) - min_k sum_{s<=t} cost_s(theta_k)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError, DataError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Stream:
    """A sequence of queries as the learner's environment sees them.

    ``local_wrong`` is the environment's truth; the learner is shown an entry only for
    queries it offloads. ``beta`` is the offload cost of each query.
    """

    confidence: FloatArray
    local_wrong: FloatArray
    beta: FloatArray

    def __post_init__(self) -> None:
        n = len(self.confidence)
        if len(self.local_wrong) != n or len(self.beta) != n:
            raise DataError(f"stream arrays differ in length: confidence {n}, local_wrong "
                            f"{len(self.local_wrong)}, beta {len(self.beta)}")
        for name, arr in (("confidence", self.confidence), ("local_wrong", self.local_wrong),
                          ("beta", self.beta)):
            if n and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
                raise DataError(f"stream {name} must lie in [0, 1] with no NaN",
                                fix="rescale confidences and costs to [0, 1]")

    @classmethod
    def of(cls, confidence: FloatArray, local_quality: FloatArray,
           beta: float | FloatArray) -> Stream:
        """A stream from the device model's confidence and quality (``1 - quality`` is the
        cost of keeping its answer) and a scalar or per-query offload cost."""
        conf = np.asarray(confidence, dtype=np.float64)
        b = np.broadcast_to(np.asarray(beta, dtype=np.float64), conf.shape).copy()
        return cls(conf, 1.0 - np.asarray(local_quality, dtype=np.float64), b)

    def __len__(self) -> int:
        return len(self.confidence)

    def take(self, order: IntArray) -> Stream:
        """The queries in ``order`` (indices may repeat: draws with replacement)."""
        return Stream(self.confidence[order], self.local_wrong[order], self.beta[order])


def bin_index(confidence: FloatArray, n_bins: int) -> IntArray:
    """Bin of each confidence, ``0 .. n_bins - 1`` (a confidence of 1 is in the last bin)."""
    b = np.floor(np.asarray(confidence, dtype=np.float64) * n_bins).astype(np.int64)
    return np.asarray(np.clip(b, 0, n_bins - 1), dtype=np.int64)


def bin_edges(n_bins: int) -> FloatArray:
    """Threshold ``k`` (offload iff bin < k) as a confidence: ``k / n_bins``; ``k = n_bins``
    offloads everything, a confidence of exactly 1 included."""
    return np.linspace(0.0, 1.0, n_bins + 1)


class HILCB:
    """The LCB offload-threshold learner described in the module docstring.

    ``offload(p, beta)`` decides one query; ``update(p, wrong)`` must be called with the
    revealed cost of keeping it, and only for offloaded queries; ``step()`` once per query
    (offloaded or not) advances the clock used in the confidence radius.
    """

    def __init__(self, n_bins: int = 10, exploration: float = 1.0, discount: float = 1.0):
        if n_bins < 1:
            raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
        if not exploration >= 0:
            raise ConfigError(f"exploration must be >= 0, got {exploration}")
        if not 0 < discount <= 1:
            raise ConfigError(f"discount must lie in (0, 1], got {discount}")
        self.n_bins = n_bins
        self.exploration = exploration
        self.discount = discount
        self.reset()

    def reset(self) -> None:
        self.n_ = np.zeros(self.n_bins)        # (discounted) observations per bin
        self.correct_ = np.zeros(self.n_bins)  # (discounted) sum of 1 - wrong per bin
        self.t_ = 0.0                          # (discounted) rounds so far
        self._lcb: FloatArray | None = None
        self._windows = np.triu(np.ones((self.n_bins, self.n_bins), dtype=bool))
        self._cn = np.zeros(self.n_bins + 1)  # scratch: cumulative counts, leading 0
        self._cs = np.zeros(self.n_bins + 1)

    def step(self) -> None:
        """Advance the clock by one query; with ``discount < 1``, fade all evidence."""
        if self.discount < 1:
            self.n_ *= self.discount
            self.correct_ *= self.discount
            self.t_ = self.t_ * self.discount + 1.0
        else:
            self.t_ += 1.0
        self._lcb = None

    def lcb(self) -> FloatArray:
        """``LCB_b`` for every bin, shape ``(n_bins,)``; ``-inf`` where there is no evidence."""
        if self._lcb is not None:
            return self._lcb
        cn, cs = self._cn, self._cs
        np.cumsum(self.n_, out=cn[1:])
        np.cumsum(self.correct_, out=cs[1:])
        # Window j..i as the row j, column i of an upper triangle.
        n = cn[None, 1:] - cn[:-1, None]
        s = cs[None, 1:] - cs[:-1, None]
        valid = self._windows & (n > 1e-9)
        log_t = math.log(max(self.t_, 2.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(valid, s / n - np.sqrt(self.exploration * log_t / n), -np.inf)
        # Best window ending at i, then the running max over i <= b (monotone psi).
        self._lcb = np.asarray(np.maximum.accumulate(bound.max(axis=0)), dtype=np.float64)
        return self._lcb

    def threshold_index(self, beta: float) -> int:
        """``k``: keep bins ``>= k``, offload bins ``< k`` (``n_bins``: offload all)."""
        ok = self.lcb() >= 1.0 - beta
        return int(np.argmax(ok)) if ok.any() else self.n_bins

    def threshold(self, beta: float) -> float:
        """The current threshold as a confidence (offload iff confidence < it)."""
        return self.threshold_index(beta) / self.n_bins

    def offload(self, confidence: float, beta: float) -> bool:
        return self._bin(confidence) < self.threshold_index(beta)

    def update(self, confidence: float, wrong: float) -> None:
        """Record the revealed cost of keeping an *offloaded* query."""
        b = self._bin(confidence)
        self.n_[b] += 1.0
        self.correct_[b] += 1.0 - wrong
        self._lcb = None

    def _bin(self, confidence: float) -> int:
        return min(max(math.floor(confidence * self.n_bins), 0), self.n_bins - 1)


@dataclass(frozen=True, eq=False)
class OnlineRun:
    """What the learner did: per query, offloaded or not, its cost, and its threshold."""

    offloaded: BoolArray
    cost: FloatArray
    threshold: FloatArray


def run_online(learner: HILCB, stream: Stream) -> OnlineRun:
    """Play ``stream`` against ``learner``; it sees ``local_wrong`` only when it offloads."""
    learner.reset()
    n = len(stream)
    off = np.zeros(n, dtype=bool)
    cost = np.empty(n)
    thr = np.empty(n)
    bins = bin_index(stream.confidence, learner.n_bins)
    for t in range(n):
        learner.step()
        p, beta = float(stream.confidence[t]), float(stream.beta[t])
        k = learner.threshold_index(beta)
        thr[t] = k / learner.n_bins
        if bins[t] < k:
            off[t] = True
            cost[t] = beta
            learner.update(p, float(stream.local_wrong[t]))  # the cloud answer reveals it
        else:
            cost[t] = stream.local_wrong[t]  # paid, but never shown to the learner
    return OnlineRun(off, cost, thr)


def fixed_threshold_costs(stream: Stream, n_bins: int) -> FloatArray:
    """Cost of every fixed threshold ``k = 0 .. n_bins`` on every query, shape ``(T, K+1)``."""
    b = bin_index(stream.confidence, n_bins)
    k = np.arange(n_bins + 1)
    offload = b[:, None] < k[None, :]
    return np.asarray(np.where(offload, stream.beta[:, None], stream.local_wrong[:, None]),
                      dtype=np.float64)


def regret_curve(run: OnlineRun, stream: Stream, n_bins: int) -> FloatArray:
    """``R(t)`` for ``t = 1 .. T`` against the best fixed bin-edge threshold up to ``t``."""
    best = np.cumsum(fixed_threshold_costs(stream, n_bins), axis=0).min(axis=1)
    return np.asarray(np.cumsum(run.cost) - best, dtype=np.float64)


def best_fixed_threshold(stream: Stream, n_bins: int) -> tuple[float, float]:
    """The best fixed bin-edge threshold over the whole stream and its total cost."""
    totals = fixed_threshold_costs(stream, n_bins).sum(axis=0)
    k = int(np.argmin(totals))
    return (float(bin_edges(n_bins)[k]) if k < n_bins else 1.0), float(totals[k])


# -- query orders -----------------------------------------------------------------------------

def iid_order(n: int, horizon: int, rng: np.random.Generator) -> IntArray:
    """A random permutation when ``horizon <= n``, else ``horizon`` draws with replacement."""
    if horizon <= n:
        return np.asarray(rng.permutation(n)[:horizon], dtype=np.int64)
    return np.asarray(rng.integers(0, n, horizon), dtype=np.int64)


def easy_first_tasks(task: Sequence[str], local_quality: FloatArray) -> set[str]:
    """The tasks the device model does best on, taken in that order while they fit in half
    of the queries (at least one task): phase one of a mix shift."""
    labels = np.asarray(task)
    names = sorted(set(task), key=lambda t: -float(np.mean(local_quality[labels == t])))
    if len(names) < 2:
        raise DataError("a mix shift needs at least two tasks",
                        fix="use data with task labels spanning several tasks")
    chosen: set[str] = set()
    count = 0
    for name in names:
        size = int((labels == name).sum())
        if chosen and count + size > len(labels) / 2:
            break
        chosen.add(name)
        count += size
    return chosen


def shifted_order(task: Sequence[str], first: set[str], horizon: int,
                  rng: np.random.Generator) -> IntArray:
    """An order whose task mix changes at ``horizon // 2``.

    Up to ``len(task)`` queries, without replacement: the first half takes queries of the
    ``first`` tasks (shuffled), topped up with others if they run out; the second half takes
    the other tasks' queries, topped up with what is left of the first tasks. Longer horizons
    draw with replacement: the first half from the ``first`` tasks only, the second half from
    the others only.
    """
    labels = np.asarray(task)
    in_first = np.isin(labels, sorted(first))
    a, b = np.flatnonzero(in_first), np.flatnonzero(~in_first)
    if not len(a) or not len(b):
        raise ConfigError("a mix shift needs queries both in and out of the first tasks")
    half = horizon // 2
    if horizon > len(labels):
        return np.asarray(np.r_[rng.choice(a, half), rng.choice(b, horizon - half)],
                          dtype=np.int64)
    pool_a, pool_b = rng.permutation(a), rng.permutation(b)
    head = pool_a[:half]
    head = np.r_[head, pool_b[: half - len(head)]]
    pool_a, pool_b = pool_a[half:], pool_b[half - min(half, len(a)):]
    tail = pool_b[: horizon - half]
    tail = np.r_[tail, pool_a[: horizon - half - len(tail)]]
    return np.asarray(np.r_[rng.permutation(head), rng.permutation(tail)], dtype=np.int64)


# -- repeated runs ----------------------------------------------------------------------------

CHECKPOINTS = (("T/4", 0.25), ("T/2", 0.5), ("T", 1.0))


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def regret_experiment(stream: Stream, *, horizon: int, seeds: Sequence[int], n_bins: int = 10,
                      exploration: float = 0.5, discount: float = 1.0,
                      shift_task: Sequence[str] | None = None,
                      shift_first: set[str] | None = None,
                      n_curve: int = 200) -> dict[str, object]:
    """Run HI-LCB over several seeded query orders and summarise its regret.

    Without ``shift_task`` the orders are iid (:func:`iid_order`); with it, the task mix
    changes at ``horizon // 2`` (:func:`shifted_order`, first the ``shift_first`` tasks). The
    result holds ``R`` at ``T/4``, ``T/2`` and ``T`` (mean and sample sd over seeds), ``R(T)/T``,
    the growth ``R(T)/R(T/2)`` (2 for linear regret, near 1 for logarithmic), the learner's
    and the best fixed threshold's mean cost per query, and the mean curve on ``n_curve``
    points.
    """
    if horizon < 4:
        raise ConfigError(f"the horizon must be at least 4 queries, got {horizon}")
    if not seeds:
        raise ConfigError("give at least one seed")
    if shift_task is not None and len(shift_task) != len(stream):
        raise DataError(f"{len(shift_task)} task labels for a stream of {len(stream)} queries")
    curves, learner, best, best_thr, final_thr, share = [], [], [], [], [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        if shift_task is None:
            order = iid_order(len(stream), horizon, rng)
        else:
            order = shifted_order(shift_task, shift_first or set(), horizon, rng)
        s = stream.take(order)
        run = run_online(HILCB(n_bins, exploration, discount), s)
        curves.append(regret_curve(run, s, n_bins))
        thr, total = best_fixed_threshold(s, n_bins)
        learner.append(float(run.cost.mean()))
        best.append(total / horizon)
        best_thr.append(thr)
        final_thr.append(float(run.threshold[-1]))
        share.append(float(run.offloaded.mean()))
    curve = np.vstack(curves)
    at = {name: _mean_sd(curve[:, max(round(frac * horizon), 1) - 1].tolist())
          for name, frac in CHECKPOINTS}
    half = curve[:, horizon // 2 - 1]
    growth = [float(c[-1] / h) for c, h in zip(curve, half, strict=True) if h > 0]
    ts = np.unique(np.linspace(1, horizon, min(n_curve, horizon)).round().astype(np.int64))
    return {
        "horizon": horizon, "seeds": list(seeds), "shift": shift_task is not None,
        "shift_first_tasks": sorted(shift_first) if shift_task is not None and shift_first
        else None,
        "regret_at": at,
        "regret_per_query": _mean_sd((curve[:, -1] / horizon).tolist()),
        "growth_T_over_T2": _mean_sd(growth) if growth else None,
        "learner_cost": _mean_sd(learner), "best_fixed_cost": _mean_sd(best),
        "best_fixed_thresholds": best_thr, "final_thresholds": final_thr,
        "offload_share": _mean_sd(share),
        "curve": {"t": ts.tolist(), "mean": curve[:, ts - 1].mean(axis=0).tolist(),
                  "sd": (curve[:, ts - 1].std(axis=0, ddof=1) if len(seeds) > 1
                         else np.zeros(len(ts))).tolist()},
    }
