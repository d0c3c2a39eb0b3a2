"""Tune a cascade to a budget: pick the models, their order and the thresholds.

Given the signal's scores on *tuning* data, every cascade of a pruned search space is replayed
exactly, and

* :meth:`CascadeSearch.best_within` returns the highest mean quality whose mean cost per
  query fits a budget,
* :meth:`CascadeSearch.cheapest_reaching` the lowest mean cost that reaches a quality target,

either of them optionally under a p95 end-to-end latency budget (seconds; a cascade's latency
is the sum of its visited steps). :meth:`CascadeSearch.frontier` is the whole cost-quality
Pareto front, which the benchmark sweeps.

The search space, and what is pruned to keep it small (9 models have 511 non-empty subsets,
each in up to 4! orders, each with a continuum of thresholds):

* **order**: steps run cheapest first (by mean cost on the tuning data). Asking a dearer model
  before a cheaper one is never cheaper and rarely better, and FrugalGPT, AutoMix and
  Zellinger & Thomson all order by cost;
* **length**: at most ``max_steps`` models (default 4): 255 subsets of 9 models;
* **thresholds**: per step, ``n_levels`` quantiles of that model's scores on the tuning data
  (default 8, at probabilities 1/9 ... 8/9), deduplicated. "Always accept" is the shorter
  cascade, already in the space; "never accept" pays for an ignored answer, never optimal.

With 9 models that is 9 + 36 x 8 + 84 x 8^2 + 126 x 8^3 = 70,473 cascades. Each is evaluated
exactly: per model subset, mean quality and cost of all threshold combinations come from a
few matrix products over "share of prompts still unanswered at step k", so the whole space
costs well under a second. Latency percentiles are not sums, so they are computed only for the
candidates a latency-constrained query actually inspects, in order of preference.

What the tuning data is, is the caller's choice, with one rule: no score may have seen its own
outcome. A fitted signal scoring the prompts it was fitted on flatters itself, so the callers
(``routecast bench`` in :mod:`routecast.bench.cascades`, ``routecast tune-cascade``) fit the
signal on train and tune on train *and* validation, with the train prompts scored out-of-fold
(:meth:`~routecast.signals.base.Signal.cross_fit`); the evaluated split is never part of it.

A coarse grid is also a guard against over-fitting: thresholds picked from a few hundred
validation prompts out of a fine grid chase noise, and the tuned cascade is meant to hold on
data it has not seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast.cascades.cascade import Cascade, FloatArray, IntArray, Replay
from routecast.errors import CalibrationError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from routecast.data.dataset import Dataset

DEFAULT_MAX_STEPS = 4
DEFAULT_LEVELS = 8


@dataclass(frozen=True)
class _Block:
    """All threshold combinations of one ordered model subset."""

    cols: tuple[int, ...]  # dataset columns, in step order
    levels: tuple[FloatArray, ...]  # thresholds per non-last step
    offset: int  # index of the first combination in the flat arrays

    @property
    def size(self) -> int:
        return int(np.prod([len(lv) for lv in self.levels])) if self.levels else 1


class CascadeSearch:
    """Every cascade of the pruned space (see module docstring), replayed on tuning data.

    ``quality`` and ``cost_usd`` hold each candidate's mean on ``data``; a candidate is an
    index into them, turned into a :class:`Cascade` by :meth:`cascade`.
    """

    def __init__(self, data: Dataset, scores: FloatArray, *, signal: str = "confidence",
                 max_steps: int = DEFAULT_MAX_STEPS, n_levels: int = DEFAULT_LEVELS,
                 models: Sequence[str] | None = None) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (data.n_prompts, data.n_models):
            raise ConfigError(f"scores must have shape {(data.n_prompts, data.n_models)}, got "
                              f"{scores.shape}")
        if data.n_prompts == 0:
            raise ConfigError("cannot tune a cascade on an empty dataset")
        if not 1 <= max_steps <= 6:
            raise ConfigError(f"max_steps must lie in 1..6 (the space grows as n_levels ** "
                              f"(max_steps - 1)), got {max_steps}")
        if not 1 <= n_levels <= 64:
            raise ConfigError(f"n_levels must lie in 1..64, got {n_levels}")
        self.data = data
        self.scores = scores
        self.signal = signal
        self.max_steps = max_steps
        self.n_levels = n_levels
        cols = [data.model_index(m) for m in models] if models is not None else list(
            range(data.n_models))
        mean_cost = data.mean_cost_usd()
        # Cheapest first; equal costs put the better model first.
        order = sorted(cols, key=lambda j: (mean_cost[j], -data.mean_quality()[j]))
        probs = np.arange(1, n_levels + 1) / (n_levels + 1)
        levels = {j: np.unique(np.quantile(scores[:, j], probs)) for j in order}
        blocks: list[_Block] = []
        offset = 0
        for k in range(1, min(max_steps, len(order)) + 1):
            for subset in itertools.combinations(order, k):
                block = _Block(subset, tuple(levels[j] for j in subset[:-1]), offset)
                blocks.append(block)
                offset += block.size
        self.blocks = blocks
        q = np.empty(offset)
        c = np.empty(offset)
        for block in blocks:
            bq, bc = _evaluate(block, data, scores)
            q[block.offset:block.offset + block.size] = bq
            c[block.offset:block.offset + block.size] = bc
        self.quality: FloatArray = q
        self.cost_usd: FloatArray = c
        self._starts = np.array([b.offset for b in blocks])

    def __len__(self) -> int:
        return len(self.quality)

    def describe_pruning(self) -> dict[str, Any]:
        """What the search covered and what it left out, for reports."""
        return {
            "order": "cheapest first (mean cost on the tuning data); no other orders",
            "max_steps": self.max_steps, "n_levels": self.n_levels,
            "thresholds": f"per step, {self.n_levels} quantiles of that model's scores on the "
                          "tuning data (deduplicated)",
            "subsets": len(self.blocks), "cascades": len(self),
        }

    def cascade(self, index: int) -> Cascade:
        """The cascade of candidate ``index``."""
        if not 0 <= index < len(self):
            raise ConfigError(f"candidate {index} is outside 0..{len(self) - 1}")
        block = self.blocks[int(np.searchsorted(self._starts, index, side="right")) - 1]
        local = index - block.offset
        picks = np.unravel_index(local, [len(lv) for lv in block.levels]) if block.levels else ()
        return Cascade(tuple(self.data.models[j] for j in block.cols),
                       tuple(float(lv[i]) for lv, i in zip(block.levels, picks, strict=True)),
                       self.signal)

    def replay(self, index: int) -> Replay:
        """Candidate ``index`` replayed on the tuning data."""
        return self.cascade(index).replay(self.data, self.scores)

    def frontier(self) -> IntArray:
        """Candidates on the cost-quality Pareto front of the tuning data, cheapest first."""
        order = np.lexsort((-self.quality, self.cost_usd))
        q = self.quality[order]
        keep = q > np.maximum.accumulate(np.r_[-np.inf, q[:-1]]) + 1e-12
        return np.asarray(order[keep], dtype=np.int64)

    def best_within(self, budget_usd: float, *, max_latency_p95_s: float | None = None) -> int:
        """Highest mean quality with mean cost <= ``budget_usd`` (ties: cheaper), optionally
        with p95 latency <= ``max_latency_p95_s``."""
        if not budget_usd >= 0:
            raise ConfigError(f"budget must be >= 0 USD per query, got {budget_usd}")
        ok = np.flatnonzero(self.cost_usd <= budget_usd * (1 + 1e-9))
        if not len(ok):
            raise CalibrationError(
                f"no cascade costs <= {budget_usd:.3g} USD per query on {self.data.name!r} "
                f"(the cheapest costs {self.cost_usd.min():.3g}); raise the budget")
        ranked = ok[np.lexsort((self.cost_usd[ok], -self.quality[ok]))]
        return self._first_within_latency(ranked, max_latency_p95_s)

    def cheapest_reaching(self, min_quality: float, *,
                          max_latency_p95_s: float | None = None) -> int:
        """Lowest mean cost with mean quality >= ``min_quality`` (ties: better), optionally
        with p95 latency <= ``max_latency_p95_s``."""
        ok = np.flatnonzero(self.quality >= min_quality - 1e-12)
        if not len(ok):
            raise CalibrationError(
                f"no cascade reaches quality {min_quality:.4f} on {self.data.name!r}; the best "
                f"reaches {self.quality.max():.4f}. Lower the target or add models")
        ranked = ok[np.lexsort((-self.quality[ok], self.cost_usd[ok]))]
        return self._first_within_latency(ranked, max_latency_p95_s)

    def _first_within_latency(self, ranked: IntArray, max_p95: float | None) -> int:
        if max_p95 is None:
            return int(ranked[0])
        if self.data.latency_s is None:
            raise ConfigError(f"a latency budget needs recorded latencies, and "
                              f"{self.data.name!r} has none; drop the latency budget")
        best_seen = np.inf
        for index in ranked:
            p95 = self.replay(int(index)).latency_quantile(0.95)
            assert p95 is not None
            if p95 <= max_p95:
                return int(index)
            best_seen = min(best_seen, p95)
        raise CalibrationError(
            f"no cascade that meets the cost/quality goal has p95 latency <= {max_p95:.3g} s "
            f"on {self.data.name!r} (the lowest is {best_seen:.3g} s); relax either budget")


def _evaluate(block: _Block, data: Dataset, scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean quality and cost of every threshold combination of ``block``, flat in C order.

    ``reach[c, i]`` is 1 where prompt ``i`` is still unanswered under combination ``c`` of
    the thresholds so far. Each step pays for every prompt that reaches it and keeps the
    answers it accepts, so sums over prompts are matrix products. The last step's ``reach``
    (the largest tensor, ``n_levels`` times the one before) is never built: its sums are
    products of the one before with the last rejections.
    """
    n = data.n_prompts
    last = len(block.cols) - 1
    if last == 0:
        col = block.cols[0]
        return (np.array([data.quality[:, col].mean()]),
                np.array([data.cost_usd[:, col].mean()]))
    reach = np.ones((1, n))
    total_q = np.zeros(1)
    total_c = np.zeros(1)
    for k, col in enumerate(block.cols[:-1]):
        q, c = data.quality[:, col], data.cost_usd[:, col]
        total_c = total_c + _dot(reach, c)
        accept = (scores[None, :, col] >= block.levels[k][:, None]).astype(np.float64)
        reject = 1.0 - accept
        m, lv = reach.shape[0], accept.shape[0]
        total_q = (total_q[:, None] + _dot(reach * q, accept.T)).ravel()
        total_c = np.repeat(total_c, lv)
        if k < last - 1:
            reach = (reach[:, None, :] * reject[None, :, :]).reshape(m * lv, n)
        else:  # the last step answers every prompt that reaches it
            end = block.cols[-1]
            total_q += _dot(reach * data.quality[:, end], reject.T).ravel()
            total_c += _dot(reach * data.cost_usd[:, end], reject.T).ravel()
    return total_q / n, total_c / n


