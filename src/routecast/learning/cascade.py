"""Learning a cascade's thresholds from its own traffic.

A cascade endpoint (cheapest model first, escalating while the signal's score of an answer is
below the step's threshold) needs, to tune its thresholds, rows of the form: for one prompt,
every step's signal score, every step's quality and every step's cost. A live request gives
part of a row for free: the scores and costs of the steps it visited (the cascade's trace) and
their answers. The rest is bought:

* **judge calls** grade every step's answer (the visited steps' answers are at hand);
* **shadow requests** ask the steps the request did not reach, as the cascade would have
  asked them (the signal's probe, e.g. with log-probs), so that their scores and answers
  exist too.

Only complete rows are tuned on, and a request is completed or not as a whole, by a coin
flip: :class:`RowSampler` gives each request a probability of being completed, ``p =
min(1, (lam / cost) ** power)`` where ``cost`` is what completing it would cost and ``lam`` is
set so that the recent requests would have spent the meter's pace. A request that escalated
to the last step is cheap to complete (judge calls only), one kept early is dear (the later
steps' answers), so cheap rows are bought more often. Each row carries its weight ``1 / p``
(capped), and the tuning uses weighted means: the sample stands for the traffic as it came,
not for the share that was cheap to label. ``power`` 0.5 is the compromise between buying
many rows (``power`` 1: equal spend per row) and keeping the weights even (``power`` 0: the
same probability for every request).

Cold start: a cascade endpoint that learns may omit its thresholds; it then starts by never
accepting an early answer (every request is answered by the last step, the strongest; the
early steps are still asked, so every row is complete for judge calls alone). Configured
thresholds are the starting point otherwise.

**Refits**, when :meth:`CascadeLearner.due` (after ``first_refit`` complete rows, then every
``refit_every``): rows are split by a hash of the prompt and the refit's number into
training and held-out parts (a fresh split each time).
On the training rows every combination of per-step thresholds (``n_levels`` quantiles of the
step's scores, plus "never accept") is replayed exactly, with weights, and the target picks
one: the cheapest reaching ``quality_fraction`` of the best single step's mean quality, or the
best within ``budget_usd_per_query``, in both cases by ``z`` standard errors of the sample
(:class:`Goal`): tuned to the bare point estimate on 150 rows, a three-step chain on the cascade
set missed its target on the test split by 1-9 points (``benchmarks/cascade_learning.py``). The
tuned thresholds replace the current ones only if they validate at least as well on the
held-out rows, by :func:`validation_loss`; a refit that validates worse is reported and
dropped. With ``judge_noise`` ``p``, quality labels are
de-biased first (``(y - p) / (1 - 2 p)``), so that the target means true quality.
"""

from __future__ import annotations

import itertools
import math
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from routecast.cascades.cascade import Cascade
from routecast.data.dataset import FloatArray
from routecast.learning.learner import debias

#: A threshold no score reaches: the step never keeps its answer.
NEVER = math.inf
#: The validation loss of a cascade that surely misses its goal starts here (any cascade that
#: may meet it scores below; see :func:`validation_loss`).
MISSED = 1000.0


@dataclass
class CascadeLearnerSettings:
    """How a cascade endpoint learns; the server builds it from the ``learning:`` block."""

    refit_every: int = 50
    first_refit: int = 30
    holdout_fraction: float = 0.3
    #: Held-out complete rows needed before a refit may be swapped in.
    min_holdout_rows: int = 10
    quality_fraction: float | None = 0.95
    budget_usd_per_query: float | None = None
    #: Threshold levels per step tried at a refit (quantiles of the step's scores).
    n_levels: int = 16
    #: Standard errors of the rows' sample between a tuned cascade and its goal
    #: (:func:`tune_thresholds`); 0: the sample's point estimate.
    z: float = 1.0
    #: Validation: a cascade misses its goal on the held-out rows when it falls short by more
    #: than this many standard errors (:func:`validation_loss`); 0: when it falls short at
    #: all. A lenient test (1) let refit after refit swap in a slightly cheaper cascade that
    #: was short within the noise, and the endpoint drifted below its target.
    miss_z: float = 0.0
    judge_noise: float = 0.0
    #: The largest weight one row may carry (a row sampled with probability p weighs 1/p).
    max_weight: float = 50.0
    seed: int = 0


