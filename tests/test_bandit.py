"""HI-LCB: its feedback structure, its bound, its regret, and the query orders it is run on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from routecast.data import load_dataset
from routecast.errors import ConfigError, DataError
from routecast.hi import bandit

FOLDER = "llm-cascades-zellinger"


def _step_stream(t: int, seed: int, beta: float = 0.3) -> bandit.Stream:
    """Confidence uniform; the local answer is right with chance 0.3 below 0.5, 0.95 above.
    With beta = 0.3, keeping pays iff psi >= 0.7, so the best threshold is exactly 0.5."""
    rng = np.random.default_rng(seed)
    p = rng.random(t)
    right = rng.random(t) < np.where(p < 0.5, 0.3, 0.95)
    return bandit.Stream(p, (~right).astype(float), np.full(t, beta))


def _smooth_stream(t: int, seed: int) -> bandit.Stream:
    """psi(p) = p: a monotone signal whose gaps near the optimum (0.7) are small."""
    rng = np.random.default_rng(seed)
    p = rng.random(t)
    return bandit.Stream(p, (rng.random(t) >= p).astype(float), np.full(t, 0.3))


# -- the feedback structure -------------------------------------------------------------------

class _Spy(bandit.HILCB):
    def __init__(self) -> None:
        super().__init__(n_bins=10)
        self.seen: list[tuple[float, float]] = []

    def update(self, confidence: float, wrong: float) -> None:
        self.seen.append((confidence, wrong))
        super().update(confidence, wrong)


def test_the_learner_sees_the_outcome_only_of_offloaded_queries() -> None:
    stream = _step_stream(800, seed=1)
    spy = _Spy()
    run = bandit.run_online(spy, stream)
    off = np.flatnonzero(run.offloaded)
    assert 0 < len(off) < len(stream)
    assert spy.seen == [(stream.confidence[i], stream.local_wrong[i]) for i in off]
    # The environment still charges kept answers their true cost.
    assert run.cost == pytest.approx(np.where(run.offloaded, stream.beta, stream.local_wrong))


def test_decisions_do_not_depend_on_outcomes_the_learner_never_saw() -> None:
    stream = _step_stream(800, seed=2)
    run = bandit.run_online(bandit.HILCB(10), stream)
    # Flip every outcome of a kept query: nothing the learner observed changes.
    flipped = np.where(run.offloaded, stream.local_wrong, 1.0 - stream.local_wrong)
    blind = bandit.Stream(stream.confidence, flipped, stream.beta)
    rerun = bandit.run_online(bandit.HILCB(10), blind)
    assert np.array_equal(run.offloaded, rerun.offloaded)
    assert np.array_equal(run.threshold, rerun.threshold)


# -- the bound ----------------------------------------------------------------------------------

def test_lcb_pools_windows_and_is_monotone() -> None:
    learner = bandit.HILCB(n_bins=2, exploration=0.5)
    for _ in range(8):
        learner.step()
    for wrong in (0, 0, 0, 1):  # bin 0: 3 right of 4
        learner.update(0.2, wrong)
    r4 = math.sqrt(0.5 * math.log(8) / 4)
    # Bin 1 has no data of its own, yet psi is non-decreasing: bin 0's bound carries over.
    assert learner.lcb() == pytest.approx([0.75 - r4, 0.75 - r4])
    for _ in range(10):  # bin 1: 10 right of 10
        learner.update(0.9, 0)
    own = 1 - math.sqrt(0.5 * math.log(8) / 10)
    pooled = 13 / 14 - math.sqrt(0.5 * math.log(8) / 14)
    assert learner.lcb() == pytest.approx([0.75 - r4, max(own, pooled)])
    # Keep bin 1 only once its bound clears 1 - beta.
    assert learner.threshold_index(beta=0.3) == 2  # 0.678 < 0.7: offload everything
    assert learner.threshold_index(beta=0.35) == 1
    assert learner.threshold(beta=0.35) == 0.5
    assert learner.offload(0.49, 0.35) and not learner.offload(0.5, 0.35)


def test_discount_fades_evidence() -> None:
    learner = bandit.HILCB(n_bins=1, discount=0.5)
    learner.step()
    learner.update(0.5, 0.0)
    learner.step()
    assert learner.n_[0] == pytest.approx(0.5) and learner.correct_[0] == pytest.approx(0.5)
    assert learner.t_ == pytest.approx(1.5)


@pytest.mark.parametrize("kwargs", [{"n_bins": 0}, {"exploration": -1.0}, {"discount": 0.0},
                                    {"discount": 1.5}])
def test_bad_parameters_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        bandit.HILCB(**kwargs)  # type: ignore[arg-type]


def test_streams_reject_values_outside_unit_interval() -> None:
    with pytest.raises(DataError, match="beta must lie in"):
        bandit.Stream.of(np.array([0.5]), np.array([1.0]), 1.5)
    with pytest.raises(DataError, match="differ in length"):
        bandit.Stream(np.array([0.5]), np.array([0.0, 1.0]), np.array([0.3]))


# -- regret -------------------------------------------------------------------------------------

def test_regret_curve_matches_a_brute_force_loop() -> None:
    stream = _step_stream(60, seed=3, beta=0.4)
    run = bandit.run_online(bandit.HILCB(4), stream)
    curve = bandit.regret_curve(run, stream, 4)
    for t in (1, 10, 60):
        best = min(
            sum(stream.beta[s] if min(int(stream.confidence[s] * 4), 3) < k
                else stream.local_wrong[s] for s in range(t))
            for k in range(5))
        assert curve[t - 1] == pytest.approx(run.cost[:t].sum() - best)
    thr, total = bandit.best_fixed_threshold(stream, 4)
    assert total == pytest.approx(run.cost.sum() - curve[-1])
    assert thr in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_clear_gaps_are_learnt_with_regret_that_stops_growing() -> None:
    t = 4000
    for seed in range(3):
        stream = _step_stream(t, seed)
        run = bandit.run_online(bandit.HILCB(10), stream)
        curve = bandit.regret_curve(run, stream, 10)
        assert run.threshold[-1] == 0.5  # the optimum, found from partial feedback only
        assert bandit.best_fixed_threshold(stream, 10)[0] == 0.5
        # Logarithmic regret: the second half adds little; linear regret would double it.
        assert curve[-1] < 1.3 * curve[t // 2 - 1]
        assert curve[-1] / t < 0.02


def test_small_gaps_still_give_sublinear_regret() -> None:
    t = 6000
    growth = []
    for seed in range(3):
        stream = _smooth_stream(t, seed)
        curve = bandit.regret_curve(bandit.run_online(bandit.HILCB(10), stream), stream, 10)
        growth.append(curve[-1] / curve[t // 2 - 1])
        assert curve[-1] / t < curve[t // 4 - 1] / (t // 4)  # R(t)/t falls
    assert float(np.mean(growth)) < 1.6  # well short of the 2.0 of linear regret


def test_on_the_real_data_the_learner_beats_both_trivial_policies(shared_data: Path) -> None:
    data = load_dataset(shared_data / FOLDER)
    d = data.model_index("llama3.2-3b")
    stream = bandit.Stream.of(data.confidence[:, d], data.quality[:, d], 0.3)  # type: ignore[index]
    res = bandit.regret_experiment(stream, horizon=len(stream), seeds=[0, 1, 2])
    never = float(stream.local_wrong.mean())  # keep every local answer
    always = 0.3  # offload everything
    learner = res["learner_cost"]
    assert isinstance(learner, dict)
    assert learner["mean"] < min(never, always)
    at = res["regret_at"]
    assert isinstance(at, dict)
    assert at["T"]["mean"] / len(stream) < at["T/4"]["mean"] / (len(stream) / 4)


# -- orders and costs ---------------------------------------------------------------------------

def test_iid_orders() -> None:
    rng = np.random.default_rng(0)
    assert sorted(bandit.iid_order(50, 50, rng).tolist()) == list(range(50))
    long = bandit.iid_order(50, 500, rng)
    assert len(long) == 500 and set(long.tolist()) <= set(range(50))


def test_shifted_order_changes_the_mix_at_half_time() -> None:
    task = ["easy"] * 30 + ["hard"] * 70
    rng = np.random.default_rng(0)
    order = bandit.shifted_order(task, {"easy"}, 100, rng)
    assert sorted(order.tolist()) == list(range(100))  # every query once
    first, second = [task[i] for i in order[:50]], [task[i] for i in order[50:]]
    assert first.count("easy") == 30 and second.count("easy") == 0
    short = bandit.shifted_order(task, {"easy"}, 40, rng)
    assert [task[i] for i in short[:20]] == ["easy"] * 20
    assert [task[i] for i in short[20:]] == ["hard"] * 20
    long = bandit.shifted_order(task, {"easy"}, 400, rng)
    assert {task[i] for i in long[:200]} == {"easy"} and {task[i] for i in long[200:]} == {"hard"}
    with pytest.raises(ConfigError, match="both in and out"):
        bandit.shifted_order(task, {"easy", "hard"}, 100, rng)


def test_easy_first_tasks_takes_the_best_tasks_within_half() -> None:
    task = ["a"] * 30 + ["b"] * 30 + ["c"] * 40
    quality = np.r_[np.full(30, 0.9), np.full(30, 0.2), np.full(40, 0.6)]
    assert bandit.easy_first_tasks(task, quality) == {"a"}  # a + c would be 70 of 100
    with pytest.raises(DataError, match="at least two tasks"):
        bandit.easy_first_tasks(["a"] * 5, np.ones(5))