def _dot(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a @ b`` without BLAS: these products are small and many, and BLAS threads cost
    more than they save on them (7x the CPU time on a busy 2-core machine, measured)."""
    return np.asarray(np.einsum("ij,j...->i...", a, b, optimize=False), dtype=np.float64)


def tune_cascade(data: Dataset, scores: FloatArray, *, budget_usd: float | None = None,
                 min_quality: float | None = None, max_latency_p95_s: float | None = None,
                 signal: str = "confidence", max_steps: int = DEFAULT_MAX_STEPS,
                 n_levels: int = DEFAULT_LEVELS) -> Cascade:
    """The best cascade on ``data`` (the validation split) for one goal.

    Give exactly one of ``budget_usd`` (maximise quality at that mean cost per query) and
    ``min_quality`` (minimise cost at that mean quality); ``max_latency_p95_s`` adds a latency
    budget. ``scores`` are the signal's scores of every model's answer on ``data``.
    """
    if (budget_usd is None) == (min_quality is None):
        raise ConfigError("give exactly one goal: budget_usd (best quality within it) or "
                          "min_quality (cheapest reaching it)")
    search = CascadeSearch(data, scores, signal=signal, max_steps=max_steps, n_levels=n_levels)
    if budget_usd is not None:
        index = search.best_within(budget_usd, max_latency_p95_s=max_latency_p95_s)
    else:
        assert min_quality is not None
        index = search.cheapest_reaching(min_quality, max_latency_p95_s=max_latency_p95_s)
    return search.cascade(index)


def certify_cascade(tuning: Dataset, tuning_scores: FloatArray, calibration: Dataset,
                    calibration_scores: FloatArray, *, fraction: float = 0.95,
                    confidence: float = 0.9, signal: str = "confidence",
                    max_steps: int = DEFAULT_MAX_STEPS,
                    n_levels: int = DEFAULT_LEVELS) -> Cascade:
    """The cheapest cascade certified to reach ``fraction`` x the best single model's quality
    on new prompts, except with probability ``1 - confidence``.

    The cost-quality front is tuned on ``tuning`` (e.g. train, scored out of fold) and tested,
    priciest first, on ``calibration`` (the validation split, never used for tuning): a
    Learn-then-Test fixed-sequence search with paired one-sided bounds
    (:mod:`routecast.guarantee`). Raises :class:`CalibrationError` when none is certified.
    """
    from routecast.mixing import Family, cheapest_meeting

    search = CascadeSearch(tuning, tuning_scores, signal=signal, max_steps=max_steps,
                           n_levels=n_levels)
    cascades = [search.cascade(int(i)) for i in search.frontier()[::-1]]
    replays = [c.replay(calibration, calibration_scores) for c in cascades]
    family = Family(np.stack([r.quality for r in replays]),
                    np.stack([r.cost_usd for r in replays]))
    chosen = cheapest_meeting([family], calibration.quality, fraction, confidence)
    return cascades[chosen.index]