@dataclass(frozen=True)
class CascadeSnapshot:
    """The cascade served, swapped whole: ``kind`` is ``cold`` (never accept early),
    ``configured``, ``tuned`` or ``published`` (loaded from another replica)."""

    cascade: Cascade
    version: int
    kind: str


@dataclass
class CascadeRefit:
    version: int
    swapped: bool
    rows: int
    labels: int
    #: Validation losses on the held-out rows: ``current`` and ``tuned`` (inf: not validated).
    scores: dict[str, float]
    thresholds: tuple[float, ...]
    seconds: float


class RowSampler:
    """Which requests are completed into labelled rows; see the module docstring.

    ``window`` recent requests' completion costs set ``lam``; ``min_probability`` bounds the
    weights from above (a dear row is still bought now and then)."""

    def __init__(self, *, power: float = 0.5, window: int = 200,
                 min_probability: float = 0.02, seed: int = 0) -> None:
        self.power = power
        self.min_probability = min_probability
        self._costs: deque[float] = deque(maxlen=window)
        self._rng = np.random.default_rng(seed)

    def probability(self, cost_usd: float, pace_usd: float) -> float:
        """The chance this request (completing it costs ``cost_usd``) is completed, when the
        mean spend per request may be ``pace_usd``."""
        cost = max(cost_usd, 1e-12)
        self._costs.append(cost)
        if not math.isfinite(pace_usd):
            return 1.0
        if pace_usd <= 0:
            return 0.0
        costs = np.asarray(self._costs)
        if costs.mean() <= pace_usd:
            return 1.0
        lo, hi = 1e-12, float(costs.max())  # spend(lam) rises with lam; spend(hi) = all
        for _ in range(40):  # bisection in log space
            lam = math.sqrt(lo * hi)
            spend = float((np.minimum(1.0, (lam / costs) ** self.power) * costs).mean())
            lo, hi = (lam, hi) if spend < pace_usd else (lo, lam)
        lam = math.sqrt(lo * hi)
        return max(self.min_probability, min(1.0, float((lam / cost) ** self.power)))

    def draw(self, probability: float) -> bool:
        return bool(self._rng.random() < probability)


@dataclass
class _Rows:
    """Growing per-prompt arrays: one row per prompt, one column per step."""

    k: int
    index: dict[str, int] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.quality = np.full((64, self.k), np.nan)
        self.cost = np.full((64, self.k), np.nan)
        self.score = np.full((64, self.k), np.nan)
        self.scored = np.zeros((64, self.k), dtype=bool)
        self.weight = np.full(64, np.nan)

    def row(self, prompt: str) -> int:
        i = self.index.get(prompt)
        if i is not None:
            return i
        i = len(self.prompts)
        if i == len(self.weight):  # grow by doubling
            self.quality = np.vstack([self.quality, np.full_like(self.quality, np.nan)])
            self.cost = np.vstack([self.cost, np.full_like(self.cost, np.nan)])
            self.score = np.vstack([self.score, np.full_like(self.score, np.nan)])
            self.scored = np.vstack([self.scored, np.zeros_like(self.scored)])
            self.weight = np.concatenate([self.weight, np.full_like(self.weight, np.nan)])
        self.index[prompt] = i
        self.prompts.append(prompt)
        return i

    def complete(self) -> np.ndarray:
        """Rows with a weight, every step's quality and cost, and every early step's score."""
        n = len(self.prompts)
        return np.asarray(np.isfinite(self.weight[:n])
                          & np.isfinite(self.quality[:n]).all(axis=1)
                          & np.isfinite(self.cost[:n]).all(axis=1)
                          & self.scored[:n, :self.k - 1].all(axis=1))


