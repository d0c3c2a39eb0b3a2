"""Cascade routing: the decision rule, its live twin, gamma and the calibration of lambda."""

from __future__ import annotations

import numpy as np
import pytest

from routecast.cascades.routing import CascadeRouting, conditional_quality, fit_gamma
from routecast.errors import CalibrationError, ConfigError
from routecast.policy import choose
from tests.toy import toy_with_answers


def _random_inputs(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ex_ante = rng.uniform(0.2, 0.95, (n, m))
    cost = np.sort(rng.uniform(0.001, 0.01, m))[None, :] * rng.uniform(0.8, 1.2, (n, 1))
    posthoc = np.clip(ex_ante + rng.normal(0, 0.3, (n, m)), 0.0, 1.0)
    return ex_ante, cost, posthoc


def test_first_step_is_the_routers_choice_and_the_answer_is_the_last_call() -> None:
    ex_ante, cost, posthoc = _random_inputs(400, 5, 0)
    for weight in (0.0, 30.0, 300.0):
        rule = CascadeRouting(cost_weight=weight, gamma=0.4)
        seen, answered = rule.run(ex_ante, cost, posthoc)
        first = choose(ex_ante, cost, weight)
        assert seen[np.arange(400), first].all()
        assert seen[np.arange(400), answered].all()
        assert (seen.sum(axis=1) <= rule.max_calls).all()


def test_batch_decisions_equal_the_live_step_by_step_ones() -> None:
    ex_ante, cost, posthoc = _random_inputs(200, 6, 1)
    rule = CascadeRouting(cost_weight=50.0, gamma=0.5, max_calls=3)
    seen, answered = rule.run(ex_ante, cost, posthoc)
    for i in range(200):
        calls = [rule.first_model(ex_ante[i], cost[i])]
        while (nxt := rule.next_model(ex_ante[i], cost[i],
                                      [(j, float(posthoc[i, j])) for j in calls])) is not None:
            calls.append(nxt)
        assert sorted(calls) == np.flatnonzero(seen[i]).tolist()
        assert calls[-1] == answered[i]
        assert len(calls) <= 3


def test_it_escalates_exactly_when_the_next_model_is_worth_its_price() -> None:
    ex_ante = np.array([[0.6, 0.9]])
    cost = np.array([[1.0, 2.0]])
    rule = CascadeRouting(cost_weight=0.2, gamma=0.0)
    assert rule.first_model(ex_ante[0], cost[0]) == 1  # 0.9 - 0.4 > 0.6 - 0.2
    rule = CascadeRouting(cost_weight=0.3, gamma=0.0)
    assert rule.first_model(ex_ante[0], cost[0]) == 0  # 0.9 - 0.6 = 0.6 - 0.3: cheaper wins
    # Model 0 answered; model 1 is worth 0.9 - 0.6 = 0.3 against the answer's post-hoc score.
    assert rule.next_model(ex_ante[0], cost[0], [(0, 0.2)]) == 1
    assert rule.next_model(ex_ante[0], cost[0], [(0, 0.35)]) is None
    with pytest.raises(ConfigError, match="first_model"):
        rule.next_model(ex_ante[0], cost[0], [])
    with pytest.raises(ConfigError, match="unknown or repeated"):
        rule.next_model(ex_ante[0], cost[0], [(0, 0.1), (0, 0.1)])


def test_conditional_quality_shares_the_surprise() -> None:
    ex_ante = np.array([[0.8, 0.6, 0.5]])
    seen = np.array([[True, False, False]])
    posthoc = np.array([[0.2, 0.0, 0.0]])  # model 0 did much worse than expected
    same = conditional_quality(ex_ante, posthoc, seen, 0.0)
    np.testing.assert_allclose(same, ex_ante)
    lower = conditional_quality(ex_ante, posthoc, seen, 0.5)
    assert (lower[0, 1:] < ex_ante[0, 1:]).all()
    full = conditional_quality(ex_ante, posthoc, seen, 1.0)
    assert full[0, 0] == pytest.approx(0.2)


def test_fit_gamma_finds_shared_difficulty_and_its_absence() -> None:
    rng = np.random.default_rng(2)
    n, m = 3000, 3
    ex_ante = np.full((n, m), 0.6)
    hard = rng.random(n) < 0.5
    shared = np.where(hard[:, None], 0.2, 1.0) > rng.random((n, m))  # one difficulty per prompt
    posthoc = np.where(shared, 0.9, 0.1)
    assert fit_gamma(ex_ante, posthoc, shared.astype(float)) >= 0.2
    independent = (rng.random((n, m)) < 0.6).astype(float)
    assert fit_gamma(ex_ante, np.where(independent > 0, 0.9, 0.1), independent) <= 0.1


def test_calibration_meets_the_goal_on_the_calibration_data() -> None:
    data = toy_with_answers(300)
    val = data.subset("validation")
    rng = np.random.default_rng(4)
    ex_ante = np.clip(val.quality * 0.5 + 0.25 + rng.normal(0, 0.1, val.quality.shape), 0, 1)
    posthoc = np.clip(val.quality * 0.6 + 0.2, 0, 1)
    cost = np.tile(val.mean_cost_usd(), (val.n_prompts, 1))
    rule = CascadeRouting(gamma=0.3)
    budget = float(val.mean_cost_usd()[1])
    tuned = rule.for_budget(val, ex_ante, cost, posthoc, budget)
    assert tuned.replay(val, ex_ante, cost, posthoc).mean_cost_usd <= budget
    best = float(val.mean_quality().max())
    good = rule.for_quality(val, ex_ante, cost, posthoc, 0.95)
    assert good.replay(val, ex_ante, cost, posthoc).mean_quality >= 0.95 * best
    with pytest.raises(CalibrationError, match="raise the budget"):
        rule.for_budget(val, ex_ante, cost, posthoc, 0.0)
    with pytest.raises(CalibrationError, match="does not reach"):
        rule.for_quality(val, ex_ante, cost, posthoc, 1.5)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"cost_weight": -1.0}, "cost_weight"), ({"gamma": 2.0}, "gamma"),
    ({"max_calls": 0}, "max_calls"),
])
def test_bad_parameters(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CascadeRouting(**kwargs)  # type: ignore[arg-type]
