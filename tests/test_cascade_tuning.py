"""Cascade tuning: the search is exact, its answers are the brute-force optimum of the space."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from routecast.cascades.tuning import CascadeSearch, tune_cascade
from routecast.data.dataset import Dataset
from routecast.errors import CalibrationError, ConfigError
from routecast.signals import make_signal
from tests.toy import toy_dataset, toy_with_answers


@pytest.fixture(scope="module")
def tuned() -> tuple[Dataset, np.ndarray, CascadeSearch]:
    data = toy_with_answers(240)
    val = data.subset("validation")
    scores = make_signal("confidence").fit(data.subset("train")).score(val)
    return val, scores, CascadeSearch(val, scores, n_levels=5)


def test_every_candidate_matches_its_replay(tuned: tuple[Dataset, np.ndarray, CascadeSearch]
                                           ) -> None:
    _, _, search = tuned
    for index in range(len(search)):
        replay = search.replay(index)
        assert replay.mean_quality == pytest.approx(search.quality[index], abs=1e-12)
        assert replay.mean_cost_usd == pytest.approx(search.cost_usd[index], rel=1e-12)


def test_the_space_is_what_the_docstring_says(tuned: tuple[Dataset, np.ndarray, CascadeSearch]
                                              ) -> None:
    data, scores, search = tuned
    levels = [len(np.unique(np.quantile(scores[:, j], np.arange(1, 6) / 6))) for j in range(3)]
    order = np.argsort(data.mean_cost_usd())
    expected = sum(int(np.prod([levels[j] for j in sub[:-1]]))
                   for k in (1, 2, 3) for sub in combinations(order, k))
    assert len(search) == expected
    mean_cost = dict(zip(data.models, data.mean_cost_usd(), strict=True))
    for index in range(len(search)):
        steps = search.cascade(index).models
        assert [mean_cost[m] for m in steps] == sorted(mean_cost[m] for m in steps)
    assert search.describe_pruning()["cascades"] == len(search)


def test_frontier_is_the_pareto_front(tuned: tuple[Dataset, np.ndarray, CascadeSearch]) -> None:
    _, _, search = tuned
    front = search.frontier()
    q, c = search.quality, search.cost_usd
    for i in front:
        dominated = (c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i] + 1e-12))
        assert not dominated.any()
    off = np.setdiff1d(np.arange(len(search)), front)
    for i in off[:200]:
        assert ((c[front] <= c[i] + 1e-15) & (q[front] >= q[i] - 1e-12)).any()


def test_best_within_budget_and_cheapest_reaching_are_brute_force_optima(
        tuned: tuple[Dataset, np.ndarray, CascadeSearch]) -> None:
    _, _, search = tuned
    q, c = search.quality, search.cost_usd
    for budget in np.quantile(c, [0.05, 0.3, 0.7, 1.0]):
        i = search.best_within(float(budget))
        assert c[i] <= budget * (1 + 1e-9)
        assert q[i] == pytest.approx(q[c <= budget * (1 + 1e-9)].max())
    for target in np.quantile(q, [0.2, 0.6, 0.95]):
        i = search.cheapest_reaching(float(target))
        assert q[i] >= target - 1e-12
        assert c[i] == pytest.approx(c[q >= target - 1e-12].min())


def test_latency_budget_is_met_by_the_best_that_meets_it(
        tuned: tuple[Dataset, np.ndarray, CascadeSearch]) -> None:
    _, _, search = tuned
    p95 = np.array([search.replay(i).latency_quantile(0.95) for i in range(len(search))])
    bound = float(np.quantile(p95, 0.3))
    budget = float(np.quantile(search.cost_usd, 0.8))
    i = search.best_within(budget, max_latency_p95_s=bound)
    ok = (search.cost_usd <= budget * (1 + 1e-9)) & (p95 <= bound)
    assert p95[i] <= bound
    assert search.quality[i] == pytest.approx(search.quality[ok].max())
    with pytest.raises(CalibrationError, match="p95 latency"):
        search.best_within(budget, max_latency_p95_s=float(p95.min()) / 2)


def test_tune_cascade_goals_and_errors(tuned: tuple[Dataset, np.ndarray, CascadeSearch]) -> None:
    data, scores, search = tuned
    cheap = tune_cascade(data, scores, budget_usd=float(np.median(search.cost_usd)),
                         n_levels=5)
    assert cheap.replay(data, scores).mean_cost_usd <= float(np.median(search.cost_usd))
    good = tune_cascade(data, scores, min_quality=0.8, n_levels=5, max_steps=2)
    assert good.n_steps <= 2 and good.replay(data, scores).mean_quality >= 0.8
    with pytest.raises(ConfigError, match="exactly one goal"):
        tune_cascade(data, scores)
    with pytest.raises(CalibrationError, match="raise the budget"):
        tune_cascade(data, scores, budget_usd=0.0)
    with pytest.raises(CalibrationError, match="Lower the target"):
        tune_cascade(data, scores, min_quality=1.01)
    plain = toy_dataset(90).subset("validation")
    flat = np.full((plain.n_prompts, 3), 0.5)
    with pytest.raises(ConfigError, match="recorded latencies"):
        CascadeSearch(plain, flat).best_within(1.0, max_latency_p95_s=1.0)
    with pytest.raises(ConfigError, match="max_steps"):
        CascadeSearch(plain, flat, max_steps=9)
    with pytest.raises(ConfigError, match="shape"):
        CascadeSearch(plain, flat[:, :2])