def replay_rows(thresholds: Sequence[float], scores: FloatArray, quality: FloatArray,
                cost: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per complete row, the quality of the answer the cascade with ``thresholds`` keeps and
    what it paid: each step pays for the rows that reach it and keeps those whose score
    reaches its threshold (a NaN or -inf score never does); the last step answers the rest."""
    n, k = quality.shape
    reach = np.ones(n, dtype=bool)
    got_q = np.zeros(n)
    paid = np.zeros(n)
    for j in range(k):
        paid += np.where(reach, cost[:, j], 0.0)
        keep = reach if j == k - 1 else reach & (np.nan_to_num(scores[:, j], nan=-np.inf)
                                                  >= thresholds[j])
        got_q += np.where(keep, quality[:, j], 0.0)
        reach &= ~keep
    return got_q, paid


def replay_thresholds(thresholds: Sequence[float], scores: FloatArray, quality: FloatArray,
                      cost: FloatArray, weights: FloatArray) -> tuple[float, float]:
    """Weighted mean quality and cost of the cascade with ``thresholds`` over complete rows."""
    got_q, paid = replay_rows(thresholds, scores, quality, cost)
    w = weights / weights.sum()
    return float(w @ got_q), float(w @ paid)


def _bound(values: FloatArray, weights: FloatArray, z: float) -> float:
    """Weighted mean of ``values`` minus ``z`` standard errors (the errors of a weighted
    mean of independent rows: ``sqrt(sum w_i^2 (v_i - mean)^2) / sum w_i``)."""
    total = float(weights.sum())
    mean = float(weights @ values) / total
    se = math.sqrt(float((weights ** 2) @ (values - mean) ** 2)) / total
    return mean - z * se


@dataclass(frozen=True)
class Goal:
    """What a cascade is tuned to: ``quality_fraction`` of the best single step's mean
    quality, or the best quality within ``budget_usd`` per query; ``z`` standard errors of
    the rows' sample must separate a tuned cascade from missing it (see
    :func:`tune_thresholds`)."""

    quality_fraction: float | None = 0.95
    budget_usd: float | None = None
    z: float = 1.0

    def slack(self, got_q: FloatArray, paid: FloatArray, quality: FloatArray,
              weights: FloatArray) -> float:
        """How far the replayed rows (``got_q``, ``paid``) are on the right side of the
        goal, ``z`` standard errors taken off: for the quality target, the paired per-row
        difference ``got_q - fraction * q_best`` (``q_best``: the best step's column); for a
        budget, ``budget - paid``. Negative: the goal may be missed."""
        if self.budget_usd is not None:
            return _bound(self.budget_usd - paid, weights, self.z)
        best = int(np.argmax(weights @ quality))
        fraction = self.quality_fraction or 0.95
        return _bound(got_q - fraction * quality[:, best], weights, self.z)


def tune_thresholds(scores: FloatArray, quality: FloatArray, cost: FloatArray,
                    weights: FloatArray, goal: Goal | None = None, *, n_levels: int = 16
                    ) -> tuple[float, ...]:
    """The thresholds of a fixed chain (columns in step order) for ``goal`` on weighted rows.

    Quality target: the cheapest whose quality is at least the target by ``goal.z`` standard
    errors of the paired difference (a few hundred labelled rows leave a point or two of
    noise, and the cheapest point that merely reaches the target in the sample misses it on
    new prompts about half the time); when none is, the best quality. Budget: the best
    quality whose cost is within the budget by ``z`` standard errors; else the cheapest."""
    goal = goal or Goal()
    k = quality.shape[1]
    probs = np.arange(n_levels) / max(n_levels - 1, 1)
    grids = []
    for j in range(k - 1):
        finite = scores[:, j][np.isfinite(scores[:, j])]
        levels = np.unique(np.quantile(finite, probs)) if finite.size else np.array([])
        grids.append([*levels.tolist(), NEVER])
    w = weights / weights.sum()
    results = []
    for t in itertools.product(*grids):
        got_q, paid = replay_rows(t, scores, quality, cost)
        results.append((t, float(w @ got_q), float(w @ paid),
                        goal.slack(got_q, paid, quality, weights)))
    ok = [r for r in results if r[3] >= -1e-12]
    if goal.budget_usd is not None:
        best = (max(ok, key=lambda r: (r[1], -r[2])) if ok
                else min(results, key=lambda r: (r[2], -r[1])))
    else:
        best = (min(ok, key=lambda r: (r[2], -r[1])) if ok
                else max(results, key=lambda r: (r[1], -r[2])))
    return tuple(float(x) for x in best[0])


def validation_loss(thresholds: Sequence[float], scores: FloatArray, quality: FloatArray,
                    cost: FloatArray, weights: FloatArray, goal: Goal | None = None,
                    miss_z: float = 0.0) -> float:
    """How well ``thresholds`` meet ``goal`` on held-out rows (lower is better), as one
    number that orders lexicographically: a cascade that misses the goal (by more than
    ``miss_z`` standard errors: ``slack`` with ``-miss_z``) scores ``MISSED`` plus by how
    much (quality points, or the budget's share), so it loses to any that meets it; among
    those, the cost as a share of the best step's (quality target), or minus the
    quality as a share of the best step's (budget)."""
    goal = goal or Goal()
    got_q, paid = replay_rows(thresholds, scores, quality, cost)
    w = weights / weights.sum()
    mean_q, mean_c = w @ quality, w @ cost
    best = int(np.argmax(mean_q))
    lenient = Goal(goal.quality_fraction, goal.budget_usd, -miss_z)
    short = -lenient.slack(got_q, paid, quality, weights)
    if short > 0:
        return MISSED + (short / goal.budget_usd if goal.budget_usd else short)
    if goal.budget_usd is not None:
        return float(-(w @ got_q) / max(float(mean_q[best]), 1e-12))
    return float((w @ paid) / max(float(mean_c[best]), 1e-12))


class CascadeLearner:
    """One cascade endpoint's rows and current thresholds; see the module docstring.

    ``cascade`` is the configured cascade (its models and signal stay; its thresholds are the
    starting point), or, with ``cold``, only its models and signal (never accept early)."""

    def __init__(self, cascade: Cascade, settings: CascadeLearnerSettings | None = None, *,
                 cold: bool = False) -> None:
        self.settings = settings or CascadeLearnerSettings()
        self.models = cascade.models
        self._col = {m: j for j, m in enumerate(self.models)}
        start = (Cascade(cascade.models, (NEVER,) * (len(cascade.models) - 1), cascade.signal)
                 if cold else cascade)
        self.current = CascadeSnapshot(start, 0, "cold" if cold else "configured")
        self.reports: list[CascadeRefit] = []
        self.rows = _Rows(len(self.models))
        self.n_labels = 0
        self._next_refit = self.settings.first_refit

    # -- rows ------------------------------------------------------------------------------

    def is_holdout(self, prompt: str, refit: int = 0) -> bool:
        """Whether ``prompt``'s row is held out at refit number ``refit`` (a hash of both:
        each refit draws its own split, so that one unlucky split does not stop every refit
        from validating; with a fixed split, a seed whose held-out rows were harder for the
        cheap steps kept a three-step chain at its cold start through 1,188 requests)."""
        s = self.settings
        return zlib.crc32(f"{s.seed}:{refit}:{prompt}".encode()) / 2**32 < s.holdout_fraction

    def record(self, prompt: str, model: str, quality: float | None,
               cost_usd: float | None = None, *, score: float | None = None,
               scored: bool = False, weight: float | None = None) -> None:
        """One step's label on ``prompt``: its ``quality`` (``None``: not graded), what its
        answer cost, and, with ``scored``, its signal ``score`` (NaN or ``None``: the signal
        failed, which never accepts: kept as -inf); ``weight`` is the row's (``1 / p``, see
        :class:`RowSampler`). A model that is not a step is ignored."""
        j = self._col.get(model)
        if j is None:
            return
        r = self.rows
        i = r.row(prompt)
        if quality is not None and 0.0 <= quality <= 1.0:
            r.quality[i, j] = quality
            self.n_labels += 1
        if cost_usd is not None and math.isfinite(cost_usd):
            r.cost[i, j] = cost_usd
        if scored:
            failed = score is None or math.isnan(score)
            r.score[i, j] = -math.inf if failed else score
            r.scored[i, j] = True
        if weight is not None and math.isfinite(weight) and weight > 0:
            r.weight[i] = min(weight, self.settings.max_weight)

    def has_row(self, prompt: str) -> bool:
        i = self.rows.index.get(prompt)
        return i is not None and bool(np.isfinite(self.rows.weight[i]))

    def complete_rows(self) -> int:
        return int(self.rows.complete().sum())

    def mean_costs(self) -> FloatArray:
        """Each step's mean recorded cost (NaN where none is recorded yet)."""
        n = len(self.rows.prompts)
        c = self.rows.cost[:n]
        have = np.isfinite(c)
        with np.errstate(invalid="ignore"):
            return np.asarray(np.where(have, c, 0.0).sum(axis=0) / have.sum(axis=0))

    def _parts(self, refit: int) -> list[tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
        """(scores, quality, cost, weights) of the complete training and held-out rows."""
        r = self.rows
        complete = r.complete()
        held = np.asarray([self.is_holdout(p, refit) for p in r.prompts], dtype=bool)
        return [self._take(np.flatnonzero(complete & (held == part))) for part in (False, True)]

    def _take(self, rows: np.ndarray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        r = self.rows
        q = r.quality[rows]
        if self.settings.judge_noise > 0:
            q = debias(q, self.settings.judge_noise)
        return r.score[rows], q, r.cost[rows], r.weight[rows]

    # -- refitting -------------------------------------------------------------------------

    def due(self) -> bool:
        return self.complete_rows() >= self._next_refit

    def refit(self) -> CascadeRefit:
        """Tune on the training rows, validate against the current thresholds on the held-out
        rows, swap if no worse; see the module docstring."""
        t0 = time.perf_counter()
        s = self.settings
        n = self.complete_rows()
        self._next_refit = n + min(max(n, s.first_refit), s.refit_every)
        train, hold = self._parts(len(self.reports))
        current = self.current
        goal = Goal(s.quality_fraction, s.budget_usd_per_query, s.z)
        scores: dict[str, float] = {"current": math.inf, "tuned": math.inf}
        swapped = False
        tuned = current.cascade.thresholds
        if len(train[1]) >= 2 and len(hold[1]) >= s.min_holdout_rows:
            tuned = tune_thresholds(*train, goal, n_levels=s.n_levels)
            scores = {"current": validation_loss(current.cascade.thresholds, *hold, goal,
                                                 s.miss_z),
                      "tuned": validation_loss(tuned, *hold, goal, s.miss_z)}
            swapped = scores["tuned"] <= scores["current"] and tuned != current.cascade.thresholds
        if swapped:
            self.current = CascadeSnapshot(  # the swap: one assignment
                Cascade(self.models, tuned, current.cascade.signal), current.version + 1,
                "tuned")
        report = CascadeRefit(self.current.version, swapped, n, self.n_labels, scores, tuned,
                              time.perf_counter() - t0)
        self.reports.append(report)
        return report

    def adopt(self, thresholds: Sequence[float], rows: int) -> None:
        """Serve ``thresholds`` tuned elsewhere (another replica, on ``rows`` complete rows);
        the next refit waits as if this learner had tuned them."""
        s = self.settings
        self._next_refit = max(self._next_refit, rows + min(max(rows, s.first_refit),
                                                            s.refit_every))
        cur = self.current
        self.current = CascadeSnapshot(Cascade(self.models, tuple(thresholds),
                                               cur.cascade.signal), cur.version + 1,
                                       "published")
